#!/usr/bin/env python3
"""bench/compare/mp.py — lovage::mp against Python's multiprocessing, in one invocation (issue 19).

Runs `lovage bench mp --json` and the same five workloads with Python's `multiprocessing`
(2 processes; the seed's squares on 4), alternating lovage and Python run by run, and prints a
table of medians, ranges and ratios (and, last, one JSON line). Python's sizes are smaller
(its rates are per message, so they compare); every figure is a rate except squares, which is
the seed's whole program (array, 4 processes started, filled, joined) on both sides.

Usage: bench/compare/mp.py [--quick] [--runs N] [--lovage-bin PATH]   (bench/compare/run calls it)
"""
import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def drain(q, n, ready, done):
    ready.set()
    for _ in range(n):
        q.get()
    done.set()


def echo(conn):
    # A forked child also holds the parent's end, so it would never see EOF: None ends it.
    while True:
        v = conn.recv()
        if v is None:
            return
        conn.send(v)


def queue_rate(n, msg):
    q = mp.Queue()
    ready, done = mp.Event(), mp.Event()
    p = mp.Process(target=drain, args=(q, n, ready, done))
    p.start()
    ready.wait(30)
    t = time.perf_counter()
    for _ in range(n):
        q.put(msg)
    done.wait()
    d = time.perf_counter() - t
    p.join()
    return d


def pipe_rt(n):
    a, b = mp.Pipe(True)
    p = mp.Process(target=echo, args=(b,))
    p.start()
    b.close()
    a.send(0)
    a.recv()
    t = time.perf_counter()
    for i in range(n):
        a.send(i)
        a.recv()
    d = time.perf_counter() - t
    a.send(None)
    p.join()
    return d


def lock_pairs(n):
    lock = mp.Lock()
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return time.perf_counter() - t


# The seed's program (Array of squares filled by 4 processes), with 'q' so the squares fit.
def worker(data, result, index, n):
    start = index * (len(data) // n)
    end = (index + 1) * (len(data) // n) if index < n - 1 else len(data)
    for i in range(start, end):
        result[i] = data[i] * data[i]


def squares(n):
    t = time.perf_counter()
    data = list(range(n))
    shared_result = mp.Array('q', len(data))
    processes = []
    for i in range(4):
        p = mp.Process(target=worker, args=(data, shared_result, i, 4))
        processes.append(p)
        p.start()
    for p in processes:
        p.join()
    d = time.perf_counter() - t
    assert shared_result[n - 1] == (n - 1) ** 2
    return d


def median(v):
    return sorted(v)[len(v) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--lovage-bin", default=os.environ.get("LOVAGE_BIN", os.path.join(ROOT, "target/release/lovage")))
    args, _ = ap.parse_known_args()
    runs = args.runs or (1 if args.quick else 3)
    q = args.quick
    # Python's sizes: a few seconds each at Python's speed.
    py = {
        "queue_small_msgs_per_s": (lambda: queue_rate(2_000 if q else 200_000, 12345678), 2_000 if q else 200_000, 1),
        "queue_1mib_bytes_per_s": (lambda: queue_rate(5 if q else 300, b"x" * (1 << 20)), 5 if q else 300, 1 << 20),
        "pipe_round_trips_per_s": (lambda: pipe_rt(500 if q else 50_000), 500 if q else 50_000, 1),
        "lock_pairs_per_s": (lambda: lock_pairs(20_000 if q else 2_000_000), 20_000 if q else 2_000_000, 1),
        "squares_s": (lambda: squares(10_000 if q else 1_000_000), 0, 0),
    }
    lovage_argv = [args.lovage_bin, "bench", "mp", "--json", "--runs", "1"] + (["--quick"] if q else [])
    lv = {k: [] for k in py}
    pv = {k: [] for k in py}
    print(f"bench/compare/mp.py: {runs} run(s), lovage and Python alternating"
          f"{' (--quick: smoke sizes, not a measurement)' if q else ''}; Python {sys.version.split()[0]}, "
          f"start method {mp.get_start_method()}", flush=True)
    for run in range(runs):
        out = subprocess.run(lovage_argv, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            sys.exit(f"lovage bench mp failed: {out.stderr.strip()[-500:]}")
        figs = json.loads(out.stdout.strip().splitlines()[-1])
        for k in py:
            lv[k].append(figs[k])
        for k, (f, n, scale) in py.items():
            f()  # warm-up (imports, first process start)
            d = f()
            pv[k].append(d if scale == 0 else n * scale / d)
        print(f"  run {run + 1}/{runs} done", flush=True)

    labels = {
        "queue_small_msgs_per_s": ("Queue, 8-byte messages, 1→1", "msg/s"),
        "queue_1mib_bytes_per_s": ("Queue, 1 MiB messages", "GB/s"),
        "pipe_round_trips_per_s": ("Pipe round trips", "/s"),
        "lock_pairs_per_s": ("Lock acquire+release", "/s"),
        "squares_s": ("seed squares, 4 processes (s)", "s"),
    }

    def fmt(k, v):
        if k == "squares_s":
            return f"{v * 1e3:.1f} ms"
        if k == "queue_1mib_bytes_per_s":
            return f"{v / 1e9:.2f} GB/s"
        return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s"

    rows, result = [], {}
    for k, (label, _) in labels.items():
        l, p = median(lv[k]), median(pv[k])
        ratio = (p / l) if k == "squares_s" else (l / p)
        result[k] = {"lovage": l, "python": p, "ratio": ratio,
                     "lovage_range": [min(lv[k]), max(lv[k])], "python_range": [min(pv[k]), max(pv[k])]}
        rows.append((label, fmt(k, l), f"{fmt(k, min(lv[k]))} – {fmt(k, max(lv[k]))}",
                     fmt(k, p), f"{fmt(k, min(pv[k]))} – {fmt(k, max(pv[k]))}", f"{ratio:.1f}×"))
    head = ("workload", "lovage::mp", "range", "Python multiprocessing", "range", "lovage ÷ Python")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
