//! `rediss://`: a worker and a client talk to Redis over TLS. The test makes a self-signed
//! certificate with `openssl` and runs its own redis-server with TLS only, on a free port.
//! Without `openssl` or `redis-server` (`scripts/deps` installs both) the test fails, unless
//! `LOVAGE_ALLOW_SKIP=1` lets it skip with a message.

mod common;

use common::{output_text, retry_until_success, Killed};

use std::net::TcpListener;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

/// A test that cannot run here fails, so a passing suite means it ran; `LOVAGE_ALLOW_SKIP=1`
/// turns the failure into a skip that says so.
#[track_caller]
fn cannot_run(why: &str) {
    if std::env::var("LOVAGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED (LOVAGE_ALLOW_SKIP=1): {why}");
    } else {
        panic!("{why}; install it (scripts/deps) or set LOVAGE_ALLOW_SKIP=1 to skip this test");
    }
}

#[test]
fn a_worker_and_a_client_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        cannot_run("openssl could not make a certificate");
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawned = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn();
    let Ok(server) = spawned else {
        cannot_run("redis-server could not be started");
        return;
    };
    let _server = Killed(server);
    let url = format!("rediss://127.0.0.1:{port}/0#insecure");
    retry_until_success("no TLS connection", || {
        let mut c = Command::new(BIN);
        c.args(["queues", "--broker", &url]);
        c
    });
    // Plain Redis protocol on the TLS port is refused with a clear error.
    let plain = Command::new(BIN)
        .args(["queues", "--broker", &format!("redis://127.0.0.1:{port}/0")])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("cannot open the redis broker"),
        "{}",
        output_text(&plain)
    );

    let _worker = Killed(
        Command::new(BIN)
            .args(["worker", "--broker", &url, "--concurrency", "2"])
            .env("LOVAGE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Command::new(BIN)
        .args([
            "submit",
            "lovage.echo",
            r#"["over tls"]"#,
            "--wait",
            "--timeout",
            "60s",
            "--broker",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"over tls\"");
}
