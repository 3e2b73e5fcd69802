//! Process: exit statuses, waits, signals, parent death.

use std::time::Duration;

use lovage_core::{Codec, Signature};
use lovage_macros::task;
use lovage_mp::{ExitStatus, Process, Value};

use crate::support::wait_until;

#[task(crate = lovage_core)]
fn behave(how: String) -> Result<u32, lovage_core::TaskError> {
    match how.as_str() {
        "ok" => Ok(1),
        "err" => Err(lovage_core::TaskError::new("Test", "failed on purpose")),
        "panic" => panic!("child panicked on purpose"),
        "abort" => std::process::abort(),
        "exit3" => std::process::exit(3),
        _ => Ok(0),
    }
}

#[task(crate = lovage_core)]
fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Starts a grandchild that sleeps, reports its pid, then sleeps itself.
#[task(crate = lovage_core)]
fn parent_of_sleeper(pid_out: Value<u32>) {
    let p = Process::spawn(sleep_ms::s(60_000)).unwrap();
    pid_out.set(p.pid());
    std::thread::sleep(Duration::from_secs(60));
}

pub fn exit_statuses_say_how_a_child_ended() {
    let cases = [
        ("ok", ExitStatus::Code(0)),
        ("err", ExitStatus::Code(lovage_mp::EXIT_TASK_FAILED)),
        ("panic", ExitStatus::Code(lovage_mp::EXIT_PANIC)),
        ("abort", ExitStatus::Signal(libc::SIGABRT)),
        ("exit3", ExitStatus::Code(3)),
    ];
    let procs: Vec<_> = cases
        .iter()
        .map(|(how, _)| Process::spawn(behave::s(how.to_string())).unwrap())
        .collect();
    for (p, (how, want)) in procs.iter().zip(cases) {
        assert_eq!(p.join().unwrap(), want, "{how}");
        assert_eq!(p.exit_status(), Some(want));
        assert!(!p.is_alive());
    }
    assert!(procs[0].join().unwrap().success());
}

pub fn join_timeout_terminate_and_kill() {
    let a = Process::spawn(sleep_ms::s(60_000)).unwrap();
    let b = Process::spawn(sleep_ms::s(60_000)).unwrap();
    assert!(a.pid() > 0 && a.pid() != b.pid());
    assert_eq!(a.join_timeout(Duration::from_millis(50)).unwrap(), None);
    assert!(a.is_alive());
    assert_eq!(a.exit_status(), None);
    a.terminate().unwrap();
    b.kill().unwrap();
    assert_eq!(
        a.join_timeout(Duration::from_secs(10)).unwrap(),
        Some(ExitStatus::Signal(libc::SIGTERM))
    );
    assert_eq!(b.join().unwrap(), ExitStatus::Signal(libc::SIGKILL));
    // Signalling a reaped child is a no-op, never a signal to a reused pid.
    a.kill().unwrap();
    let quick = Process::spawn(sleep_ms::s(1)).unwrap();
    assert_eq!(
        quick.join_timeout(Duration::from_secs(10)).unwrap(),
        Some(ExitStatus::Code(0))
    );
}

pub fn children_die_with_their_parent() {
    let pid = Value::new(0u32).unwrap();
    let parent = Process::spawn(parent_of_sleeper::s(pid.clone())).unwrap();
    wait_until("the grandchild's pid", 20, || pid.get() != 0);
    let grandchild = pid.get();
    assert!(std::path::Path::new(&format!("/proc/{grandchild}")).exists());
    parent.kill().unwrap();
    parent.join().unwrap();
    // The grandchild is reparented and reaped by init (or a subreaper) once killed.
    wait_until(
        "the grandchild to die with its parent",
        20,
        || match std::fs::read_to_string(format!("/proc/{grandchild}/stat")) {
            Err(_) => true,
            Ok(s) => s.rsplit(')').next().unwrap().trim_start().starts_with('Z'),
        },
    );
}

pub fn spawning_an_unknown_task_is_an_error() {
    let sig = Signature::new("no::such::task", &(1,), Codec::Json).unwrap();
    let err = Process::spawn_signature(sig).unwrap_err().to_string();
    assert!(err.contains("no::such::task"), "{err}");
}
