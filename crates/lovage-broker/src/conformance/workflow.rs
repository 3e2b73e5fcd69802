//! What workflows rely on: steps sent once (`enqueue_once`, `ack_and_send_once`), the
//! continuation carried by a task, joins that complete once.

use lovage_core::TaskId;

use super::{env, reserve_all, Fixture};
use crate::{JoinEntry, ResultStore};

fn join_one(
    r: &dyn ResultStore,
    id: TaskId,
    index: u32,
    size: u32,
    value: &[u8],
) -> Option<Vec<Vec<u8>>> {
    let entry = JoinEntry {
        id,
        index,
        size,
        value,
    };
    r.join(&[entry]).unwrap().pop().unwrap()
}

conformance_tests! {
    fn enqueue_once_drops_repeats(f: Fixture) {
        let b = &*f.backend.broker;
        let (a, bb, c) = (env("once", 0), env("once", 0), env("once", 0));
        b.enqueue_once(&[a.clone(), bb.clone()]).unwrap();
        b.enqueue_once(&[a.clone(), c.clone()]).unwrap();
        let got = reserve_all(b, "once", 10);
        let mut ids: Vec<TaskId> = got.iter().map(|d| d.envelope.id).collect();
        ids.sort();
        let mut want = vec![a.id, bb.id, c.id];
        want.sort();
        assert_eq!(ids, want, "each id once");
        b.ack(&got.iter().map(|d| d.lease).collect::<Vec<_>>())
            .unwrap();
        b.enqueue_once(std::slice::from_ref(&a)).unwrap();
        assert!(
            reserve_all(b, "once", 10).is_empty(),
            "an id sent once is not sent again after it ran"
        );
    }

    fn a_workflow_continuation_travels_with_the_task(f: Fixture) {
        let b = &*f.backend.broker;
        let next = lovage_core::Canvas::task(
            lovage_core::Signature::new("next", &(1,), lovage_core::Codec::Json).unwrap(),
        );
        let mut e = env("flow", 0);
        e.flow = vec![lovage_core::canvas::Frame::Chain(vec![next])];
        b.enqueue(std::slice::from_ref(&e)).unwrap();
        let got = reserve_all(b, "flow", 1);
        assert_eq!(got[0].envelope.flow, e.flow);
    }

    fn joins_complete_once_every_member_is_in(f: Fixture) {
        let r = &*f.backend.results;
        let id = TaskId::new();
        assert_eq!(join_one(r, id, 1, 3, b"b"), None);
        assert_eq!(join_one(r, id, 0, 3, b"a"), None);
        assert_eq!(
            join_one(r, id, 1, 3, b"b2"),
            None,
            "a member recorded twice counts once"
        );
        let all = Some(vec![b"a".to_vec(), b"b2".to_vec(), b"c".to_vec()]);
        assert_eq!(join_one(r, id, 2, 3, b"c"), all);
        assert_eq!(
            join_one(r, id, 2, 3, b"c"),
            all,
            "a member run again still sees the join complete"
        );
        // Several members (of two joins) in one call: answers in order, per entry.
        let (x, y) = (TaskId::new(), TaskId::new());
        let entries = [
            JoinEntry {
                id: x,
                index: 0,
                size: 2,
                value: b"x0",
            },
            JoinEntry {
                id: y,
                index: 0,
                size: 1,
                value: b"y0",
            },
            JoinEntry {
                id: x,
                index: 1,
                size: 2,
                value: b"x1",
            },
        ];
        assert_eq!(
            r.join(&entries).unwrap(),
            vec![
                None,
                Some(vec![b"y0".to_vec()]),
                Some(vec![b"x0".to_vec(), b"x1".to_vec()])
            ]
        );
        // Members finishing concurrently: exactly one sees the join complete first.
        let id = TaskId::new();
        let n = 64u32;
        let firsts = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let firsts = &firsts;
                s.spawn(move || {
                    for i in (t..n).step_by(4) {
                        if join_one(r, id, i, n, &i.to_le_bytes()).is_some() {
                            firsts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(firsts.into_inner(), 1);
        let values = join_one(r, id, 0, n, &0u32.to_le_bytes()).unwrap();
        assert_eq!(values.len(), n as usize);
        assert_eq!(values[5], 5u32.to_le_bytes().to_vec());
    }
}
