//! Tasks that submit tasks (issue 16, item 7) against real workers on memory, SQLite and
//! Redis: `ctx().spawn` sets parent and root, a tree of parents waiting on their children
//! completes on 2 workers of 1 slot each (a blocking wait gives the slot back), and a scope
//! joins every task spawned inside it, transitively, with counts and failures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod common;

use std::time::Duration;

use lovage_broker::{App, Backend};
use lovage_core::TaskId;
use lovage_macros::task;
use lovage_worker::{PoolKind, Worker, WorkerConfig};

use common::Fresh;

/// Far above what any scenario here takes; a deadlock fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(120);

/// A binary tree of `depth` levels below this task: each parent submits two children and
/// waits for both (holding nothing while it waits); returns the number of tasks in it.
#[task(crate = lovage_core)]
fn tree(depth: u32) -> Result<u64, String> {
    if depth == 0 {
        return Ok(1);
    }
    let ctx = lovage_broker::ctx::current().ok_or("not run by a worker")?;
    let left = ctx.submit(tree::s(depth - 1)).map_err(|e| e.to_string())?;
    let right = ctx.submit(tree::s(depth - 1)).map_err(|e| e.to_string())?;
    let l = left.result().map_err(|e| e.to_string())?;
    let r = right.result().map_err(|e| e.to_string())?;
    Ok(1 + l + r)
}

/// A task's id, parent and root.
type Lineage = (TaskId, Option<TaskId>, TaskId);

/// This task's id, parent and root as seen from inside.
#[task(crate = lovage_core)]
fn lineage() -> Result<Lineage, String> {
    let ctx = lovage_broker::ctx::current().ok_or("not run by a worker")?;
    Ok((ctx.id(), ctx.parent_id(), ctx.root_id()))
}

/// Spawns a `lineage` child and returns (its own id, the child's lineage).
#[task(crate = lovage_core)]
fn parent_of_one() -> Result<(TaskId, Lineage), String> {
    let ctx = lovage_broker::ctx::current().ok_or("not run by a worker")?;
    let child = ctx.submit(lineage::s()).map_err(|e| e.to_string())?;
    Ok((ctx.id(), child.result().map_err(|e| e.to_string())?))
}

/// Spawns `fanout` children with `depth - 1` below each, without waiting for any; a node
/// whose number is a multiple of `fail_every` (when not 0) fails.
#[task(crate = lovage_core)]
fn spread(depth: u32, fanout: u32, number: u64, fail_every: u64) -> Result<(), String> {
    if fail_every != 0 && number % fail_every == 0 && number != 0 {
        return Err(format!("node {number} fails on purpose"));
    }
    if depth == 0 {
        return Ok(());
    }
    let ctx = lovage_broker::ctx::current().ok_or("not run by a worker")?;
    for k in 0..u64::from(fanout) {
        let child = number * u64::from(fanout) + k + 1;
        ctx.spawn(spread::s(depth - 1, fanout, child, fail_every))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Takes the worker's client first, then spawns a child (`depth - 1`) into its scope and
/// waits for it through that client: the child, held back to go with this task's outcome,
/// must be sent before the wait. Returns the depth below it.
#[task(crate = lovage_core)]
fn wait_for_own_child(depth: u32) -> Result<u32, String> {
    if depth == 0 {
        return Ok(0);
    }
    let ctx = lovage_broker::ctx::current().ok_or("not run by a worker")?;
    let client = ctx.client().map_err(|e| e.to_string())?;
    let child = ctx
        .spawn(wait_for_own_child::s(depth - 1))
        .map_err(|e| e.to_string())?;
    let below: u32 = client
        .future(child)
        .result_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok(below + 1)
}

/// Workers sharing one backend, stopped when dropped.
struct Workers {
    app: App,
    stops: Vec<lovage_worker::Shutdown>,
    threads: Vec<std::thread::JoinHandle<lovage_worker::WorkerReport>>,
    _fresh: Fresh,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for s in &self.stops {
            s.graceful();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `n` workers of one slot each (no prefetch beyond what the worker's adaptive rule allows).
fn start(fresh: Fresh, n: usize) -> Workers {
    let backend: Backend = fresh.backend.clone();
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..n {
        let config = WorkerConfig {
            concurrency: 1,
            prefetch: 1,
            pool: PoolKind::Threads,
            poll: Duration::from_millis(20),
            lease: Duration::from_secs(30),
            ..Default::default()
        };
        let worker = Worker::new(backend.clone(), config).unwrap();
        stops.push(worker.shutdown_handle());
        threads.push(std::thread::spawn(move || worker.run().expect("worker")));
    }
    Workers {
        app: App::with_backend(backend),
        stops,
        threads,
        _fresh: fresh,
    }
}

fn a_spawned_task_knows_its_parent_and_root(w: Workers) {
    let client = w.app.client().unwrap();
    let f = client.submit(parent_of_one::s()).unwrap();
    let (parent, (child, child_parent, child_root)) = f.result_timeout(BOUND).unwrap();
    assert_ne!(child, parent);
    assert_eq!(
        child_parent,
        Some(parent),
        "the child's parent is the spawner"
    );
    assert_eq!(child_root, parent, "the root of a tree is its first task");
}

fn a_depth_10_tree_of_waiting_parents_completes_on_two_single_slot_workers(w: Workers) {
    let client = w.app.client().unwrap();
    let f = client.submit(tree::s(10)).unwrap();
    // 2^11 - 1 tasks, 1023 of them waiting on their children at some point.
    assert_eq!(f.result_timeout(BOUND).unwrap(), 2047);
}

fn a_scope_joins_every_task_spawned_inside_with_counts_and_failures(w: Workers) {
    // 1 + 3 + 9 + 27 + 81 = 121 nodes; every 7th (7, 14, …) fails and spawns nothing.
    let report = w
        .app
        .scope_timeout(Some(BOUND), |s| s.spawn(spread::s(4, 3, 0, 7)))
        .unwrap();
    let root = report.value.unwrap();
    let mut failing = Vec::new();
    let mut expected = 0u64;
    let mut todo = vec![(0u64, 4u32)];
    while let Some((n, depth)) = todo.pop() {
        expected += 1;
        if n % 7 == 0 && n != 0 {
            failing.push(n);
            continue;
        }
        if depth > 0 {
            todo.extend((0..3).map(|k| (n * 3 + k + 1, depth - 1)));
        }
    }
    assert_eq!(report.spawned, expected, "each task counted once");
    assert_eq!(report.failed.len(), failing.len(), "every failure reported");
    assert_eq!(report.succeeded + report.failed.len() as u64, expected);
    for (_, error) in &report.failed {
        let error = error.as_ref().expect("the failure's error is stored");
        assert!(error.message.contains("fails on purpose"), "{error:?}");
    }
    // The root's own record is there: it finished before the join returned.
    let rec = w.app.backend().results().get(root).unwrap().unwrap();
    assert!(rec.state.is_final());
}

fn a_child_held_back_is_sent_before_its_parent_waits_for_it(w: Workers) {
    let report = w
        .app
        .scope_timeout(Some(BOUND), |s| s.spawn(wait_for_own_child::s(4)))
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!((report.spawned, report.succeeded), (5, 5));
    let root = report.value.unwrap();
    let rec = w.app.backend().results().get(root).unwrap().unwrap();
    let depth: u32 = serde_json::from_slice(rec.value.as_deref().unwrap()).unwrap();
    assert_eq!(depth, 4);
}

fn a_scope_with_nothing_spawned_returns_at_once(w: Workers) {
    let report = w.app.scope_timeout(Some(BOUND), |_| 5).unwrap();
    assert_eq!((report.value, report.spawned, report.succeeded), (5, 0, 0));
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory { $( #[test] fn $name() { super::$name(super::start(super::common::memory_backend(), 2)) } )* }
        mod sqlite { $( #[test] fn $name() { super::$name(super::start(super::common::sqlite_backend(), 2)) } )* }
        mod redis { $( #[test] fn $name() { super::$name(super::start(super::common::redis_backend(), 2)) } )* }
    };
}

on_every_backend!(
    a_spawned_task_knows_its_parent_and_root,
    a_depth_10_tree_of_waiting_parents_completes_on_two_single_slot_workers,
    a_scope_joins_every_task_spawned_inside_with_counts_and_failures,
    a_scope_with_nothing_spawned_returns_at_once,
    a_child_held_back_is_sent_before_its_parent_waits_for_it,
);
