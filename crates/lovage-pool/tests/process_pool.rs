//! The process pool: crash isolation, time limits, recycling, initializer, parent death.
//!
//! The pool re-runs this test binary as its children, so it has its own `main` (libtest-mimic)
//! that calls `child_main` first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use lovage_core::{kinds, CancelReason, CancelToken, Codec, Signature, TypedSignature};
use lovage_macros::task;
use lovage_pool::{as_completed, Executor, ProcessPool, ThreadPool};

#[task(crate = lovage_core)]
fn square(x: u64) -> u64 {
    x * x
}

#[task(crate = lovage_core)]
fn pid() -> u32 {
    std::process::id()
}

#[task(crate = lovage_core)]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[task(crate = lovage_core)]
fn sleep_then_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[task(crate = lovage_core, time_limit = "200ms")]
fn sleep_with_own_limit(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// The synthetic site's links from `page`: four each, with duplicates and cycles.
fn links(page: u64, pages: u64) -> Vec<u64> {
    (0..4).map(|k| (page * 7 + k * 13 + 1) % pages).collect()
}

/// Crawls one page of the site in a pool child: marks it done with a file that must not exist
/// yet (a page crawled twice fails), then spawns its links, keyed so each page runs once.
#[task(crate = lovage_core)]
fn crawl_page(page: u64, pages: u64, dir: String) -> u64 {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(format!("{dir}/{page}"))
        .unwrap_or_else(|e| panic!("page {page} crawled twice: {e}"));
    for link in links(page, pages) {
        lovage_pool::process::scope::spawn_keyed(
            &link.to_string(),
            crawl_page::s(link, pages, dir.clone()),
        )
        .unwrap();
    }
    page
}

/// Spawns `n` squares, then ends as `how` says: "ok", "panic" or "abort".
#[task(crate = lovage_core)]
fn spawn_then(n: u64, how: String) -> u64 {
    for i in 0..n {
        lovage_pool::process::scope::spawn(square::s(i)).unwrap();
    }
    match how.as_str() {
        "panic" => panic!("failed after spawning"),
        "abort" => std::process::abort(),
        _ => n,
    }
}

/// Tries to spawn and returns the error's message (empty if it spawned).
#[task(crate = lovage_core)]
fn spawn_error() -> String {
    lovage_pool::process::scope::spawn(square::s(1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[task(crate = lovage_core)]
fn die(how: String) -> u32 {
    match how.as_str() {
        "panic" => panic!("task panicked on purpose"),
        "abort" => std::process::abort(),
        "exit" => std::process::exit(3),
        "segfault" => unsafe {
            // A real invalid write, not a raise(): the kernel delivers SIGSEGV.
            std::ptr::write_volatile(std::ptr::null_mut::<u32>(), 1);
            0
        },
        "sigkill" => unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
            std::thread::sleep(Duration::from_secs(10));
            0
        },
        _ => 1,
    }
}

#[task(crate = lovage_core)]
fn noisy(x: u32) -> u32 {
    println!("stdout text that must not corrupt a reply frame {x}");
    eprintln!("stderr text from the child {x}");
    x
}

/// Sleeps in small steps, stopping when asked; returns the steps taken.
#[task(crate = lovage_core)]
fn polite(max_ms: u64) -> Result<u64, lovage_core::TaskError> {
    let start = Instant::now();
    let mut steps = 0;
    while start.elapsed() < Duration::from_millis(max_ms) {
        lovage_core::check_cancelled()?;
        std::thread::sleep(Duration::from_millis(5));
        steps += 1;
    }
    Ok(steps)
}

static INIT_VALUE: AtomicU64 = AtomicU64::new(0);

#[task(crate = lovage_core)]
fn init_child(v: u64) {
    INIT_VALUE.store(v, Ordering::SeqCst);
}

#[task(crate = lovage_core)]
fn init_fails() -> Result<(), String> {
    Err("no database here".into())
}

#[task(crate = lovage_core)]
fn read_init() -> u64 {
    INIT_VALUE.load(Ordering::SeqCst)
}

fn pool(workers: usize) -> ProcessPool {
    ProcessPool::new(workers)
}

fn submit_and_map_return_results() {
    let p = pool(2);
    assert_eq!(p.submit(square::s(12)).result().unwrap(), 144);
    let handles: Vec<_> = (0..500u64).map(|i| p.submit(square::s(i))).collect();
    let got: Vec<u64> = handles.into_iter().map(|h| h.result().unwrap()).collect();
    assert_eq!(got, (0..500u64).map(|i| i * i).collect::<Vec<_>>());
    let mapped: Vec<u64> = p
        .map(square::s, 0..2000u64, 64)
        .map(Result::unwrap)
        .collect();
    assert_eq!(mapped, (0..2000u64).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(square::delay(&p, 5).unwrap().result().unwrap(), 25);
    assert_eq!(
        square::delay(&ThreadPool::new(1), 6)
            .unwrap()
            .result()
            .unwrap(),
        36
    );
    let msgpack = square::s(9).codec(Codec::Msgpack).unwrap();
    assert_eq!(p.submit(msgpack).result().unwrap(), 81);
}

fn long_tasks_spread_over_idle_children() {
    let p = pool(2);
    // Warm both children so neither is still starting when the tasks arrive.
    let _ = p.map(|_| pid::s(), 0..4, 1).count();
    for _ in 0..3 {
        let a = p.submit(sleep_then_pid::s(300));
        let b = p.submit(sleep_then_pid::s(300));
        let (a, b) = (a.result().unwrap(), b.result().unwrap());
        assert_ne!(
            a, b,
            "a busy child must not take work an idle child could start"
        );
    }
}

fn resize_adds_children_and_a_shrunk_pool_runs_on_fewer() {
    let p = pool(1);
    let spread = |n: usize| -> std::collections::HashSet<u32> {
        let handles: Vec<_> = (0..n).map(|_| p.submit(sleep_then_pid::s(300))).collect();
        handles.into_iter().map(|h| h.result().unwrap()).collect()
    };
    p.resize(3).unwrap();
    assert_eq!(p.workers(), 3);
    // Warm the new children so none is still starting when the tasks arrive.
    let _ = p.map(|_| pid::s(), 0..6, 1).count();
    assert_eq!(spread(3).len(), 3, "three slots run three long tasks apart");
    p.resize(1).unwrap();
    assert_eq!(p.workers(), 1);
    assert_eq!(spread(3).len(), 1, "one slot left: one child runs them all");
    p.shutdown(true, false);
    assert!(p.resize(2).is_err(), "a shut-down pool cannot grow");
}

/// The same checks against either pool, through the shared trait.
fn check_executor<E: Executor>(pool: &E) {
    assert_eq!(pool.submit_task(square::s(11)).result().unwrap(), 121);
    let err = pool
        .submit_task(die::s("panic".into()))
        .result()
        .unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        (kinds::PANIC, "task panicked on purpose")
    );
    let unknown: TypedSignature<u64> =
        TypedSignature::new(Signature::new("no.such.task", &[1], Codec::Json).unwrap());
    assert_eq!(
        pool.submit_task(unknown).result().unwrap_err().kind,
        kinds::UNKNOWN_TASK
    );
    let dynamic: &dyn Executor = pool;
    let bytes = dynamic
        .submit_encoded(square::s(3).into_signature())
        .result()
        .unwrap();
    assert_eq!(bytes, b"9");
}

fn both_pools_run_registered_tasks_through_one_trait() {
    let threads = ThreadPool::new(2);
    // A thread-pool task sees its token through the thread-local, at once.
    let token = CancelToken::new();
    token.cancel(CancelReason::SoftTimeLimit);
    let err = threads
        .submit_cancellable(polite::s(60_000).into_signature(), token)
        .result()
        .unwrap_err();
    assert_eq!(err.kind, kinds::SOFT_TIME_LIMIT_EXCEEDED);
    check_executor(&threads);
    check_executor(&pool(2));
}

fn wait_running<T: Send + 'static>(h: &lovage_pool::TaskHandle<T>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.running() {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Running in the parent's view; give the child a moment to be inside the task.
    std::thread::sleep(Duration::from_millis(50));
}

fn cancel_tokens_kill_on_revoke_and_signal_soft_limits() {
    let p = pool(1);
    let first = p.submit(pid::s()).result().unwrap();
    // Soft limit: the child is signalled, the task sees it and stops; the child lives on.
    let token = CancelToken::new();
    let h = p.submit_raw_cancellable(polite::s(120_000).into_signature(), Some(token.clone()));
    wait_running(&h);
    token.cancel(CancelReason::SoftTimeLimit);
    let err = h.result().unwrap_err();
    assert_eq!(err.kind, kinds::SOFT_TIME_LIMIT_EXCEEDED, "{err}");
    assert_eq!(
        p.submit(pid::s()).result().unwrap(),
        first,
        "same child after a soft limit"
    );
    // A later task in the same child is not affected by the earlier signal.
    assert!(p.submit(polite::s(30)).result().unwrap() > 0);
    // Revoke: the child running it is killed, the task fails Revoked, the pool goes on.
    let token = CancelToken::new();
    let h = p.submit_raw_cancellable(sleep_ms::s(120_000).into_signature(), Some(token.clone()));
    wait_running(&h);
    token.cancel(CancelReason::Revoked);
    let err = h.result().unwrap_err();
    assert_eq!(err.kind, kinds::REVOKED, "{err}");
    assert_ne!(
        p.submit(pid::s()).result().unwrap(),
        first,
        "a new child after a revoke"
    );
}

fn every_kind_of_child_death_fails_one_task_and_the_next_succeeds() {
    let p = pool(1);
    for how in ["abort", "exit", "segfault", "sigkill"] {
        let before = p.submit(square::s(3));
        let doomed = p.submit(die::s(how.into()));
        let after = p.submit(square::s(4));
        assert_eq!(
            before.result().unwrap(),
            9,
            "{how}: the task before the crash keeps its result"
        );
        let err = doomed.result().unwrap_err();
        assert_eq!(err.kind, kinds::WORKER_LOST, "{how}: {err}");
        let expect = match how {
            "abort" => "SIGABRT",
            "exit" => "exited with code 3",
            "segfault" => "SIGSEGV",
            _ => "SIGKILL",
        };
        assert!(err.message.contains(expect), "{how}: {err}");
        assert_eq!(
            after.result().unwrap(),
            16,
            "{how}: the task after the crash runs in a new child"
        );
    }
}

fn a_panic_is_an_error_and_the_child_lives() {
    let p = pool(1);
    let first = p.submit(pid::s()).result().unwrap();
    let err = p.submit(die::s("panic".into())).result().unwrap_err();
    assert_eq!(err.kind, kinds::PANIC);
    assert_eq!(err.message, "task panicked on purpose");
    assert_eq!(
        p.submit(pid::s()).result().unwrap(),
        first,
        "same child after a panic"
    );
}

fn a_child_killed_from_outside_fails_its_task_only() {
    let p = pool(1);
    let running = p.submit(sleep_ms::s(30_000));
    let queued = p.submit(square::s(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = p.child_pids().first() {
            if running.running() {
                break *pid;
            }
        }
        assert!(Instant::now() < deadline, "child never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    // Make sure the child is inside the task (its reply is what ends sleep).
    std::thread::sleep(Duration::from_millis(50));
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let err = running.result().unwrap_err();
    assert_eq!(err.kind, kinds::WORKER_LOST, "{err}");
    assert_eq!(queued.result().unwrap(), 25);
}

fn hard_time_limits_kill_the_child() {
    let p = ProcessPool::builder()
        .workers(1)
        .time_limit(Duration::from_millis(300))
        .build()
        .unwrap();
    let slow = p.submit(sleep_ms::s(60_000));
    let after = p.submit(square::s(6));
    let err = slow.result().unwrap_err();
    assert_eq!(err.kind, kinds::TIME_LIMIT_EXCEEDED, "{err}");
    assert_eq!(after.result().unwrap(), 36);
    // Per task: the attribute's limit, and a per-call override.
    let err = p
        .submit(sleep_with_own_limit::s(60_000))
        .result()
        .unwrap_err();
    assert_eq!(err.kind, kinds::TIME_LIMIT_EXCEEDED);
    let quick = sleep_ms::s(60_000).time_limit(Duration::from_millis(100));
    assert_eq!(
        p.submit(quick).result().unwrap_err().kind,
        kinds::TIME_LIMIT_EXCEEDED
    );
    assert_eq!(p.submit(sleep_ms::s(1)).result().unwrap(), 1);
}

fn max_tasks_per_child_recycles() {
    let p = ProcessPool::builder()
        .workers(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..9)
        .map(|_| p.submit(pid::s()).result().unwrap())
        .collect();
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    // Submitted all at once, too.
    let hs: Vec<_> = (0..9).map(|_| p.submit(pid::s())).collect();
    let mut pids: Vec<u32> = hs.into_iter().map(|h| h.result().unwrap()).collect();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{pids:?}");
}

fn the_initializer_runs_in_every_child() {
    let p = ProcessPool::builder()
        .workers(2)
        .initializer(init_child::s(77))
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    let hs: Vec<_> = (0..10).map(|_| p.submit(read_init::s())).collect();
    for h in hs {
        assert_eq!(h.result().unwrap(), 77);
    }
    let bad = ProcessPool::builder()
        .workers(1)
        .initializer(init_fails::s())
        .build()
        .unwrap();
    let err = bad.submit(square::s(2)).result().unwrap_err();
    assert_eq!(err.kind, kinds::INITIALIZER_FAILED, "{err}");
    assert!(err.message.contains("no database here"), "{err}");
}

fn bad_input_fails_the_task_not_the_child() {
    let p = pool(1);
    let first = p.submit(pid::s()).result().unwrap();
    let unknown: TypedSignature<u64> =
        TypedSignature::new(Signature::new("no.such.task", &[1], Codec::Json).unwrap());
    let err = p.submit(unknown).result().unwrap_err();
    assert_eq!(err.kind, kinds::UNKNOWN_TASK);
    assert!(
        err.message.contains("process_pool::square"),
        "lists registered names: {err}"
    );
    let wrong: TypedSignature<u64> =
        TypedSignature::new(Signature::new(square::NAME, &["text"], Codec::Json).unwrap());
    let err = p.submit(wrong).result().unwrap_err();
    assert_eq!(err.kind, kinds::CODEC, "{err}");
    let wrong_result: TypedSignature<String> = TypedSignature::new(square::s(2).into_signature());
    assert_eq!(
        p.submit(wrong_result).result().unwrap_err().kind,
        kinds::CODEC
    );
    assert_eq!(p.submit(pid::s()).result().unwrap(), first);
}

fn child_output_does_not_break_frames() {
    let p = pool(2);
    let got: Vec<u32> = p.map(noisy::s, 0..20u32, 3).map(Result::unwrap).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

fn cancel_shutdown_and_as_completed() {
    // One request in flight at a time, so queued tasks stay cancellable.
    let p = ProcessPool::builder()
        .workers(1)
        .max_batch(1)
        .build()
        .unwrap();
    let blocker = p.submit(sleep_ms::s(300));
    let queued: Vec<_> = (0..5u64).map(|i| p.submit(square::s(i))).collect();
    assert!(queued[4].cancel());
    let order: Vec<u64> = as_completed(queued.into_iter().take(4), None)
        .map(|h| h.unwrap().result().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 4, 9]);
    assert_eq!(blocker.result().unwrap(), 300);
    let last = p.submit(sleep_ms::s(200));
    let never: Vec<_> = (0..3u64).map(|i| p.submit(square::s(i))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !last.running() {
        assert!(Instant::now() < deadline, "the last task never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    p.shutdown(true, true);
    assert_eq!(
        last.result().unwrap(),
        200,
        "a running task finishes at shutdown"
    );
    for h in never {
        let kind = h.result().unwrap_err().kind;
        assert!(kind == kinds::CANCELLED, "{kind}");
    }
    assert_eq!(
        p.submit(square::s(1)).result().unwrap_err().kind,
        kinds::SHUTDOWN
    );
    assert!(p.child_pids().is_empty(), "children exit at shutdown");
}

fn children_do_not_outlive_a_killed_parent() {
    let exe = std::env::current_exe().unwrap();
    let mut parent = std::process::Command::new(exe)
        .env("LOVAGE_TEST_ORPHAN_PARENT", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "parent reported {line:?}");
    for &pid in &pids {
        assert!(
            alive(pid),
            "child {pid} should be running before the parent dies"
        );
    }
    parent.kill().unwrap(); // SIGKILL: no destructor, no cleanup in the parent
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "children {pids:?} outlived their parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// The parent half of `children_do_not_outlive_a_killed_parent`: start children busy in long
/// tasks, report their pids, wait to be killed.
fn orphan_parent() {
    let p = pool(2);
    let hs: Vec<_> = (0..2).map(|_| p.submit(sleep_ms::s(120_000))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.child_pids().len() < 2 || !hs.iter().all(|h| h.running()) {
        if Instant::now() > deadline {
            // Exit without dropping the pool (which would wait for the sleeping tasks).
            eprintln!(
                "orphan parent: children never all started: {:?}",
                p.child_pids()
            );
            std::process::exit(2);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let pids: Vec<String> = p.child_pids().iter().map(|p| p.to_string()).collect();
    println!("{}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(120));
}

/// Test functions as libtest-mimic trials, named after the functions.
macro_rules! trials {
    ($($f:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($f), || {
            $f();
            Ok(())
        })),*]
    };
}

fn a_scope_crawls_a_site_across_processes_and_counts_every_page_once() {
    let pages = 2_000u64;
    let mut reachable = std::collections::HashSet::from([0u64]);
    let mut frontier = vec![0u64];
    while let Some(p) = frontier.pop() {
        for l in links(p, pages) {
            if reachable.insert(l) {
                frontier.push(l);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let pool = ProcessPool::new(2);
    let report = pool.scope(|s| {
        s.spawn_keyed("0", crawl_page::s(0, pages, d.clone()))
            .unwrap();
        // The same key again from the caller is the same task.
        s.spawn_keyed("0", crawl_page::s(0, pages, d.clone()))
            .unwrap();
        "returned"
    });
    assert_eq!(report.value, "returned");
    assert!(report.failed.is_empty(), "{:?}", report.failed.first());
    assert_eq!(
        report.spawned,
        reachable.len() as u64,
        "each page counted once"
    );
    assert_eq!(report.succeeded, reachable.len() as u64);
    let crawled = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        crawled,
        reachable.len(),
        "every reachable page crawled, none twice"
    );
}

fn a_scope_counts_failures_and_a_dead_child_loses_only_its_own_spawns() {
    let pool = ProcessPool::new(2);
    let report = pool.scope(|s| s.spawn(spawn_then::s(5, "panic".into())).unwrap());
    assert_eq!(report.spawned, 6, "a failed call's spawns still run");
    assert_eq!(report.succeeded, 5);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].task, "process_pool::spawn_then");
    assert!(report.failed[0]
        .error
        .to_string()
        .contains("failed after spawning"));

    let report = pool.scope(|s| {
        s.spawn(spawn_then::s(3, "abort".into())).unwrap();
        s.spawn(spawn_then::s(2, "ok".into())).unwrap();
    });
    assert_eq!(
        report.spawned, 4,
        "the aborted call's spawns died with its child"
    );
    assert_eq!(report.succeeded, 3);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].error.kind, kinds::WORKER_LOST);
}

fn spawning_outside_a_scope_is_a_clear_error() {
    let pool = ProcessPool::new(1);
    let in_child = pool.submit(spawn_error::s()).result().unwrap();
    assert!(
        in_child.contains("only inside a task that a ProcessPool scope runs"),
        "{in_child}"
    );
    let in_parent = lovage_pool::process::scope::spawn(square::s(2)).unwrap_err();
    assert!(
        in_parent
            .to_string()
            .contains("cannot spawn process_pool::square"),
        "{in_parent}"
    );
}

fn main() {
    lovage_pool::child_main();
    if std::env::var_os("LOVAGE_TEST_ORPHAN_PARENT").is_some() {
        orphan_parent();
        return;
    }
    let args = Arguments::from_args();
    let trials = trials![
        submit_and_map_return_results,
        long_tasks_spread_over_idle_children,
        resize_adds_children_and_a_shrunk_pool_runs_on_fewer,
        both_pools_run_registered_tasks_through_one_trait,
        cancel_tokens_kill_on_revoke_and_signal_soft_limits,
        every_kind_of_child_death_fails_one_task_and_the_next_succeeds,
        a_panic_is_an_error_and_the_child_lives,
        a_child_killed_from_outside_fails_its_task_only,
        hard_time_limits_kill_the_child,
        max_tasks_per_child_recycles,
        the_initializer_runs_in_every_child,
        bad_input_fails_the_task_not_the_child,
        child_output_does_not_break_frames,
        cancel_shutdown_and_as_completed,
        children_do_not_outlive_a_killed_parent,
        a_scope_crawls_a_site_across_processes_and_counts_every_page_once,
        a_scope_counts_failures_and_a_dead_child_loses_only_its_own_spawns,
        spawning_outside_a_scope_is_a_clear_error,
    ];
    libtest_mimic::run(&args, trials).exit();
}
