//! Shared dicts and lists ([`crate::shared`]): the byte-level contract, then the typed handles
//! over it, including many writers on one key losing no update.

use std::collections::BTreeMap;

use super::Fixture;
use crate::shared::Manager;
use crate::BrokerError;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

conformance_tests! {
    fn a_shared_dict_sets_reads_and_removes(f: Fixture) {
        let s = f.backend.shared();
        assert_eq!(s.dict_get("d", b"k").unwrap(), None);
        assert_eq!(s.dict_len("d").unwrap(), 0);
        assert!(s.dict_is_empty("d").unwrap());
        s.dict_set("d", &[(b("a"), b("1")), (b("b"), b("2"))]).unwrap();
        s.dict_set("d", &[(b("a"), b("3"))]).unwrap();
        // Another dict of another name is apart, and so is a list of the same name.
        s.dict_set("other", &[(b("a"), b("x"))]).unwrap();
        s.list_push("d", &[b("item")], false).unwrap();
        assert_eq!(s.dict_get("d", b"a").unwrap(), Some(b("3")));
        assert_eq!(s.dict_len("d").unwrap(), 2);
        let entries: BTreeMap<_, _> = s.dict_entries("d").unwrap().into_iter().collect();
        assert_eq!(entries, BTreeMap::from([(b("a"), b("3")), (b("b"), b("2"))]));
        assert_eq!(s.dict_remove("d", b"a").unwrap(), Some(b("3")));
        assert_eq!(s.dict_remove("d", b"a").unwrap(), None);
        assert_eq!(s.dict_len("d").unwrap(), 1);
        assert!(!s.dict_is_empty("d").unwrap());
        s.dict_clear("d").unwrap();
        assert_eq!(s.dict_len("d").unwrap(), 0);
        assert!(s.dict_is_empty("d").unwrap());
        assert_eq!(s.dict_get("other", b"a").unwrap(), Some(b("x")));
        assert_eq!(s.list_len("d").unwrap(), 1);
    }

    /// Many dicts emptied at once (a worker empties its batch's waiting lists so); the others,
    /// and a list of the same name, stay.
    fn many_dicts_are_cleared_at_once(f: Fixture) {
        let s = f.backend.shared();
        for d in ["w1", "w2", "kept"] {
            s.dict_set(d, &[(b("a"), b("1")), (b("b"), b("2"))]).unwrap();
        }
        s.list_push("w1", &[b("item")], false).unwrap();
        let names = ["w1".to_owned(), "w2".to_owned(), "never-written".to_owned()];
        s.dict_clear_many(&names).unwrap();
        s.dict_clear_many(&[]).unwrap();
        assert!(s.dict_is_empty("w1").unwrap());
        assert!(s.dict_is_empty("w2").unwrap());
        assert!(s.dict_is_empty("never-written").unwrap());
        assert_eq!(s.dict_len("kept").unwrap(), 2);
        assert_eq!(s.list_len("w1").unwrap(), 1);
    }

    fn compare_and_set_acts_only_on_the_expected_value(f: Fixture) {
        let s = f.backend.shared();
        // Absent expected absent: set.
        assert!(s.dict_compare_and_set("cas", b"k", None, Some(b"1")).unwrap());
        // Absent expected, but present: refused.
        assert!(!s.dict_compare_and_set("cas", b"k", None, Some(b"2")).unwrap());
        // A wrong expected value: refused, the value stays.
        assert!(!s.dict_compare_and_set("cas", b"k", Some(b"0"), Some(b"2")).unwrap());
        assert_eq!(s.dict_get("cas", b"k").unwrap(), Some(b("1")));
        assert!(s.dict_compare_and_set("cas", b"k", Some(b"1"), Some(b"2")).unwrap());
        assert_eq!(s.dict_get("cas", b"k").unwrap(), Some(b("2")));
        // A value that is a prefix of the stored one is not it.
        assert!(!s.dict_compare_and_set("cas", b"k", Some(b""), None).unwrap());
        // The expected value and no new one: removed.
        assert!(s.dict_compare_and_set("cas", b"k", Some(b"2"), None).unwrap());
        assert_eq!(s.dict_get("cas", b"k").unwrap(), None);
        assert!(!s.dict_compare_and_set("cas", b"k", Some(b"2"), None).unwrap());
    }

    fn insert_absent_sets_only_the_keys_not_there(f: Fixture) {
        let s = f.backend.shared();
        s.dict_set("ia", &[(b("a"), b("old"))]).unwrap();
        let set = s
            .dict_insert_absent("ia", &[(b("a"), b("1")), (b("b"), b("2")), (b("b"), b("3"))])
            .unwrap();
        // `a` was there; `b` is set by its first entry, not its second.
        assert_eq!(set, vec![false, true, false]);
        assert_eq!(s.dict_get("ia", b"a").unwrap(), Some(b("old")));
        assert_eq!(s.dict_get("ia", b"b").unwrap(), Some(b("2")));
        assert_eq!(s.dict_insert_absent("ia", &[]).unwrap(), Vec::<bool>::new());
    }

    fn a_shared_list_pushes_and_pops_at_both_ends(f: Fixture) {
        let s = f.backend.shared();
        assert_eq!(s.list_pop("l", false).unwrap(), None);
        assert_eq!(s.list_push("l", &[b("b"), b("c")], false).unwrap(), 2);
        // At the front, in reverse order (LPUSH).
        assert_eq!(s.list_push("l", &[b("a"), b("z")], true).unwrap(), 4);
        assert_eq!(s.list_range("l", 0, u64::MAX).unwrap(), [b("z"), b("a"), b("b"), b("c")]);
        assert_eq!(s.list_pop("l", true).unwrap(), Some(b("z")));
        assert_eq!(s.list_pop("l", false).unwrap(), Some(b("c")));
        assert_eq!(s.list_range("l", 0, 10).unwrap(), [b("a"), b("b")]);
        assert_eq!(s.list_push("l", &[b("d")], false).unwrap(), 3);
        assert_eq!(s.list_len("l").unwrap(), 3);
        s.list_clear("l").unwrap();
        assert_eq!(s.list_len("l").unwrap(), 0);
        assert_eq!(s.list_push("l", &[], false).unwrap(), 0);
    }

    fn a_shared_list_reads_and_replaces_by_index(f: Fixture) {
        let s = f.backend.shared();
        let items: Vec<_> = (0..10).map(|i| b(&i.to_string())).collect();
        s.list_push("ix", &items, false).unwrap();
        assert_eq!(s.list_get("ix", 0).unwrap(), Some(b("0")));
        assert_eq!(s.list_get("ix", 9).unwrap(), Some(b("9")));
        assert_eq!(s.list_get("ix", 10).unwrap(), None);
        assert_eq!(s.list_get("ix", u64::MAX).unwrap(), None);
        assert!(s.list_set("ix", 4, b"four").unwrap());
        assert!(!s.list_set("ix", 10, b"ten").unwrap());
        assert!(!s.list_set("never-written", 0, b"x").unwrap());
        assert_eq!(s.list_range("ix", 3, 3).unwrap(), [b("3"), b("four"), b("5")]);
        assert_eq!(s.list_range("ix", 8, 100).unwrap(), [b("8"), b("9")]);
        assert!(s.list_range("ix", 10, 5).unwrap().is_empty());
        assert!(s.list_range("ix", 2, 0).unwrap().is_empty());
        assert_eq!(s.list_len("ix").unwrap(), 10, "a refused set adds nothing");
    }

    fn typed_handles_round_trip_keys_and_values(f: Fixture) {
        let m = Manager::new(f.backend.clone());
        let d = m.dict::<(String, u32), Vec<f64>>("typed").unwrap();
        let k = ("a".to_owned(), 7);
        d.insert(&k, &vec![1.5, -2.0]).unwrap();
        assert_eq!(d.get(&k).unwrap(), Some(vec![1.5, -2.0]));
        assert!(d.contains_key(&k).unwrap());
        assert!(!d.contains_key(&("a".to_owned(), 8)).unwrap());
        d.extend([(&("b".to_owned(), 1), &vec![])]).unwrap();
        let mut keys = d.keys().unwrap();
        keys.sort();
        assert_eq!(keys, [k.clone(), ("b".to_owned(), 1)]);
        assert_eq!(d.remove(&k).unwrap(), Some(vec![1.5, -2.0]));
        assert_eq!(d.len().unwrap(), 1);

        let l = m.list::<Option<String>>("typed").unwrap();
        l.extend(&[Some("x".into()), None]).unwrap();
        l.set(1, &Some("y".into())).unwrap();
        let e = l.set(5, &None).unwrap_err();
        assert!(matches!(e, BrokerError::BadRequest { .. }), "{e}");
        assert!(e.to_string().contains("no index 5") && e.to_string().contains("2 items"), "{e}");
        assert_eq!(l.to_vec().unwrap(), [Some("x".to_owned()), Some("y".to_owned())]);

        // A value of another type under the same name is a clear decode error, not garbage.
        let wrong = m.dict::<(String, u32), String>("typed").unwrap();
        let e = wrong.get(&("b".to_owned(), 1)).unwrap_err().to_string();
        assert!(e.contains("shared dict value"), "{e}");
        assert!(m.dict::<u8, u8>("").is_err());
    }

    fn concurrent_updates_on_one_key_lose_nothing(f: Fixture) {
        let m = Manager::new(f.backend.clone());
        let d = m.dict::<String, u64>("counter").unwrap();
        let key = "hits".to_owned();
        let (threads, each) = (4, 100);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (d, key) = (d.clone(), key.clone());
                s.spawn(move || {
                    for _ in 0..each {
                        d.update_and_fetch(&key, |n| Some(n.unwrap_or(0) + 1)).unwrap();
                    }
                });
            }
        });
        assert_eq!(d.get(&key).unwrap(), Some(threads * each));
        // Returning None removes the key.
        assert_eq!(d.update_and_fetch(&key, |_| None).unwrap(), None);
        assert!(!d.contains_key(&key).unwrap());
    }
}
