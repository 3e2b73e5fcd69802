//! The `lovage` binary as a user runs it.

use std::process::Command;

fn lovage(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lovage"))
        .args(args)
        .output()
        .expect("run lovage")
}

#[test]
fn bench_pool_quick_prints_a_table_and_json_with_every_key() {
    let out = lovage(&["bench", "pool", "--quick", "--runs", "1", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("thread pool: submit + result"), "{stdout}");
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for key in [
        "thread_submit_per_s",
        "thread_map_per_s",
        "process_submit_per_s",
        "process_map_per_s",
        "primes_speedup",
        "pi_speedup",
        "matmul_speedup",
        "fib_speedup",
        "pipeline_speedup",
    ] {
        let v = json.get(key).and_then(|v| v.as_f64());
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{key} missing or not positive in {last}"
        );
    }
}

#[test]
fn tasks_lists_the_builtins() {
    let out = lovage(&["tasks", "--json"]);
    assert!(out.status.success());
    let names: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for n in [
        "lovage.noop",
        "lovage.sleep",
        "lovage.echo",
        "lovage.primes",
        "lovage.pi",
        "lovage.fib",
        "lovage.matmul_rows",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let out = lovage(&["bench", "pool", "--tasks", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tasks"));
}
