"""The peers' side of bench/compare: one driver per system, started by compare.py.

    python peers.py celery '{"tasks": 3000, "round_trips": 1000, "fanout": 10000}'
    python peers.py dask   '{"tasks": 5000, "round_trips": 1000, "fanout": 10000}'
    python peers.py python '{"tasks_threads": 100000, "tasks_processes": 20000, "sizes": {...}}'

Each driver does one run of every workload of its system, prints progress to stderr and one
JSON object with its figures as the last line of stdout. compare.py starts each driver in a
process group of its own and kills that group when the driver is done (or on Ctrl-C), so
whatever a driver starts (the Celery worker, Dask's cluster) goes with it.
"""

import json
import math
import operator
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))


def progress(msg):
    print(f"      {msg}", file=sys.stderr, flush=True)


def die_with_parent():
    """preexec_fn: the child gets SIGTERM when its parent dies (Linux), even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def percentile(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def latency_figures(samples_s):
    ms = [x * 1e3 for x in samples_s]
    return {"p50_latency_ms": percentile(ms, 50), "p99_latency_ms": percentile(ms, 99)}


# --------------------------------------------------------------------------------------------
# No-op and fan-in functions for Dask and the local executors (module level: picklable).


def noop(*_args):
    return None


def ident(i):
    return i


# --------------------------------------------------------------------------------------------
# The seeds' CPU workloads in pure Python: the same algorithms as
# crates/lovage/src/workloads/*.rs, split the same way, smaller sizes.


def is_prime(n):
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def count_primes(lo, hi):
    return sum(1 for n in range(lo, hi) if is_prime(n))


def split_range(lo, hi, parts):
    return [
        (lo + (hi - lo) * i // parts, lo + (hi - lo) * (i + 1) // parts)
        for i in range(parts)
        if lo + (hi - lo) * i // parts < lo + (hi - lo) * (i + 1) // parts
    ]


def pi_hits(seed, samples):
    r = random.Random(seed).random
    hits = 0
    for _ in range(samples):
        x = r()
        y = r()
        if x * x + y * y <= 1.0:
            hits += 1
    return hits


def fib(n):
    return n if n <= 1 else fib(n - 1) + fib(n - 2)


def fib_calls(n):
    """How many calls fib(n) makes: 2·F(n+1) − 1."""
    a, b = 0, 1
    for _ in range(n + 1):
        a, b = b, a + b
    return 2 * a - 1


_FACTORS = {}


def factors(seed, n):
    """A (seed-determined) pair of n×n matrices, B stored by columns; built once per process."""
    key = (seed, n)
    if key not in _FACTORS:
        rng = random.Random(seed)
        a = [[rng.random() for _ in range(n)] for _ in range(n)]
        b = [[rng.random() for _ in range(n)] for _ in range(n)]
        _FACTORS[key] = (a, [list(col) for col in zip(*b)])
    return _FACTORS[key]


def matmul_rows(seed, n, lo, hi):
    """Rows lo..hi of A·B (the seeds' multiply_row, a block of rows at a time)."""
    a, bt = factors(seed, n)
    mul = operator.mul
    return [[sum(map(mul, a[r], col)) for col in bt] for r in range(lo, hi)]


def matmul_checksum(rows):
    h = 0
    for row in rows:
        for v in row:
            h = (h * 31 + hash(v)) & 0xFFFFFFFFFFFF
    return h


def _init_child(products, n):
    for seed in range(products):
        factors(seed, n)


def _sleep(s):
    time.sleep(s)
    return os.getpid()


class Workloads:
    """Each workload serial (in this process) and on a ProcessPoolExecutor(2)."""

    def __init__(self, sizes):
        self.s = sizes

    def jobs(self, name):
        s = self.s
        if name == "primes":
            lo = 10_000_000
            return count_primes, split_range(lo, lo + s["primes_count"], 64)
        if name == "pi":
            return pi_hits, [(seed, s["pi_per_part"]) for seed in range(32)]
        if name == "fib":
            return fib, [(s["fib_n"],) for _ in range(s["fib_calls"])]
        if name == "matmul":
            n, rows = s["matmul_n"], 25
            blocks = [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]
            return matmul_rows, [(seed, n, lo, hi) for seed in range(s["matmul_products"]) for lo, hi in blocks]
        raise ValueError(name)

    def checksum(self, name, results):
        if name == "matmul":
            return matmul_checksum(row for block in results for row in block)
        return sum(results)

    def serial(self, name):
        fn, args = self.jobs(name)
        t0 = time.perf_counter()
        out = [fn(*a) for a in args]
        return time.perf_counter() - t0, self.checksum(name, out)

    def parallel(self, name, pool):
        fn, args = self.jobs(name)
        t0 = time.perf_counter()
        out = list(pool.map(fn, *zip(*args)))  # chunksize 1, like lovage's map(..., 1)
        return time.perf_counter() - t0, self.checksum(name, out)

    def work_units(self, name):
        """Numbers tested, samples drawn, fib calls made, multiply-adds done."""
        s = self.s
        return {
            "primes": s["primes_count"],
            "pi": 32 * s["pi_per_part"],
            "fib": s["fib_calls"] * fib_calls(s["fib_n"]),
            "matmul": s["matmul_products"] * s["matmul_n"] ** 3,
        }[name]


def run_python(cfg):
    out = {}
    n = cfg["tasks_threads"]
    progress(f"ThreadPoolExecutor(2): {n:,} no-op submit + result")
    with ThreadPoolExecutor(2) as ex:
        [f.result() for f in [ex.submit(noop) for _ in range(1000)]]  # warm-up
        t0 = time.perf_counter()
        futs = [ex.submit(noop) for _ in range(n)]
        for f in futs:
            f.result()
        out["thread_submit_per_s"] = n / (time.perf_counter() - t0)

    sizes = cfg["sizes"]
    w = Workloads(sizes)
    with ProcessPoolExecutor(2, initializer=_init_child, initargs=(sizes["matmul_products"], sizes["matmul_n"])) as ex:
        # Start both children (and let them build their matrices) before any clock starts.
        list(ex.map(_sleep, [0.2, 0.2]))
        n = cfg["tasks_processes"]
        progress(f"ProcessPoolExecutor(2): {n:,} no-op submit + result")
        [f.result() for f in [ex.submit(noop) for _ in range(200)]]
        t0 = time.perf_counter()
        futs = [ex.submit(noop) for _ in range(n)]
        for f in futs:
            f.result()
        out["process_submit_per_s"] = n / (time.perf_counter() - t0)

        _init_child(sizes["matmul_products"], sizes["matmul_n"])  # the serial run's inputs, untimed
        for name in ("primes", "pi", "fib", "matmul"):
            progress(f"{name}: serial, then ProcessPoolExecutor(2)")
            ts, cs = w.serial(name)
            tp, cp = w.parallel(name, ex)
            if cs != cp:
                raise SystemExit(f"{name}: parallel checksum {cp} != serial {cs}")
            out[f"{name}_serial_s"] = ts
            out[f"{name}_processes_s"] = tp
            out[f"{name}_units"] = w.work_units(name)
    return out


# --------------------------------------------------------------------------------------------
# Celery: prefork worker, concurrency 2, Redis broker and result backend.


def run_celery(cfg):
    sys.path.insert(0, HERE)
    from celery import chord

    import celery_app
    from celery_app import ident, noop, total

    log = open(cfg["worker_log"], "w")
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "celery_app", "worker",
            "--pool", "prefork", "--concurrency", "2",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "WARNING", "--hostname", f"compare-{os.getpid()}@%h",
            "--queues", celery_app.QUEUE,
        ],
        cwd=HERE, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
    )
    try:
        progress("worker starting (prefork, concurrency 2)")
        t0 = time.perf_counter()
        noop.delay().get(timeout=60)
        progress(f"worker up in {time.perf_counter() - t0:.1f} s; warm-up")
        for r in [noop.delay() for _ in range(200)]:
            r.get(timeout=60)
        out = {}

        n = cfg["tasks"]
        progress(f"throughput: {n:,} x noop.delay(), then .get() each")
        t0 = time.perf_counter()
        results = [noop.delay() for _ in range(n)]
        t_sent = time.perf_counter()
        for r in results:
            r.get(timeout=600)
        t1 = time.perf_counter()
        out["enqueue_per_s"] = n / (t_sent - t0)
        out["end_to_end_per_s"] = n / (t1 - t0)
        for r in results:
            r.forget()  # drop the result keys now (they also expire, and are deleted at the end)
        del results

        rt = cfg["round_trips"]
        progress(f"latency: {rt:,} sequential noop.delay().get()")
        lat = []
        for _ in range(rt):
            t = time.perf_counter()
            noop.delay().get(timeout=60)
            lat.append(time.perf_counter() - t)
        out.update(latency_figures(lat))

        k = cfg["fanout"]
        progress(f"fan-out/fan-in: chord of {k:,} ident tasks, then total")
        t0 = time.perf_counter()
        res = chord(ident.s(i) for i in range(k))(total.s())
        # follow_parents=False: with the default, .get() re-reads every header result at each poll
        # interval to re-raise a parent's error, which makes a 10,000-task chord take minutes.
        got = res.get(timeout=1200, follow_parents=False)
        out["chord_s"] = time.perf_counter() - t0
        if got != k * (k - 1) // 2:
            raise SystemExit(f"chord sum {got} != {k * (k - 1) // 2}")
        return out
    finally:
        worker.terminate()  # warm shutdown: the pool's children exit with it
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


# --------------------------------------------------------------------------------------------
# Dask distributed: LocalCluster, 2 worker processes x 1 thread.


def run_dask(cfg):
    import logging

    from dask.distributed import Client, LocalCluster

    base = os.environ.get("DASK_TEMPORARY_DIRECTORY")
    if base:
        os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="lovage-compare-dask-", dir=base)
    progress("cluster starting (2 worker processes x 1 thread)")
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        dashboard_address=None, silence_logs=logging.CRITICAL, local_directory=scratch,
    )
    client = Client(cluster)
    try:
        client.wait_for_workers(2, timeout=60)
        progress(f"cluster up in {time.perf_counter() - t0:.1f} s; warm-up")
        client.gather(client.map(noop, range(-200, 0)))
        out = {}

        n = cfg["tasks"]
        progress(f"throughput: client.map(noop, range({n:,})) + gather")
        t0 = time.perf_counter()
        futs = client.map(noop, range(n))
        t_sent = time.perf_counter()
        client.gather(futs)
        t1 = time.perf_counter()
        out["enqueue_per_s"] = n / (t_sent - t0)
        out["end_to_end_per_s"] = n / (t1 - t0)
        del futs

        rt = cfg["round_trips"]
        progress(f"latency: {rt:,} sequential client.submit(noop).result()")
        lat = []
        for i in range(rt):
            t = time.perf_counter()
            client.submit(noop, i, pure=False).result()
            lat.append(time.perf_counter() - t)
        out.update(latency_figures(lat))

        k = cfg["fanout"]
        progress(f"fan-out/fan-in: client.map(ident, range({k:,})), then client.submit(sum, futures)")
        t0 = time.perf_counter()
        futs = client.map(ident, range(k))
        got = client.submit(sum, futs).result()
        out["chord_s"] = time.perf_counter() - t0
        if got != k * (k - 1) // 2:
            raise SystemExit(f"fan-in sum {got} != {k * (k - 1) // 2}")
        del futs
        return out
    finally:
        client.close()
        cluster.close()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def main():
    system, cfg = sys.argv[1], json.loads(sys.argv[2])
    run = {"celery": run_celery, "dask": run_dask, "python": run_python}[system]
    out = run(cfg)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
