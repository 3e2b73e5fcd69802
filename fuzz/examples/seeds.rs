//! Writes the seed corpora of the fuzz targets that take encoded bytes (the text ones are
//! written by hand): `cargo run --manifest-path fuzz/Cargo.toml --example seeds`, from the
//! workspace root. Ids and times are fixed, except the ids a workflow builder draws.

use std::path::Path;
use std::time::Duration;

use lovage_broker::ops::{Event, EventKind};
use lovage_broker::{DeadLetter, Envelope, ResultRecord, Timestamp, WorkerInfo};
use lovage_core::canvas::{chain, chord, group, Canvas, Frame};
use lovage_core::{Codec, RetryPolicy, Signature, TaskError, TaskId, TaskState};

fn id(n: u128) -> TaskId {
    TaskId::from_uuid(uuid::Uuid::from_u128(
        0x0190_a8b2_0000_7000_8000_0000_0000_0000 | n,
    ))
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn envelope(codec: Codec) -> Envelope {
    let mut sig = Signature::new("tasks.add", &(2, 3), codec).unwrap();
    sig.options.queue = Some("math".into());
    sig.options.priority = Some(5);
    sig.options.time_limit = Some(Duration::from_secs(30));
    sig.options.retry = Some(RetryPolicy::default());
    let mut e = Envelope::from_signature(sig);
    e.id = id(1);
    e.created = Timestamp::from_millis(1_795_514_400_000);
    e.eta = Some(Timestamp::from_millis(1_795_514_460_000));
    e
}

fn flow() -> Vec<Frame> {
    let step = |n: u128| {
        let mut c = Canvas::task(Signature::new("tasks.echo", &[n], Codec::Json).unwrap());
        if let lovage_core::canvas::Node::Task(s) = &mut c.node {
            s.id = id(10 + n);
        }
        c
    };
    vec![
        Frame::OnError(vec![step(1)]),
        Frame::Chain(vec![step(2), step(3)]),
        Frame::ChainRef {
            blob: id(4),
            next: 1,
        },
        Frame::Join {
            id: id(5),
            index: 0,
            size: 2,
            body: Some(Box::new(step(6))),
        },
        Frame::Link(vec![step(7)]),
    ]
}

fn canvas() -> Canvas {
    let s = |name: &str| Signature::new(name, &[1], Codec::Json).unwrap();
    chain([
        Canvas::task(s("a")),
        group([s("b"), s("c")]),
        chord([s("d"), s("e")], s("f")),
    ])
    .on_error(s("g"))
}

fn record(state: TaskState) -> ResultRecord {
    ResultRecord {
        id: id(1),
        task: "tasks.add".into(),
        state,
        value: (state == TaskState::Success).then(|| b"5".to_vec()),
        codec: Codec::Json,
        error: (state != TaskState::Success)
            .then(|| TaskError::new("ValueError", "bad input").with_cause("because")),
        attempts: 2,
        worker: Some("w1@host.42".into()),
        started: Some(Timestamp::from_millis(1_795_514_400_000)),
        updated: Timestamp::from_millis(1_795_514_401_000),
        expires: Some(Timestamp::from_millis(1_795_600_800_000)),
    }
}

/// A task value as the Redis backend writes it in `P:tasks`.
fn task_value(e: &Envelope) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} {}",
        e.attempts + 1,
        4_500_000_000_000_123u64,
        e.queue.len(),
        e.queue
    )
    .into_bytes();
    rmp_serde::encode::write_named(&mut out, e).unwrap();
    out
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Request and reply frames of the process pool (see lovage-pool's process/frame.rs).
fn request(kind: u8, seq: u64, codec: u8, name: &str, args: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(&seq.to_le_bytes());
    body.push(codec);
    body.extend_from_slice(&(name.len() as u16).to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for a in args {
        body.extend_from_slice(&(a.len() as u32).to_le_bytes());
        body.extend_from_slice(a);
    }
    framed(body)
}

/// A reply with its outcomes and what the call spawned: (codec, task, key, args) each.
fn reply(seq: u64, outcomes: &[(u8, &[u8])], spawns: &[(u8, &str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = seq.to_le_bytes().to_vec();
    body.extend_from_slice(&(outcomes.len() as u32).to_le_bytes());
    for (status, bytes) in outcomes {
        body.push(*status);
        body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(bytes);
    }
    body.extend_from_slice(&(spawns.len() as u32).to_le_bytes());
    for (codec, task, key, args) in spawns {
        body.push(*codec);
        body.extend_from_slice(&(task.len() as u16).to_le_bytes());
        body.extend_from_slice(task.as_bytes());
        match key {
            Some(k) => {
                body.push(1);
                body.extend_from_slice(&(k.len() as u16).to_le_bytes());
                body.extend_from_slice(k.as_bytes());
            }
            None => body.push(0),
        }
        body.extend_from_slice(&(args.len() as u32).to_le_bytes());
        body.extend_from_slice(args);
    }
    framed(body)
}

fn framed(body: Vec<u8>) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend(body);
    out
}

/// Events as a busy worker's batch holds them: outcomes, a failure with its error, a
/// heartbeat.
fn events() -> Vec<Event> {
    let at = Timestamp::from_millis(1_795_514_400_000);
    let task = |kind, n, state| {
        let mut e = Event::new(kind);
        e.ts = at;
        e.task_id = Some(id(n));
        e.name = Some("tasks.add".into());
        e.queue = Some("default".into());
        e.worker = Some("w1@host.42".into());
        e.state = Some(state);
        e.runtime_ms = Some(3);
        e.retries = Some(0);
        e
    };
    let mut failed = task(EventKind::TaskFailed, 3, TaskState::Failure);
    failed.error = Some("ValueError: bad input".into());
    failed.retries = Some(2);
    let mut beat = Event::new(EventKind::WorkerHeartbeat);
    beat.ts = at;
    beat.worker = Some("w2@host.43".into());
    vec![
        task(EventKind::TaskSucceeded, 1, TaskState::Success),
        task(EventKind::TaskSucceeded, 2, TaskState::Success),
        failed,
        beat,
    ]
}

fn main() {
    // message
    for codec in [Codec::Json, Codec::Msgpack] {
        let sig = Signature::new("tasks.add", &(2, 3), codec).unwrap();
        let mut m = sig.into_message();
        m.id = id(1);
        let c = codec.as_str();
        write("message", &format!("message-{c}"), &m.encode().unwrap());
        let mut e = envelope(codec);
        write(
            "message",
            &format!("envelope-{c}"),
            &codec.encode(&e, "e").unwrap(),
        );
        e.flow = flow();
        write(
            "message",
            &format!("envelope-flow-{c}"),
            &codec.encode(&e, "e").unwrap(),
        );
    }
    let mut newer = Signature::new("t", &[1], Codec::Json)
        .unwrap()
        .into_message();
    newer.v = 2;
    write("message", "message-newer-version", &newer.encode().unwrap());
    let e = envelope(Codec::Json);
    write(
        "message",
        "options-json",
        &serde_json::to_vec(&e.options).unwrap(),
    );
    write(
        "message",
        "flow-msgpack",
        &rmp_serde::to_vec_named(&flow()).unwrap(),
    );
    write(
        "message",
        "canvas-msgpack",
        &rmp_serde::to_vec_named(&canvas()).unwrap(),
    );

    // result
    for (name, state) in [
        ("success", TaskState::Success),
        ("failure", TaskState::Failure),
        ("retry", TaskState::Retry),
    ] {
        write(
            "result",
            &format!("record-{name}"),
            &serde_json::to_vec(&record(state)).unwrap(),
        );
    }
    let dead = DeadLetter {
        envelope: envelope(Codec::Json),
        error: TaskError::new("Boom", "it broke"),
        at: Timestamp::from_millis(1_795_514_402_000),
    };
    write("result", "dead-letter", &serde_json::to_vec(&dead).unwrap());
    let worker = WorkerInfo {
        id: "w1@host.42".into(),
        host: "host".into(),
        pid: 42,
        queues: vec!["default".into(), "math".into()],
        pool: "threads x2".into(),
        started: Timestamp::from_millis(1_795_514_400_000),
        heartbeat: Timestamp::from_millis(1_795_514_410_000),
        tasks_done: 7,
        active: 1,
        registered: vec!["tasks.add".into()],
        limits: Default::default(),
    };
    write("result", "worker", &serde_json::to_vec(&worker).unwrap());
    write("result", "state", b"SUCCESS");
    write("result", "task-id", id(1).to_string().as_bytes());

    // redis_value
    let mut e = envelope(Codec::Msgpack);
    let value = task_value(&e);
    write("redis_value", "task", &value);
    e.flow = flow();
    e.queue = "a queue with spaces".into();
    write("redis_value", "task-flow", &task_value(&e));
    write(
        "redis_value",
        "header-only",
        b"3 4500000000000123 7 default",
    );

    // resp (the first byte is the size of the pieces the stream arrives in, less one)
    let mut reserve = vec![15u8];
    reserve.extend_from_slice(b"*4\r\n*1\r\n");
    bulk(&mut reserve, &value);
    bulk(&mut reserve, b"1795514460000");
    reserve.extend_from_slice(b"*1\r\n");
    bulk(&mut reserve, id(1).to_string().as_bytes());
    reserve.extend_from_slice(b"*0\r\n");
    write("resp", "reserve", &reserve);
    let mut results = vec![255u8];
    results.extend_from_slice(b"*2\r\n*2\r\n");
    bulk(
        &mut results,
        &serde_json::to_vec(&record(TaskState::Success)).unwrap(),
    );
    results.extend_from_slice(b"$-1\r\n*2\r\n$-1\r\n");
    bulk(
        &mut results,
        &serde_json::to_vec(&record(TaskState::Failure)).unwrap(),
    );
    write("resp", "hmget-results", &results);
    write(
        "resp",
        "stats",
        b"\x07*1\r\n*4\r\n$7\r\ndefault\r\n:3\r\n:0\r\n:1\r\n",
    );
    write(
        "resp",
        "pipeline",
        b"\x00+OK\r\n:42\r\n-ERR wrong\r\n$-1\r\n*-1\r\n",
    );
    write(
        "resp",
        "resp3",
        b"\x03%2\r\n+a\r\n,1.5\r\n+b\r\n#t\r\n~1\r\n_\r\n>2\r\n+message\r\n(12345678901234567890\r\n=9\r\ntxt:hello\r\n",
    );
    write(
        "resp",
        "join",
        b"\x01*1\r\n*2\r\n*2\r\n:0\r\n$1\r\n5\r\n*2\r\n:1\r\n$1\r\n6\r\n",
    );

    // events: the compact form the brokers write, and the earlier form with field names
    let batch = events();
    write(
        "events",
        "compact",
        &lovage_broker::fuzzing::encode_event_batch(&batch).unwrap(),
    );
    write(
        "events",
        "compact-one",
        &lovage_broker::fuzzing::encode_event_batch(&batch[2..3]).unwrap(),
    );
    write("events", "named", &rmp_serde::to_vec_named(&batch).unwrap());

    // pool_requests and pool_replies (first byte: piece size less one, as above)
    let mut reqs = vec![6u8];
    reqs.extend(request(2, 0, 0, "app.init", &[b"[]"]));
    reqs.extend(request(1, 1, 0, "tasks.add", &[b"[2,3]"]));
    reqs.extend(request(
        1,
        2,
        1,
        "tasks.add",
        &[b"\x92\x02\x03", b"\x92\x04\x05"],
    ));
    write("pool_requests", "requests", &reqs);
    let mut one = vec![255u8];
    one.extend(request(1, 9, 0, "t", &[]));
    write("pool_requests", "empty-call", &one);
    let err = serde_json::to_vec(&TaskError::new("UnknownTask", "no task t")).unwrap();
    let mut reps = vec![4u8];
    reps.extend(reply(1, &[(0, b"5")], &[]));
    reps.extend(reply(2, &[(0, b"\x05"), (1, &err)], &[]));
    write("pool_replies", "replies", &reps);
    let mut big = vec![255u8];
    big.extend(reply(3, &[(0, &[b'7'; 300])], &[]));
    write("pool_replies", "long", &big);
    // A scoped call's reply carrying what it spawned, keyed and not.
    let mut spawned = vec![9u8];
    spawned.extend(reply(
        4,
        &[(0, b"7")],
        &[
            (0, "crawl.page", Some("/a"), b"[1]"),
            (1, "crawl.page", None, b"\x91\x02"),
        ],
    ));
    write("pool_replies", "spawned", &spawned);
    let mut scoped = vec![6u8];
    scoped.extend(request(3, 5, 0, "crawl.page", &[b"[0]"]));
    write("pool_requests", "scoped-call", &scoped);
}
