//! Two hosts for real: two network namespaces joined by a veth pair, Redis in one, a worker and
//! a client in the other; tasks cross the link. Needs `ip netns` (iproute2, and root, which CI
//! is); without it the test fails, unless `LOVAGE_ALLOW_SKIP=1` lets it skip with a message.

mod common;

use common::{output_text, retry_until_success, Killed};

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lovage");

/// Two namespaces and a veth pair between them, removed on drop.
struct Hosts {
    broker_ns: String,
    worker_ns: String,
    veth: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Hosts {
    fn create() -> Result<Hosts, String> {
        // Names unique to this process (a pid has at most 7 digits, so interface names stay
        // within their 15 characters). Whatever holds these names now was left by a dead
        // process with the same pid (a test killed by a timeout cannot clean up): remove it.
        let tag = std::process::id();
        let hosts = Hosts {
            broker_ns: format!("lvg-b{tag}"),
            worker_ns: format!("lvg-w{tag}"),
            veth: format!("lvb{tag}"),
        };
        hosts.remove();
        let (va, vb) = (hosts.veth.clone(), format!("lvw{tag}"));
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), hosts.broker_ns.clone()],
            vec!["netns".into(), "add".into(), hosts.worker_ns.clone()],
            vec![
                "link".into(),
                "add".into(),
                va.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                vb.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                va.clone(),
                "netns".into(),
                hosts.broker_ns.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                vb.clone(),
                "netns".into(),
                hosts.worker_ns.clone(),
            ],
            vec![
                "-n".into(),
                hosts.broker_ns.clone(),
                "addr".into(),
                "add".into(),
                "10.77.0.1/24".into(),
                "dev".into(),
                va.clone(),
            ],
            vec![
                "-n".into(),
                hosts.worker_ns.clone(),
                "addr".into(),
                "add".into(),
                "10.77.0.2/24".into(),
                "dev".into(),
                vb.clone(),
            ],
            vec![
                "-n".into(),
                hosts.broker_ns.clone(),
                "link".into(),
                "set".into(),
                va,
                "up".into(),
            ],
            vec![
                "-n".into(),
                hosts.worker_ns.clone(),
                "link".into(),
                "set".into(),
                vb,
                "up".into(),
            ],
            vec![
                "-n".into(),
                hosts.broker_ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                hosts.worker_ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if !ip(&args) {
                return Err(format!("`ip {}` failed", args.join(" ")));
            }
        }
        Ok(hosts)
    }

    fn exec(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Deletes both namespaces, and the veth pair if it never left the root namespace (deleting
    /// a namespace deletes its end of the pair, and so the pair). Missing parts are fine.
    fn remove(&self) {
        ip(&["netns", "del", &self.broker_ns]);
        ip(&["netns", "del", &self.worker_ns]);
        ip(&["link", "del", &self.veth]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn tasks_cross_a_network_between_two_namespaces() {
    let hosts = match Hosts::create() {
        Ok(h) => h,
        Err(why) => {
            let why = format!("cannot create network namespaces here ({why}); two hosts need `ip netns`, so iproute2 and root");
            if std::env::var("LOVAGE_ALLOW_SKIP").as_deref() == Ok("1") {
                eprintln!("SKIPPED (LOVAGE_ALLOW_SKIP=1): {why}");
                return;
            }
            panic!("{why}; set LOVAGE_ALLOW_SKIP=1 to skip this test where that cannot be had");
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let _redis = Killed(
        hosts
            .exec(&hosts.broker_ns, "redis-server")
            .args([
                "--bind",
                "10.77.0.1",
                "--port",
                "6390",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let url = "redis://10.77.0.1:6390/0";
    // Wait for Redis from the other side of the link.
    retry_until_success("Redis never answered across the link", || {
        let mut c = hosts.exec(&hosts.worker_ns, BIN);
        c.args(["queues", "--broker", url]);
        c
    });
    let _worker = Killed(
        hosts
            .exec(&hosts.worker_ns, BIN)
            .args(["worker", "--broker", url, "--concurrency", "2"])
            .env("LOVAGE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = hosts
        .exec(&hosts.worker_ns, BIN)
        .args([
            "submit",
            "lovage.shell",
            r#"[["hostname", "-I"]]"#,
            "--wait",
            "--timeout",
            "60s",
            "--broker",
            url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.77.0.2"),
        "ran in the worker's namespace: {}",
        output_text(&out)
    );
    // Many tasks across the link.
    let file = dir.path().join("jobs.txt");
    std::fs::write(
        &file,
        (0..50).map(|i| format!("echo {i}\n")).collect::<String>(),
    )
    .unwrap();
    let out = hosts
        .exec(&hosts.worker_ns, BIN)
        .args(["map", file.to_str().unwrap(), "--broker", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let expect: String = (0..50).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expect);
}
