//! Value, Array, SharedMemory, Lock and RLock across real processes.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use lovage_core::{Codec, Signature};
use lovage_macros::task;
use lovage_mp::{Array, ExitStatus, Lock, Process, RLock, SharedMemory, Value};

use crate::support::wait_until;

#[task(crate = lovage_core)]
fn add_under_lock(v: Value<u64>, n: u64) {
    for _ in 0..n {
        let mut g = v.get_lock().unwrap();
        *g += 1;
    }
}

#[task(crate = lovage_core)]
fn fill_squares(a: Array<u64>, start: usize, end: usize) {
    let mut chunk = a.claim(start..end).unwrap();
    for (i, x) in chunk.iter_mut().enumerate() {
        let k = (start + i) as u64;
        *x = k * k;
    }
}

#[task(crate = lovage_core)]
fn write_shm(m: SharedMemory, offset: usize, text: String) {
    m.write_at(offset, text.as_bytes()).unwrap();
}

/// Takes the lock, says so, and sleeps holding it until killed.
#[task(crate = lovage_core)]
fn hold_lock(lock: Lock, held: Value<u32>) {
    let _g = lock.acquire().unwrap();
    held.set(1);
    std::thread::sleep(Duration::from_secs(60));
}

#[task(crate = lovage_core)]
fn hold_rlock(lock: RLock, held: Value<u32>) {
    let _a = lock.acquire().unwrap();
    let _b = lock.acquire().unwrap();
    held.set(1);
    std::thread::sleep(Duration::from_secs(60));
}

#[task(crate = lovage_core)]
fn hold_value_lock(v: Value<u64>, held: Value<u32>) {
    let mut g = v.get_lock().unwrap();
    *g = 99;
    held.set(1);
    std::thread::sleep(Duration::from_secs(60));
}

#[task(crate = lovage_core)]
fn wants_u64(v: Value<u64>) -> u64 {
    v.get()
}

/// Creates every kind of object, hands them to a grandchild that sleeps, reports both pids.
#[task(crate = lovage_core)]
fn make_objects(pids: Array<u32>) {
    let v = Value::new(7u64).unwrap();
    let a = Array::<u8>::new(1 << 20).unwrap();
    let l = Lock::new().unwrap();
    let r = RLock::new().unwrap();
    let m = SharedMemory::anonymous(1 << 16).unwrap();
    let g = Process::spawn(keep_objects::s(v, a, l, r, m)).unwrap();
    pids.store(1, g.pid()).unwrap();
    pids.store(0, std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[task(crate = lovage_core)]
fn keep_objects(v: Value<u64>, a: Array<u8>, l: Lock, r: RLock, m: SharedMemory) {
    let _keep = (v, a, l, r, m);
    std::thread::sleep(Duration::from_secs(60));
}

pub fn value_increments_from_two_processes_sum_exactly_under_the_lock() {
    let v = Value::new(0u64).unwrap();
    let n = 1_000_000;
    let ps: Vec<_> = (0..2)
        .map(|_| Process::spawn(add_under_lock::s(v.clone(), n)).unwrap())
        .collect();
    for p in ps {
        assert_eq!(p.join().unwrap(), ExitStatus::Code(0));
    }
    assert_eq!(v.get(), 2 * n);
}

pub fn value_atomics_and_types() {
    let v = Value::new(5i32).unwrap();
    assert_eq!(v.fetch_add(3), 5);
    assert_eq!(v.fetch_sub(1), 8);
    assert_eq!(v.compare_exchange(7, 10), Ok(7));
    assert_eq!(v.compare_exchange(7, 11), Err(10));
    let f = Value::new(1.5f64).unwrap();
    f.set(2.25);
    assert_eq!(f.get(), 2.25);
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, lovage_mp::Pod, lovage_mp::Zeroable)]
    struct Point {
        x: f64,
        y: f64,
        z: f64,
    }
    let p = Value::new(Point {
        x: 1.0,
        y: 2.0,
        z: 3.0,
    })
    .unwrap();
    p.get_lock().unwrap().y = 5.0;
    assert_eq!(
        p.get(),
        Point {
            x: 1.0,
            y: 5.0,
            z: 3.0
        }
    );
    let a = Array::from_slice(&[1u16, 2, 3]).unwrap();
    assert_eq!(a.load(2).unwrap(), 3);
    a.store(0, 9).unwrap();
    assert_eq!(a.fetch_add(1, 5).unwrap(), 2);
    assert_eq!(a.to_vec(), vec![9, 7, 3]);
    let e = a.load(3).unwrap_err().to_string();
    assert!(e.contains("index 3 out of range"), "{e}");
    assert!(a.claim(2..4).is_err());
}

pub fn array_squares_filled_by_four_processes_in_claimed_ranges() {
    let n = 1_000_000;
    let a = Array::<u64>::new(n).unwrap();
    let per = n / 4;
    let ps: Vec<_> = (0..4)
        .map(|i| Process::spawn(fill_squares::s(a.clone(), i * per, (i + 1) * per)).unwrap())
        .collect();
    for p in ps {
        assert!(p.join().unwrap().success());
    }
    let g = a.get_lock().unwrap();
    for (i, x) in g.iter().enumerate() {
        assert_eq!(*x, (i * i) as u64, "element {i}");
    }
}

pub fn overlapping_claims_wait_for_each_other() {
    let a = Array::<u32>::new(100).unwrap();
    let first = a.claim(0..50).unwrap();
    // Disjoint: at once, while the first is held.
    let disjoint = a.claim(50..100).unwrap();
    drop(disjoint);
    let other = a.clone();
    let t = std::thread::spawn(move || {
        let mut c = other.claim(40..60).unwrap();
        c[0] = 7;
        Instant::now()
    });
    std::thread::sleep(Duration::from_millis(100));
    let released_at = Instant::now();
    drop(first);
    let got_at = t.join().unwrap();
    assert!(got_at >= released_at, "the overlapping claim did not wait");
    assert_eq!(a.load(40).unwrap(), 7);
}

pub fn shared_memory_anonymous_and_named() {
    let m = SharedMemory::anonymous(4096).unwrap();
    let p = Process::spawn(write_shm::s(m.clone(), 100, "hello".into())).unwrap();
    assert!(p.join().unwrap().success());
    let mut buf = [0u8; 5];
    m.read_at(100, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert!(m.write_at(4094, b"abc").is_err());

    let name = format!("lovage-mp-test-{}", std::process::id());
    let named = SharedMemory::create(&name, 64).unwrap();
    assert!(SharedMemory::create(&name, 64).is_err(), "create twice");
    let p = Process::spawn(write_shm::s(named.clone(), 0, "named".into())).unwrap();
    assert!(p.join().unwrap().success());
    let other = SharedMemory::open(&name).unwrap();
    let mut buf = [0u8; 5];
    other.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"named");
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    drop(named);
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    assert!(SharedMemory::open("a/b").is_err());
    assert!(SharedMemory::anonymous(0).is_err());
}

fn killed_holder_passes_on(spawn: impl FnOnce(Value<u32>) -> Process) -> Process {
    let held = Value::new(0u32).unwrap();
    let p = spawn(held.clone());
    wait_until("the child to hold the lock", 20, || held.get() == 1);
    p.kill().unwrap();
    // Not joined yet: the holder is a zombie, which holds nothing.
    p
}

pub fn a_lock_whose_holder_is_killed_goes_to_the_next_with_owner_died() {
    let lock = Lock::new().unwrap();
    let l2 = lock.clone();
    let p = killed_holder_passes_on(|h| Process::spawn(hold_lock::s(l2, h)).unwrap());
    assert!(lock.is_locked());
    let got = lock
        .acquire_timeout(Duration::from_secs(20))
        .expect("the lock stayed held by a dead process");
    let died = got.unwrap_err();
    assert_eq!(died.previous_owner(), p.pid());
    let guard = died.into_guard();
    assert!(lock.try_acquire().is_none(), "held by us now");
    drop(guard);
    assert!(lock.try_acquire().unwrap().is_ok(), "clean after release");
    assert_eq!(p.join().unwrap(), ExitStatus::Signal(libc::SIGKILL));

    let v = Value::new(0u64).unwrap();
    let v2 = v.clone();
    let p = killed_holder_passes_on(|h| Process::spawn(hold_value_lock::s(v2, h)).unwrap());
    let g = v.get_lock().unwrap_err().into_guard();
    assert_eq!(*g, 99);
    drop(g);
    p.join().unwrap();
}

pub fn rlock_is_recursive_and_robust() {
    let r = RLock::new().unwrap();
    {
        let _a = r.acquire().unwrap();
        let _b = r.acquire().unwrap();
        let other = r.clone();
        let t = std::thread::spawn(move || other.try_acquire().is_none());
        assert!(t.join().unwrap(), "another thread took a held RLock");
    }
    assert!(r.try_acquire().unwrap().is_ok());
    let r2 = r.clone();
    let p = killed_holder_passes_on(|h| Process::spawn(hold_rlock::s(r2, h)).unwrap());
    let died = r
        .acquire_timeout(Duration::from_secs(20))
        .unwrap()
        .unwrap_err();
    assert_eq!(died.previous_owner(), p.pid());
    drop(died.into_guard());
    // The dead holder's two levels are gone: one release frees it.
    let other = r.clone();
    assert!(
        std::thread::spawn(move || other.try_acquire().is_some_and(|g| g.is_ok()))
            .join()
            .unwrap()
    );
    p.join().unwrap();
}

pub fn bad_descriptors_are_clear_errors() {
    // The wrong element type, in process and in a child.
    let v = Value::new(1u32).unwrap();
    let json = serde_json::to_string(&v).unwrap();
    let err = serde_json::from_str::<Value<u64>>(&json)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Value<u32> cannot be opened as a Value<u64>"),
        "{err}"
    );
    let err = serde_json::from_str::<Lock>(&json).unwrap_err().to_string();
    assert!(err.contains("cannot be opened as a Lock"), "{err}");
    let sig = Signature::new(wants_u64::NAME, &(v.clone(),), Codec::Json).unwrap();
    let p = Process::spawn_signature(sig).unwrap();
    assert_eq!(
        p.join().unwrap(),
        ExitStatus::Code(lovage_mp::EXIT_TASK_FAILED)
    );

    // Not a descriptor at all.
    assert!(serde_json::from_str::<Value<u64>>("{\"x\": 1}").is_err());
    // A made-up fd / inode.
    let forged = json
        .replace("\"ino\":", "\"ino\":1")
        .replace("\"fd\":", "\"fd\":9");
    let err = serde_json::from_str::<Value<u32>>(&forged)
        .unwrap_err()
        .to_string();
    assert!(err.contains("names no live lovage object"), "{err}");
    // Raw shared memory relabelled as a Value: the header check refuses it.
    let m = SharedMemory::anonymous(4096).unwrap();
    let mj = serde_json::to_value(&m).unwrap();
    let mut d = mj["Anonymous"].clone();
    d["kind"] = "Value".into();
    d["ty"] = "u32".into();
    let err = serde_json::from_value::<Value<u32>>(d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a lovage object"), "{err}");
}

/// Inodes of lovage memfds a process has open.
fn lovage_memfds(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if link.to_string_lossy().starts_with("/memfd:lovage-mp-") {
            if let Ok(m) = std::fs::metadata(e.path()) {
                out.insert(m.ino());
            }
        }
    }
    out
}

/// Inodes of shared mappings anywhere on the machine.
fn mapped_inodes() -> HashSet<u64> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(maps) = std::fs::read_to_string(e.path().join("maps")) else {
            continue;
        };
        for line in maps.lines() {
            if let Some(ino) = line.split_whitespace().nth(4).and_then(|s| s.parse().ok()) {
                out.insert(ino);
            }
        }
    }
    out
}

fn dev_shm_lovage() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lovage"))
        .collect()
}

pub fn nothing_is_left_mapped_after_everything_is_killed() {
    let shm_before = dev_shm_lovage();
    let pids = Array::<u32>::new(2).unwrap();
    let p = Process::spawn(make_objects::s(pids.clone())).unwrap();
    wait_until("both processes to start", 20, || {
        pids.load(0).unwrap() != 0 && pids.load(1).unwrap() != 0
    });
    let (child, grandchild) = (pids.load(0).unwrap(), pids.load(1).unwrap());
    let ours = lovage_memfds(std::process::id());
    let mut theirs = HashSet::new();
    wait_until("the grandchild to open the objects", 20, || {
        theirs = &lovage_memfds(child) | &lovage_memfds(grandchild);
        theirs.difference(&ours).count() >= 5
    });
    let theirs: HashSet<u64> = theirs.difference(&ours).copied().collect();
    assert!(
        mapped_inodes().intersection(&theirs).count() >= 5,
        "objects mapped while alive"
    );
    p.kill().unwrap();
    p.join().unwrap();
    wait_until("every mapping to go", 20, || {
        mapped_inodes().intersection(&theirs).count() == 0 && lovage_memfds(grandchild).is_empty()
    });
    assert_eq!(
        dev_shm_lovage(),
        shm_before,
        "something was left in /dev/shm"
    );
}
