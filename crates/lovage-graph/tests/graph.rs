//! Delayed graphs on every local scheduler: results, keys and caching, nout, collections, cull,
//! fusion, failures, persist, pictures, and random DAGs against a serial evaluation.
//!
//! The process pool re-runs this test binary as its children, so it has its own `main`
//! (libtest-mimic) that calls `child_main` first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // tests panic to fail and print what they saw

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libtest_mimic::{Arguments, Trial};
use lovage_broker::{App, Client};
use lovage_core::TaskError;
use lovage_graph::{
    Broker, BrokerFromCaller, Delayed, Graph, GraphError, Inline, Processes, Scheduler, Threads,
};
use lovage_macros::task;
use lovage_pool::{ProcessPool, ThreadPool};
use lovage_worker::{PoolKind, Worker, WorkerConfig};
use std::time::Duration;

#[task(crate = lovage_core, graph = lovage_graph)]
fn square(x: i64) -> i64 {
    x * x
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn inc(x: i64) -> i64 {
    x + 1
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn divmod(a: i64, b: i64) -> Result<(i64, i64), String> {
    if b == 0 {
        return Err(format!("cannot divide {a} by zero"));
    }
    Ok((a / b, a % b))
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn greet(name: String, times: u32) -> String {
    format!("{}{}", "hello ".repeat(times as usize), name)
}

#[task(crate = lovage_core, graph = lovage_graph)]
async fn slow_double(x: i64) -> i64 {
    2 * x
}

/// Not `Clone`: it cannot be a graph value, yet tasks that take or return it (and their
/// `delayed`, unused) compile.
#[derive(serde::Serialize, serde::Deserialize)]
struct Opaque(u8);

#[task(crate = lovage_core, graph = lovage_graph)]
fn opaque(x: u8) -> Opaque {
    Opaque(x)
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn unwrap_opaque(o: Opaque, extra: u8) -> u8 {
    o.0 + extra
}

static PURE_RUNS: AtomicU64 = AtomicU64::new(0);
static IMPURE_RUNS: AtomicU64 = AtomicU64::new(0);

#[task(crate = lovage_core, graph = lovage_graph, pure = true)]
fn counted_pure(x: i64) -> i64 {
    PURE_RUNS.fetch_add(1, Ordering::SeqCst);
    x + 100
}

#[task(crate = lovage_core, graph = lovage_graph)]
fn counted_impure(x: i64) -> i64 {
    IMPURE_RUNS.fetch_add(1, Ordering::SeqCst);
    x + 100
}

#[task(crate = lovage_core, graph = lovage_graph, pure = true)]
fn pure_add(a: i64, b: i64) -> i64 {
    a + b
}

/// The message each run of `link` belonged to (the running task's id, as its worker set
/// it): the links of a fused chain share one. Only the broker tests read it.
static LINK_MESSAGES: std::sync::Mutex<Vec<Option<lovage_core::TaskId>>> =
    std::sync::Mutex::new(Vec::new());

#[task(crate = lovage_core, graph = lovage_graph)]
fn link(x: i64) -> i64 {
    LINK_MESSAGES
        .lock()
        .unwrap()
        .push(lovage_core::context::current().map(|t| t.id));
    x + 1
}

/// A chain link that fails when its input is `fail_at`.
#[task(crate = lovage_core, graph = lovage_graph)]
fn step(x: i64, fail_at: i64) -> Result<i64, String> {
    if x == fail_at {
        return Err(format!("planned failure at {x}"));
    }
    Ok(x + 1)
}

static FLAKY_RUNS: AtomicU64 = AtomicU64::new(0);
static FLAKY_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A chain link that fails once, the first time it is given 4, then succeeds.
#[task(crate = lovage_core, graph = lovage_graph, max_retries = 2, retry_backoff = "0s")]
fn flaky_link(x: i64) -> Result<i64, String> {
    FLAKY_RUNS.fetch_add(1, Ordering::SeqCst);
    if x == 4 && !FLAKY_FAILED.swap(true, Ordering::SeqCst) {
        return Err("flaky".into());
    }
    Ok(x + 1)
}

/// One step of a random DAG: fails when told to, otherwise mixes its inputs.
#[task(crate = lovage_core, graph = lovage_graph)]
fn mix(xs: Vec<i64>, salt: i64, fail: bool) -> Result<i64, String> {
    if fail {
        return Err(format!("planned failure (salt {salt})"));
    }
    Ok(xs
        .iter()
        .fold(salt, |acc, x| acc.wrapping_mul(31).wrapping_add(*x))
        % 1_000_003)
}

fn threads() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2))
}

fn processes() -> &'static ProcessPool {
    static POOL: OnceLock<ProcessPool> = OnceLock::new();
    POOL.get_or_init(|| ProcessPool::new(2))
}

/// A broker with a worker of its own in this process (so it runs this file's tasks), and a
/// futures client on it. Both live until the test binary exits.
fn client_on(url: String) -> Client {
    let backend = lovage_broker::connect(&url).unwrap();
    let config = WorkerConfig {
        pool: PoolKind::Threads,
        concurrency: 2,
        prefetch: 256,
        poll: Duration::from_millis(50),
        ..Default::default()
    };
    let worker = Worker::new(backend.clone(), config).unwrap();
    std::thread::spawn(move || worker.run().expect("start the worker threads"));
    App::with_backend(backend).client().unwrap()
}

/// This run's own SQLite file and Redis key prefix, removed when `main` ends.
fn sqlite_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lovage-graph-test-{}.db", std::process::id()))
}

fn redis_base() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn redis_prefix() -> String {
    format!("lovage-graph-test-{}", std::process::id())
}

fn brokers() -> [&'static Client; 3] {
    static MEMORY: OnceLock<Client> = OnceLock::new();
    static SQLITE: OnceLock<Client> = OnceLock::new();
    static REDIS: OnceLock<Client> = OnceLock::new();
    [
        MEMORY.get_or_init(|| client_on(format!("memory://graph-{}", std::process::id()))),
        SQLITE.get_or_init(|| client_on(format!("sqlite://{}", sqlite_path().display()))),
        REDIS.get_or_init(|| client_on(format!("{}?prefix={}", redis_base(), redis_prefix()))),
    ]
}

fn clean_up_brokers() {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path().display()));
    }
    let Ok(client) = redis::Client::open(redis_base()) else {
        return;
    };
    let Ok(mut c) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", redis_prefix()))
        .query(&mut c)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
    }
}

/// Every scheduler, named: the local ones and a broker of each kind.
fn schedulers() -> Vec<(&'static str, Scheduler<'static>)> {
    let [memory, sqlite, redis] = brokers();
    vec![
        ("inline", Inline),
        ("threads", Threads(threads())),
        ("processes", Processes(processes())),
        ("broker memory", Broker(memory)),
        ("broker sqlite", Broker(sqlite)),
        ("broker redis", Broker(redis)),
        (
            "broker sqlite, scheduled by the caller",
            BrokerFromCaller(sqlite),
        ),
    ]
}

static KEYED_RUNS: AtomicU64 = AtomicU64::new(0);

#[task(crate = lovage_core, graph = lovage_graph)]
fn keyed_echo(x: i64) -> i64 {
    KEYED_RUNS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    x
}

fn pure_and_keyed_submits_share_a_task_and_plain_ones_do_not() {
    let wait = Duration::from_secs(60);
    for (name, client) in broker_clients() {
        KEYED_RUNS.store(0, Ordering::SeqCst);
        let x = fastrand::i64(1..i64::MAX);
        // Identical pure calls while the first is pending: one task.
        let a = client.submit_pure(keyed_echo::s(x)).unwrap();
        let b = client.submit_pure(keyed_echo::s(x)).unwrap();
        assert_eq!(a.id(), b.id(), "{name}");
        assert_eq!(a.result_timeout(wait).unwrap(), x, "{name}");
        assert_eq!(b.result_timeout(wait).unwrap(), x, "{name}");
        // Its result is held: the same task again, nothing runs.
        let c = client.submit_pure(keyed_echo::s(x)).unwrap();
        assert_eq!(c.id(), a.id(), "{name}");
        assert_eq!(c.result_timeout(wait).unwrap(), x, "{name}");
        assert_eq!(KEYED_RUNS.load(Ordering::SeqCst), 1, "{name}: pure, once");
        // Another argument is another key.
        let d = client.submit_pure(keyed_echo::s(x - 1)).unwrap();
        assert_ne!(d.id(), a.id(), "{name}");
        // The opt-out: a plain submit always runs.
        let e = client.submit(keyed_echo::s(x)).unwrap();
        assert_ne!(e.id(), a.id(), "{name}");
        assert_eq!(e.result_timeout(wait).unwrap(), x, "{name}");
        assert_eq!(d.result_timeout(wait).unwrap(), x - 1, "{name}");
        assert_eq!(KEYED_RUNS.load(Ordering::SeqCst), 3, "{name}");
        // A user key names the task, whatever the arguments.
        let key = format!("answer-{x}");
        let k1 = client.submit_keyed(&key, keyed_echo::s(42)).unwrap();
        let k2 = client.submit_keyed(&key, keyed_echo::s(7)).unwrap();
        assert_eq!(k1.id(), k2.id(), "{name}");
        assert_eq!(
            k2.result_timeout(wait).unwrap(),
            42,
            "{name}: the first call's value"
        );
        assert_eq!(k1.result_timeout(wait).unwrap(), 42, "{name}");
        assert_eq!(KEYED_RUNS.load(Ordering::SeqCst), 4, "{name}");
    }
}

/// The broker schedulers only, named (the workers resolve dependencies).
fn broker_clients() -> Vec<(&'static str, &'static Client)> {
    let [memory, sqlite, redis] = brokers();
    vec![("memory", memory), ("sqlite", sqlite), ("redis", redis)]
}

fn a_submitted_graph_completes_after_its_client_is_gone() {
    for (name, shared) in broker_clients() {
        let g = Graph::new();
        // A binary reduction of 64 squares (127 tasks), a nout split and a collection read
        // by a task, all released by the workers.
        let mut level: Vec<Delayed<i64>> = (1..=64).map(|i| square::delayed(&g, i)).collect();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| add::delayed(&g, p[0], p[1]))
                .collect();
        }
        let sum = level[0];
        let (q, r) = g.split(divmod::delayed(&g, sum, 7));
        let both = total::delayed(&g, vec![q, r]);
        let listed = g.collect(vec![q, r, both]);
        let own = shared.app().client().unwrap();
        let sent = g.submit(&own, vec![sum, both]).unwrap();
        let listed_sent = g.submit(&own, vec![listed]).unwrap();
        assert!(
            shared
                .app()
                .backend()
                .results()
                .get_blob(sent.graph)
                .unwrap()
                .is_some(),
            "{name}: the graph is stored in the broker"
        );
        let ids: Vec<_> = sent.futures.iter().map(|f| f.id()).collect();
        let listed_id = listed_sent.futures[0].id();
        // The sender goes away at once; the workers finish the graph without it.
        drop(sent);
        drop(listed_sent);
        drop(own);
        let expect: i64 = (1..=64).map(|i: i64| i * i).sum();
        let wait = Duration::from_secs(60);
        assert_eq!(
            shared.future::<i64>(ids[0]).result_timeout(wait).unwrap(),
            expect,
            "{name}"
        );
        assert_eq!(
            shared.future::<i64>(ids[1]).result_timeout(wait).unwrap(),
            expect / 7 + expect % 7,
            "{name}"
        );
        assert_eq!(
            shared
                .future::<Vec<i64>>(listed_id)
                .result_timeout(wait)
                .unwrap(),
            vec![expect / 7, expect % 7, expect / 7 + expect % 7],
            "{name}: a collection output is evaluated by the workers"
        );
    }
}

fn a_closure_read_by_a_task_is_refused_on_a_broker() {
    for (name, client) in broker_clients() {
        let g = Graph::new();
        let x = square::delayed(&g, 3);
        let local = g.local(|a: i64| a + 1, (x,));
        let after = inc::delayed(&g, local);
        match g.compute(Broker(client), after).unwrap_err() {
            GraphError::NotRegistered { key } => {
                assert!(key.starts_with("local-"), "{name}: {key}")
            }
            other => panic!("{name}: {other:?}"),
        }
        // A closure over task results that only the caller reads runs in the caller.
        let shown = g.local(|a: i64| format!("<{a}>"), (x,));
        assert_eq!(g.compute(Broker(client), shown).unwrap(), "<9>", "{name}");
    }
}

fn seed_add_of_squares_is_13_everywhere() {
    for (name, s) in schedulers() {
        let g = Graph::new();
        let x = add::delayed(&g, square::delayed(&g, 2), square::delayed(&g, 3));
        assert_eq!(g.compute(s, x).unwrap(), 13, "{name}");
        // A value and a handle mix freely; strings and async tasks too.
        let y = add::delayed(&g, 10, x);
        let hello = greet::delayed(&g, "lovage".to_string(), 2);
        let d = slow_double::delayed(&g, y);
        assert_eq!(
            g.compute(s, (y, hello, d)).unwrap(),
            (23, "hello hello lovage".to_string(), 46),
            "{name}"
        );
    }
}

fn pure_calls_are_one_node_impure_calls_two() {
    let g = Graph::new();
    let a = counted_pure::delayed(&g, 1);
    let b = counted_pure::delayed(&g, 1);
    let c = counted_pure::delayed(&g, 2);
    assert_eq!(a.index(), b.index());
    assert_ne!(a.index(), c.index());
    assert_eq!(g.key(a).unwrap(), g.key(b).unwrap());
    assert!(
        g.key(a).unwrap().starts_with("graph::counted_pure-"),
        "{}",
        g.key(a).unwrap()
    );
    // Keys are the same in another graph (and another process): name + encoded arguments.
    let g2 = Graph::new();
    assert_eq!(
        g.key(a).unwrap(),
        g2.key(counted_pure::delayed(&g2, 1)).unwrap()
    );
    // A pure call of pure calls: the dependency enters the key by its key.
    let s1 = pure_add::delayed(&g, a, c);
    let s2 = pure_add::delayed(&g, b, c);
    assert_eq!(s1.index(), s2.index());

    let i1 = counted_impure::delayed(&g, 1);
    let i2 = counted_impure::delayed(&g, 1);
    assert_ne!(i1.index(), i2.index());
    assert_ne!(g.key(i1).unwrap(), g.key(i2).unwrap());

    PURE_RUNS.store(0, Ordering::SeqCst);
    IMPURE_RUNS.store(0, Ordering::SeqCst);
    let out = g.compute(Inline, (a, b, s1, i1, i2)).unwrap();
    assert_eq!(out, (101, 101, 203, 101, 101));
    assert_eq!(
        PURE_RUNS.load(Ordering::SeqCst),
        2,
        "pure: f(1) and f(2) once each"
    );
    assert_eq!(IMPURE_RUNS.load(Ordering::SeqCst), 2, "impure: twice");
    for (name, s) in schedulers() {
        g.compute(s, (a, b, s1, i1, i2)).unwrap();
        // a (=b), c, s1, i1, i2: five nodes ran, whatever the scheduler.
        assert_eq!(g.last_stats().ran, 5, "{name}");
    }
}

fn user_keys_are_kept_and_a_duplicate_is_refused() {
    let g = Graph::new();
    let a = square::delayed(&g, 4);
    let b = square::delayed(&g, 5);
    g.set_key(a, "sixteen").unwrap();
    assert_eq!(g.key(a).unwrap(), "sixteen");
    assert_eq!(
        g.set_key(b, "sixteen").unwrap_err(),
        GraphError::DuplicateKey {
            key: "sixteen".into()
        }
    );
    g.set_key(a, "still-sixteen").unwrap();
    g.set_key(b, "sixteen").unwrap();
}

fn nout_splits_a_tuple_result() {
    for (name, s) in schedulers() {
        let g = Graph::new();
        let (q, r) = g.split(divmod::delayed(&g, 17, 5));
        let back = add::delayed(&g, square::delayed(&g, q), r);
        assert_eq!(g.compute(s, (q, r, back)).unwrap(), (3, 2, 11), "{name}");
    }
}

fn collections_gather_into_one_handle() {
    for (name, s) in schedulers() {
        let g = Graph::new();
        let squares: Vec<Delayed<i64>> = (1..=4).map(|i| square::delayed(&g, i)).collect();
        // A Vec of handles where the task takes a Vec.
        let sum = total::delayed(&g, squares.clone());
        // Nested: a collection of collections.
        let halves = g.collect(vec![
            g.collect(squares[..2].to_vec()),
            g.collect(squares[2..].to_vec()),
        ]);
        let named = g.collect_map(vec![("one", squares[0]), ("four", squares[3])]);
        let pair = g.tuple((squares[1], g.value("x".to_string())));
        let (sum, halves, named, pair) = g.compute(s, (sum, halves, named, pair)).unwrap();
        assert_eq!(pair, (4, "x".to_string()), "{name}");
        assert_eq!(sum, 30, "{name}");
        assert_eq!(halves, vec![vec![1, 4], vec![9, 16]], "{name}");
        assert_eq!(named.get("four"), Some(&16), "{name}");
        assert_eq!(named.len(), 2, "{name}");
    }
}

fn cull_runs_only_the_ancestors_of_what_is_asked() {
    for (name, s) in schedulers() {
        let g = Graph::new();
        let wanted = inc::delayed(&g, inc::delayed(&g, 1));
        // A failing branch nobody asks for must not run (or fail the run).
        let _unwanted = divmod::delayed(&g, 1, 0);
        let _also = square::delayed(&g, 9);
        assert_eq!(g.compute(s, wanted).unwrap(), 3, "{name}");
        let st = g.last_stats();
        assert_eq!((st.nodes, st.ran, st.failed), (4, 2, 0), "{name}");
    }
}

/// On the local pools (the brokers: `a_fused_ten_link_chain_is_one_dispatch_on_brokers`).
fn a_single_consumer_chain_is_one_dispatch() {
    for (name, s) in [
        ("threads", Threads(threads())),
        ("processes", Processes(processes())),
    ] {
        let g = Graph::new();
        let mut x = inc::delayed(&g, 0);
        for _ in 1..10 {
            x = inc::delayed(&g, x);
        }
        assert_eq!(g.compute(s, x).unwrap(), 10, "{name}");
        assert_eq!(g.last_stats().ran, 10, "{name}");
        assert_eq!(
            g.last_stats().dispatches,
            1,
            "{name}: a fused 10-link chain is one dispatch"
        );
        // Two independent chains: two dispatches (one per root), not twenty.
        let y0 = inc::delayed(&g, 100);
        let mut y = y0;
        for _ in 1..10 {
            y = inc::delayed(&g, y);
        }
        assert_eq!(g.compute(s, (x, y)).unwrap(), (10, 110), "{name}");
        assert_eq!(g.last_stats().dispatches, 2, "{name}");
        // An output inside a chain ends it: its value comes back.
        let mid = inc::delayed(&g, 0);
        let end = inc::delayed(&g, inc::delayed(&g, mid));
        assert_eq!(g.compute(s, (mid, end)).unwrap(), (1, 3), "{name}");
    }
}

/// Issue 16's "a fused 10-link chain is one dispatch", on the brokers: the graph goes out
/// as one message (the caller's count) and the workers run the ten links inside one task
/// (each link sees the same running task id); the chain's value still reaches a dependent.
fn a_fused_ten_link_chain_is_one_dispatch_on_brokers() {
    for (name, client) in broker_clients() {
        let g = Graph::new();
        let mut x = link::delayed(&g, 0);
        for _ in 1..10 {
            x = link::delayed(&g, x);
        }
        LINK_MESSAGES.lock().unwrap().clear();
        assert_eq!(g.compute(Broker(client), x).unwrap(), 10, "{name}");
        assert_eq!(g.last_stats().ran, 10, "{name}");
        let runs = std::mem::take(&mut *LINK_MESSAGES.lock().unwrap());
        assert_eq!(runs.len(), 10, "{name}: {runs:?}");
        let mut messages: Vec<_> = runs.iter().map(|m| m.expect("run by a worker")).collect();
        messages.dedup();
        assert_eq!(messages.len(), 1, "{name}: the links ran in {messages:?}");
        assert_eq!(
            g.last_stats().dispatches,
            1,
            "{name}: a fused 10-link chain is one dispatch"
        );
        // Scheduled by the caller, the chain is one message too.
        assert_eq!(
            g.compute(BrokerFromCaller(client), x).unwrap(),
            10,
            "{name}"
        );
        let runs = std::mem::take(&mut *LINK_MESSAGES.lock().unwrap());
        let mut messages: Vec<_> = runs.iter().map(|m| m.expect("run by a worker")).collect();
        messages.dedup();
        assert_eq!(
            (runs.len(), messages.len(), g.last_stats().dispatches),
            (10, 1, 1),
            "{name}, scheduled by the caller: the links ran in {messages:?}"
        );

        // Downstream of the chain, a join with another branch: the chain's last value is
        // stored and read as an unfused node's would be.
        let both = add::delayed(&g, x, square::delayed(&g, 3));
        assert_eq!(g.compute(Broker(client), both).unwrap(), 19, "{name}");
        // A node with two readers ends a chain: three messages for a → (b, c).
        let a = link::delayed(&g, 0);
        let (b, c) = (link::delayed(&g, a), link::delayed(&g, a));
        assert_eq!(g.compute(Broker(client), (b, c)).unwrap(), (2, 2), "{name}");
        assert_eq!(g.last_stats().dispatches, 3, "{name}");
        // A requested link ends a chain too (its value must be stored).
        let mid = link::delayed(&g, 0);
        let end = link::delayed(&g, link::delayed(&g, mid));
        assert_eq!(
            g.compute(Broker(client), (mid, end)).unwrap(),
            (1, 3),
            "{name}"
        );
        assert_eq!(g.last_stats().dispatches, 2, "{name}");
    }
}

/// A link failing inside a fused chain fails what follows as an unfused chain would: the
/// nodes after it (the chain's last one included) with `DependencyFailed` naming it, the
/// last link with its own error; on every scheduler.
fn a_failing_link_of_a_fused_chain_fails_what_follows() {
    for (name, s) in schedulers() {
        for fail_at in [0, 4, 9] {
            let g = Graph::new();
            let mut links = vec![step::delayed(&g, 0, fail_at)];
            for _ in 1..10 {
                let x = *links.last().unwrap();
                links.push(step::delayed(&g, x, fail_at));
            }
            let tail = *links.last().unwrap();
            let failed_key = g.key(links[fail_at as usize]).unwrap();
            let after = add::delayed(&g, tail, square::delayed(&g, 2));
            let fine = square::delayed(&g, 5);
            let got = g.compute_partial(s, vec![tail, after, fine]).unwrap();
            let what = format!("{name}, failing at link {fail_at}");
            match &got[0] {
                Err(GraphError::Failed { key, error }) if fail_at == 9 => {
                    assert_eq!(key, &failed_key, "{what}");
                    assert!(error.message.contains("planned failure"), "{what}: {error}");
                }
                Err(GraphError::DependencyFailed { key, cause }) if fail_at < 9 => {
                    assert_eq!(key, &failed_key, "{what}");
                    assert!(cause.message.contains("planned failure"), "{what}: {cause}");
                }
                other => panic!("{what}: the chain's last node gave {other:?}"),
            }
            match &got[1] {
                Err(GraphError::DependencyFailed { key, cause }) => {
                    assert_eq!(key, &failed_key, "{what}");
                    assert!(cause.message.contains("planned failure"), "{what}: {cause}");
                }
                other => panic!("{what}: the node after the chain gave {other:?}"),
            }
            assert_eq!(got[2], Ok(25), "{what}: another branch finishes");
        }
    }
}

/// A fused chain whose links retry is retried as one message: the whole chain runs again
/// from its first link (links 0–4 of the first run, then all ten).
fn a_retried_fused_chain_runs_again_from_its_first_link() {
    for (name, client) in broker_clients() {
        let g = Graph::new();
        let mut x = flaky_link::delayed(&g, 0);
        for _ in 1..10 {
            x = flaky_link::delayed(&g, x);
        }
        FLAKY_RUNS.store(0, Ordering::SeqCst);
        FLAKY_FAILED.store(false, Ordering::SeqCst);
        assert_eq!(g.compute(Broker(client), x).unwrap(), 10, "{name}");
        assert_eq!(g.last_stats().dispatches, 1, "{name}");
        assert_eq!(FLAKY_RUNS.load(Ordering::SeqCst), 15, "{name}");
    }
}

fn failures_reach_dependents_and_other_branches_finish() {
    for (name, s) in schedulers() {
        let g = Graph::new();
        let bad = divmod::delayed(&g, 1, 0);
        let bad_key = g.key(bad).unwrap();
        let (q, _r) = g.split(bad);
        let downstream = inc::delayed(&g, inc::delayed(&g, q));
        let fine = add::delayed(&g, square::delayed(&g, 3), 1);

        let err = g.compute(s, (fine, downstream)).unwrap_err();
        match &err {
            GraphError::DependencyFailed { key, cause } => {
                assert_eq!(key, &bad_key, "{name}");
                assert_eq!(
                    cause.kind, "Failed",
                    "{name}: a String error has no type name to keep"
                );
                assert!(
                    cause.message.contains("cannot divide 1 by zero"),
                    "{name}: {cause}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
        let (f, d, b) = g.compute_partial(s, (fine, downstream, bad)).unwrap();
        assert_eq!(f.unwrap(), 10, "{name}: the other branch finished");
        assert!(
            matches!(d, Err(GraphError::DependencyFailed { .. })),
            "{name}"
        );
        match b {
            Err(GraphError::Failed { key, error }) => {
                assert_eq!(key, bad_key);
                assert!(error.message.contains("by zero"));
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            g.last_stats().failed,
            4,
            "{name}: bad, its getitem, two incs"
        );
    }
}

fn closures_run_locally_and_a_process_pool_refuses_them() {
    for (name, s) in [("inline", Inline), ("threads", Threads(threads()))] {
        let g = Graph::new();
        let x = square::delayed(&g, 3);
        let y = square::delayed(&g, 4);
        let h = g.local(|a: i64, b: i64| ((a + b) as f64).sqrt(), (x, y));
        let label = g.local(move |v: f64| format!("{name}: {v}"), (h,));
        assert_eq!(g.compute(s, label).unwrap(), format!("{name}: 5"));
        let panics = g.local(|a: i64| -> i64 { panic!("boom {a}") }, (x,));
        match g.compute(s, panics).unwrap_err() {
            GraphError::Failed { error, .. } => {
                assert_eq!(error.kind, "Panic");
                assert!(error.message.contains("boom 9"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }
    let g = Graph::new();
    let x = square::delayed(&g, 3);
    let h = g.local(|a: i64| a + 1, (x,));
    match g.compute(Processes(processes()), h).unwrap_err() {
        GraphError::NotRegistered { key } => assert!(key.starts_with("local-"), "{key}"),
        other => panic!("{other:?}"),
    }
    // What does not need the closure still runs there.
    assert_eq!(g.compute(Processes(processes()), x).unwrap(), 9);
}

fn a_handle_of_another_graph_is_refused() {
    let g1 = Graph::new();
    let g2 = Graph::new();
    let x = square::delayed(&g1, 3);
    assert!(matches!(
        g2.compute(Inline, x),
        Err(GraphError::ForeignHandle { .. })
    ));
    // Used as an argument, the error is kept and reported by compute.
    let y = inc::delayed(&g2, x);
    assert!(matches!(
        g2.compute(Inline, y),
        Err(GraphError::ForeignHandle { .. })
    ));
}

fn persist_keeps_values_so_ancestors_do_not_run_again() {
    for (name, s) in schedulers() {
        let g = Graph::new();
        let base = add::delayed(&g, square::delayed(&g, 5), square::delayed(&g, 6));
        g.persist(s, base).unwrap();
        assert_eq!(g.last_stats().ran, 3, "{name}");
        let next = inc::delayed(&g, base);
        assert_eq!(g.compute(s, next).unwrap(), 62, "{name}");
        assert_eq!(
            g.last_stats().ran,
            2,
            "{name}: the persisted node and inc only"
        );
    }
}

const GOLDEN_DOT: &str = r##"digraph lovage {
  rankdir=TB;
  node [shape=box, style=filled, fontname="monospace"];
  "two" [label="value", fillcolor="#e6e6e6"];
  "graph::pure_add-79b184b8164a5df7" [label="pure_add", fillcolor="#cfe2ff"];
  "sum" [label="pure_add", fillcolor="#cfe2ff"];
  "graph::pure_add-6900639ae4962746" [label="pure_add", fillcolor="#cfe2ff"];
  "two" -> "graph::pure_add-79b184b8164a5df7";
  "two" -> "sum";
  "graph::pure_add-79b184b8164a5df7" -> "sum";
  "sum" -> "graph::pure_add-6900639ae4962746";
  "sum" -> "graph::pure_add-6900639ae4962746";
}
"##;

fn dot_matches_the_golden_text() {
    let g = Graph::new();
    let two = g.value(2i64);
    g.set_key(two, "two").unwrap();
    let a = pure_add::delayed(&g, 1, two);
    let s = pure_add::delayed(&g, two, a);
    g.set_key(s, "sum").unwrap();
    let _double = pure_add::delayed(&g, s, s);
    let dot = g.to_dot();
    if dot != GOLDEN_DOT {
        panic!("DOT changed; got:\n{dot}");
    }
}

fn svg_parses_as_xml_and_large_graphs_are_grouped() {
    let g = Graph::new();
    let xs: Vec<_> = (0..5).map(|i| square::delayed(&g, i)).collect();
    let t = total::delayed(&g, xs);
    let _ = g.local(|v: i64| v < 5 && 1 > 0, (t,));
    let svg = g.to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(rects, g.len());
    let lines = doc.descendants().filter(|n| n.has_tag_name("line")).count();
    assert_eq!(lines, g.edges());

    // Above 10,000 nodes: one box per task name, with counts.
    let big = Graph::new();
    let leaves: Vec<_> = (0..12_000).map(|i| square::delayed(&big, i)).collect();
    let _sum = total::delayed(&big, leaves);
    let svg = big.to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(rects, 3, "square, collect, total");
    assert!(svg.contains("square ×12000"), "{svg}");
    let dot = big.to_dot();
    assert!(dot.contains("[label=\"12000\"]"), "{dot}");
}

const GOLDEN_GROUPED_DOT: &str = r##"digraph lovage {
  rankdir=TB;
  node [shape=box, style=filled, fontname="monospace"];
  "graph::square" [label="square ×6", fillcolor="#cfe2ff"];
  "graph::total" [label="total ×1", fillcolor="#cfe2ff"];
  "graph::square" -> "graph::total" [label="5"];
}
"##;

/// Forced grouping draws one box per task name at any size, collects left out (their inputs
/// joined to their readers); a picture of what a handle needs leaves out the rest; edges inside
/// a group are loops.
fn small_graphs_group_by_task_name_when_asked() {
    let g = Graph::new();
    let xs: Vec<_> = (0..5).map(|i| square::delayed(&g, i)).collect();
    let t = total::delayed(&g, xs);
    let _unrelated = square::delayed(&g, 9);
    let dot = g.to_dot_grouped();
    if dot != GOLDEN_GROUPED_DOT {
        panic!("grouped DOT changed; got:\n{dot}");
    }
    // The ungrouped picture of the same small graph still has a box per node.
    assert_eq!(g.to_dot().matches("fillcolor").count(), g.len());

    let svg = g.to_svg_grouped();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(
        rects, 2,
        "square and total, the collect between them left out: {svg}"
    );
    let lines = doc.descendants().filter(|n| n.has_tag_name("line")).count();
    assert_eq!(lines, 1, "{svg}");
    assert!(svg.contains("square ×6"), "{svg}");

    // Only what `t` needs: five squares, not the unrelated sixth.
    let picture = g.grouped_picture(&t).unwrap();
    assert_eq!(picture.boxes(), 2);
    assert!(
        picture.to_dot().contains("square ×5"),
        "{}",
        picture.to_dot()
    );

    // A chain of one task: a single box with a loop carrying the count of its edges.
    let chain = Graph::new();
    let mut x = inc::delayed(&chain, 0);
    for _ in 0..3 {
        x = inc::delayed(&chain, x);
    }
    let dot = chain.grouped_picture(&x).unwrap().to_dot();
    assert!(dot.contains("-> \"graph::inc\" [label=\"3\"]"), "{dot}");
    let svg = chain.to_svg_grouped();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let loops: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("loop"))
        .collect();
    assert_eq!(loops.len(), 1, "{svg}");

    // A handle of another graph is refused.
    assert!(chain.grouped_picture(&t).is_err());
}

/// A random DAG of `mix` calls (some planned to fail), computed on `s` and checked node by
/// node against a serial evaluation of the same plan.
fn random_dag(seed: u64, nodes: usize, s: Scheduler<'_>, name: &str) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let g = Graph::new();
    let mut handles: Vec<Delayed<i64>> = Vec::with_capacity(nodes);
    // What a serial evaluation says: each node's value, or the index of the failure it shows.
    let mut expect: Vec<Result<i64, usize>> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let k = if i == 0 { 0 } else { rng.usize(0..=3.min(i)) };
        let deps: Vec<usize> = (0..k).map(|_| rng.usize(0..i)).collect();
        let salt = rng.i64(0..1_000);
        let fail = rng.u32(0..100) < 3;
        let h = mix::delayed(
            &g,
            deps.iter().map(|&d| handles[d]).collect::<Vec<_>>(),
            salt,
            fail,
        );
        handles.push(h);
        let first_failed = deps.iter().find_map(|&d| expect[d].err());
        expect.push(match first_failed {
            Some(origin) => Err(origin),
            None if fail => Err(i),
            None => Ok(deps
                .iter()
                .map(|&d| expect[d].unwrap_or_default())
                .fold(salt, |acc, x| acc.wrapping_mul(31).wrapping_add(x))
                % 1_000_003),
        });
    }
    // Ask for a random half of the nodes (the rest is culled unless an ancestor).
    let wanted: Vec<usize> = (0..nodes).filter(|_| rng.bool()).collect();
    let got = g
        .compute_partial(s, wanted.iter().map(|&i| handles[i]).collect::<Vec<_>>())
        .unwrap();
    for (&i, r) in wanted.iter().zip(got) {
        match (&expect[i], r) {
            (Ok(v), Ok(w)) => assert_eq!(*v, w, "{name} seed {seed} node {i}"),
            (Err(origin), Err(GraphError::Failed { key, .. })) if *origin == i => {
                assert_eq!(key, g.key(handles[i]).unwrap())
            }
            (Err(origin), Err(GraphError::DependencyFailed { key, cause })) => {
                assert_eq!(
                    key,
                    g.key(handles[*origin]).unwrap(),
                    "{name} seed {seed} node {i}"
                );
                assert!(cause.message.contains("planned failure"), "{cause}");
            }
            (e, r) => panic!("{name} seed {seed} node {i}: expected {e:?}, got {r:?}"),
        }
    }
}

fn random_dags_match_a_serial_evaluation_on_every_scheduler() {
    for seed in 0..7u64 {
        let nodes = match seed {
            0..=2 => 300,
            3..=5 => 3_000,
            _ => 10_000,
        };
        for (name, s) in schedulers() {
            random_dag(seed, nodes, s, name);
        }
    }
}

macro_rules! trials {
    ($($f:ident),* $(,)?) => { vec![$(Trial::test(stringify!($f), || { $f(); Ok(()) })),*] };
}

fn try_local_all_takes_any_number_of_inputs_and_may_fail_and_progress_counts() {
    let g = Graph::new();
    let xs: Vec<_> = (1..=5i64).map(|x| g.value(x)).collect();
    let sum = g.try_local_all("sum", |v: Vec<i64>| Ok(v.iter().sum::<i64>()), xs.clone());
    let bad = g.try_local_all(
        "bad",
        |v: Vec<i64>| Err::<i64, _>(TaskError::new("InputError", format!("{} inputs", v.len()))),
        xs,
    );
    let after = g.try_local_all("after", |v: Vec<i64>| Ok(v[0]), vec![bad]);
    let root = g.try_local_all("root", |v: Vec<i64>| Ok(v.len()), vec![]);
    let progress = std::sync::Arc::new(lovage_graph::Progress::default());
    g.set_progress(Some(progress.clone()));
    assert_eq!(g.compute(Inline, (sum, root)).unwrap(), (15, 0));
    assert_eq!(progress.total.load(Ordering::Relaxed), 7);
    assert_eq!(progress.done.load(Ordering::Relaxed), 7);
    assert!(g.key(sum).unwrap().starts_with("sum-"));
    match g.compute(Inline, after) {
        Err(GraphError::DependencyFailed { cause, .. }) => assert_eq!(cause.message, "5 inputs"),
        other => panic!("{other:?}"),
    }
}

fn main() {
    lovage_pool::child_main();
    assert_eq!(unwrap_opaque(opaque(1), 1), 2);
    let args = Arguments::from_args();
    let trials = trials![
        seed_add_of_squares_is_13_everywhere,
        pure_calls_are_one_node_impure_calls_two,
        user_keys_are_kept_and_a_duplicate_is_refused,
        nout_splits_a_tuple_result,
        collections_gather_into_one_handle,
        cull_runs_only_the_ancestors_of_what_is_asked,
        a_single_consumer_chain_is_one_dispatch,
        a_fused_ten_link_chain_is_one_dispatch_on_brokers,
        a_failing_link_of_a_fused_chain_fails_what_follows,
        a_retried_fused_chain_runs_again_from_its_first_link,
        failures_reach_dependents_and_other_branches_finish,
        closures_run_locally_and_a_process_pool_refuses_them,
        a_handle_of_another_graph_is_refused,
        persist_keeps_values_so_ancestors_do_not_run_again,
        dot_matches_the_golden_text,
        svg_parses_as_xml_and_large_graphs_are_grouped,
        small_graphs_group_by_task_name_when_asked,
        random_dags_match_a_serial_evaluation_on_every_scheduler,
        try_local_all_takes_any_number_of_inputs_and_may_fail_and_progress_counts,
        a_submitted_graph_completes_after_its_client_is_gone,
        a_closure_read_by_a_task_is_refused_on_a_broker,
        pure_and_keyed_submits_share_a_task_and_plain_ones_do_not,
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    clean_up_brokers();
    conclusion.exit();
}
