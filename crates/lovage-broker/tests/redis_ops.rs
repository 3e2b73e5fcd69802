//! The Redis backend against servers configured as production may configure them: an eviction
//! policy, a failover that demotes the primary, a full memory, an AOF synced on every write,
//! a replica that lags, a Cluster node. Each test starts private `redis-server`s of its own
//! (tests/support) on free local ports, and never touches the shared server's configuration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::undocumented_unsafe_blocks
)] // tests panic to fail and print what they saw

mod support;

use std::collections::HashSet;

use lovage_broker::conformance::env;
use lovage_broker::redis_backend::RedisBackend;
use lovage_broker::{connect, Admin, Broker, Envelope};
use support::PrivateRedis;

fn batch(n: usize, queue: &str) -> Vec<Envelope> {
    (0..n).map(|_| env(queue, 5)).collect()
}

/// Under `volatile-lru` a chord's counter or a chain's tail could be evicted: open refuses,
/// naming the policy and the override; with `eviction=warn` it opens.
#[test]
fn redis_refuses_a_server_that_evicts_keys() {
    let server = PrivateRedis::start(&["--maxmemory-policy", "volatile-lru"]);
    let err = connect(&server.url()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("\"volatile-lru\""), "{text}");
    assert!(text.contains("noeviction"), "{text}");
    assert!(text.contains("eviction=warn"), "{text}");
    connect(&format!("{}?eviction=warn", server.url())).expect("opens with eviction=warn");

    let server = PrivateRedis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let err = connect(&server.url()).expect_err("refused").to_string();
    assert!(
        err.contains("\"allkeys-lru\"") && err.contains("waiting tasks"),
        "{err}"
    );
}

/// A hosted Redis that disables CONFIG still shows its policy in INFO memory.
#[test]
fn redis_reads_the_eviction_policy_without_config() {
    let server = PrivateRedis::start(&[
        "--maxmemory-policy",
        "volatile-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let err = connect(&server.url()).expect_err("refused").to_string();
    assert!(err.contains("\"volatile-lru\""), "{err}");
}

/// A primary demoted by a failover answers READONLY: the call fails with a transient error,
/// the pool keeps none of the connections to it, and once the address leads to a primary
/// again the next call succeeds without reopening the backend.
#[test]
fn redis_drops_its_connections_on_readonly() {
    let other = PrivateRedis::start(&["--repl-diskless-sync-delay", "0"]);
    let server = PrivateRedis::start(&[]);
    let b = std::sync::Arc::new(RedisBackend::open(&server.url()).unwrap());
    // Several connections in the pool: calls at once each take one.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    b.enqueue(&batch(50, "default")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(b.idle_connections() >= 1);
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(other.port)
        .query(&mut server.conn())
        .unwrap();
    server.wait_replica_link();

    let err = b.enqueue(&batch(1, "default")).expect_err("READONLY");
    assert!(err.to_string().contains("read only replica"), "{err}");
    assert!(err.is_transient(), "a worker retries it: {err}");
    assert_eq!(
        b.idle_connections(),
        0,
        "the pool kept connections to a replica"
    );
    // A script's READONLY does the same.
    let err = b.revoke(lovage_core::TaskId::new()).expect_err("READONLY");
    assert!(err.is_transient(), "{err}");
    assert_eq!(b.idle_connections(), 0);

    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut server.conn())
        .unwrap();
    let sent = batch(3, "default");
    b.enqueue(&sent).expect("the same backend sends again");
    let stats = b.stats().unwrap();
    assert_eq!(stats.iter().map(|s| s.ready).sum::<u64>(), 3, "{stats:?}");
}

/// Out of memory mid-send (`noeviction`): no task is left stored without its queue entry,
/// where it would never be delivered nor counted.
#[test]
fn redis_stores_a_send_chunk_whole_or_not_at_all() {
    let server = PrivateRedis::start(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let b = RedisBackend::open(&format!("{}?prefix=oom", server.url())).unwrap();
    let mut sent = 0;
    let err = loop {
        match b.enqueue(&batch(250, "default")) {
            Ok(()) => sent += 250,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "3 MB never filled");
    };
    assert!(err.to_string().contains("OOM"), "{err}");
    assert!(err.is_transient(), "a full Redis may drain: {err:?}");
    let mut c = server.conn();
    let stored: Vec<String> = redis::cmd("HKEYS").arg("oom:tasks").query(&mut c).unwrap();
    let queued: HashSet<String> = redis::cmd("ZRANGE")
        .arg("oom:q:default")
        .arg(0)
        .arg(-1)
        .query::<Vec<String>>(&mut c)
        .unwrap()
        .into_iter()
        .collect();
    let lost: Vec<&String> = stored.iter().filter(|id| !queued.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} stored tasks are in no queue (sent {sent} before the error)",
        lost.len(),
        stored.len()
    );
    assert_eq!(stored.len(), sent, "every acknowledged send is stored");
}

/// `durable=1` refuses a server that does not fsync every write.
#[test]
fn redis_durable_refuses_a_server_without_appendfsync_always() {
    let server = PrivateRedis::start(&["--appendonly", "yes"]); // appendfsync everysec
    let err = connect(&format!("{}?durable=1", server.url()))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("appendfsync always"), "{err}");
    assert!(err.contains("everysec"), "{err}");
}

/// With `appendfsync always`, every acknowledged send survives the server's kill -9.
#[test]
fn redis_durable_sends_survive_a_killed_server() {
    let mut server = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = format!("{}?durable=1&prefix=d", server.url());
    let b = connect(&url).unwrap();
    for _ in 0..20 {
        b.broker().enqueue(&batch(100, "default")).unwrap();
    }
    server.restart();
    let b = connect(&url).unwrap();
    let stats = b.admin().stats().unwrap();
    assert_eq!(
        stats.iter().map(|s| s.ready).sum::<u64>(),
        2000,
        "{stats:?}"
    );
}

/// With `durable=1` and a replica, a send returns only once the replica has it: a replica
/// that does not answer makes the send fail (transient), and a retry after it is back
/// succeeds.
#[test]
fn redis_durable_sends_wait_for_the_replica() {
    let primary = PrivateRedis::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let port = primary.port.to_string();
    let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &port]);
    replica.wait_replica_link();
    let b = connect(&format!("{}?durable=1&prefix=r", primary.url())).unwrap();
    let first = batch(10, "default");
    b.broker().enqueue(&first).unwrap();
    let on_replica: usize = redis::cmd("HLEN")
        .arg("r:tasks")
        .query(&mut replica.conn())
        .unwrap();
    assert_eq!(on_replica, 10);

    replica.signal("STOP");
    let more = batch(10, "default");
    let err = b.broker().enqueue(&more);
    replica.signal("CONT");
    let err = err.expect_err("the stopped replica did not acknowledge");
    assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
    assert!(err.is_transient(), "{err}");
    b.broker()
        .enqueue(&more)
        .expect("a retry once the replica is back");
    let on_replica: usize = redis::cmd("HLEN")
        .arg("r:tasks")
        .query(&mut replica.conn())
        .unwrap();
    assert_eq!(on_replica, 20);
}

/// A Redis Cluster node, and Cluster or Sentinel URLs, are refused with a clear message.
#[test]
fn redis_refuses_cluster_and_sentinel() {
    let server = PrivateRedis::start(&["--cluster-enabled", "yes"]);
    let err = connect(&server.url()).expect_err("refused").to_string();
    assert!(err.contains("cluster_enabled:1"), "{err}");
    assert!(err.contains("does not support Redis Cluster"), "{err}");
    for url in [
        "redis+sentinel://127.0.0.1:26379/mymaster",
        "rediss+cluster://127.0.0.1:7000",
        "redis-cluster://127.0.0.1:7000",
    ] {
        let err = connect(url).expect_err("refused").to_string();
        assert!(
            err.contains("not Redis Cluster or Sentinel"),
            "{url}: {err}"
        );
    }
}
