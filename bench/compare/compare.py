"""bench/compare: lovage against Celery, Dask and Python's executors, in one invocation.

Started by bench/compare/run with the venv's Python (see bench/compare/README.md). In each of
--runs runs every system runs once, in turn, so a slow moment on a shared machine hits all of
them alike; every figure reported is the median over the runs. Each system runs in a process
group of its own (a "session": a lovage bench command, or a driver in peers.py that starts
the Celery worker / the Dask cluster), which is killed when the session ends, fails, times
out, or when this program gets Ctrl-C / SIGTERM / SIGHUP. Redis keys live under a prefix of
this process's own and are deleted after each session.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"

# Sizes. "full" is what the report shows; "quick" only proves the script still works.
FULL = {
    "celery_tasks": 3000,       # ~5 s at Celery's ~600/s
    "dask_tasks": 3000,
    "lovage_tasks": 100_000,    # ~3 s at lovage's 35-46 k/s
    "round_trips": 1000,
    "fanout": 10_000,
    "tpe_tasks": 100_000,
    "ppe_tasks": 20_000,
    # Python runs the lovage workloads' algorithms, scaled down (pure Python is ~50-100x slower)
    "python_sizes": {"primes_count": 160_000, "pi_per_part": 200_000, "fib_n": 28, "fib_calls": 16,
                     "matmul_products": 3, "matmul_n": 240},
    "timeout_s": 900,
}
QUICK = {
    "celery_tasks": 200,
    "dask_tasks": 200,
    "lovage_tasks": 2000,
    "round_trips": 50,
    "fanout": 200,
    "tpe_tasks": 5000,
    "ppe_tasks": 1000,
    "python_sizes": {"primes_count": 2000, "pi_per_part": 2000, "fib_n": 15, "fib_calls": 16,
                     "matmul_products": 1, "matmul_n": 30},
    "timeout_s": 120,
}
WORKLOADS = ("primes", "pi", "fib", "matmul")
UNITS = {"primes": "numbers tested/s", "pi": "samples/s", "fib": "fib calls/s", "matmul": "multiply-adds/s"}


class Interrupted(BaseException):
    pass


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def say(msg=""):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: every session runs in a process group of its own; groups are killed at the end.


def group_members(pgid):
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(d))
    return found


def die_with_parent():
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Sessions:
    def __init__(self):
        self.live = {}  # pgid -> Popen
        self.all = []  # every pgid ever started, for the final check

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent, **kw)
        self.live[p.pid] = p
        self.all.append(p.pid)
        return p

    def stop(self, p):
        """SIGTERM the whole group, SIGKILL what is left after 5 s; reap the leader."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if p.poll() is None or group_members(p.pid):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    p.poll()
                    if p.returncode is not None and not group_members(p.pid):
                        break
                    time.sleep(0.05)
        p.poll()
        self.live.pop(p.pid, None)

    def run(self, argv, timeout, env=None):
        """Runs `argv` as a session; returns its stdout (stderr goes to the terminal)."""
        p = self.start(argv, stdout=subprocess.PIPE, env=env, cwd=HERE, text=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            raise RuntimeError(f"timed out after {timeout} s")
        finally:
            self.stop(p)
        if p.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-5:])
            raise RuntimeError(f"exit status {p.returncode}" + (f": {tail}" if tail else ""))
        return out

    def stop_all(self):
        for p in list(self.live.values()):
            self.stop(p)

    def leftovers(self, pgids):
        return {g: group_members(g) for g in pgids if group_members(g)}


# ---------------------------------------------------------------------------------------------
# Redis: an own database number and key prefix; a private redis-server if none answers.


class RedisPlace:
    def __init__(self, url, sessions, scratch):
        import redis

        self.redis = redis
        self.url = url
        self.private = None
        self.version = "?"
        try:
            self.client().ping()
        except Exception as e:
            exe = shutil.which("redis-server")
            if not exe:
                raise SystemExit(f"Redis does not answer at {url} ({e}) and redis-server is not installed")
            port = free_port()
            say(f"Redis does not answer at {url}; starting a private redis-server on port {port} for this run")
            self.private = sessions.start(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", scratch], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.url = f"redis://127.0.0.1:{port}/12"
            for _ in range(100):
                try:
                    self.client().ping()
                    break
                except Exception:
                    time.sleep(0.05)
            else:
                raise SystemExit("private redis-server did not start")
        self.version = self.client().info("server").get("redis_version", "?")

    def client(self):
        return self.redis.Redis.from_url(self.url, socket_timeout=10)

    def delete(self, prefix):
        """Deletes the keys under `prefix` (SCAN MATCH, never FLUSHDB); returns how many."""
        c = self.client()
        n = 0
        batch = []
        for k in c.scan_iter(match=glob_escape(prefix) + "*", count=1000):
            batch.append(k)
            if len(batch) >= 1000:
                n += c.delete(*batch)
                batch = []
        if batch:
            n += c.delete(*batch)
        return n

    def count(self, prefix):
        return sum(1 for _ in self.client().scan_iter(match=glob_escape(prefix) + "*", count=1000))


def glob_escape(s):
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The sessions of one run.


def last_json(out):
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in the output")


def lovage_sizes(table_text):
    """What each lovage workload computed, from `bench pool`'s table ('what' column)."""
    sizes = {}
    m = re.search(r"count primes in \[(\d+), (\d+)\)", table_text)
    if m:
        sizes["primes"] = {"lo": int(m[1]), "hi": int(m[2]), "units": int(m[2]) - int(m[1])}
    m = re.search(r"Monte Carlo π, (\d+) samples", table_text)
    if m:
        sizes["pi"] = {"samples": int(m[1]), "units": int(m[1])}
    m = re.search(r"naive fib\((\d+)\) x (\d+)", table_text)
    if m:
        n, calls = int(m[1]), int(m[2])
        sizes["fib"] = {"n": n, "calls": calls, "units": calls * fib_calls(n)}
    m = re.search(r"(\d+) x \((\d+)x\d+ times \d+x\d+\), by blocks of (\d+) rows", table_text)
    if m:
        p, n, rows = int(m[1]), int(m[2]), int(m[3])
        sizes["matmul"] = {"products": p, "n": n, "rows": rows, "units": p * n**3}
    missing = [w for w in WORKLOADS if w not in sizes]
    if missing:
        raise RuntimeError(f"cannot read the sizes of {missing} from `lovage bench pool`'s table")
    return sizes


def fib_calls(n):
    a, b = 0, 1
    for _ in range(n + 1):
        a, b = b, a + b
    return 2 * a - 1


def lovage_subcommands(binary):
    out = subprocess.run([binary, "bench", "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", out, re.M))


def lovage_flags(binary, sub):
    out = subprocess.run([binary, "bench", sub, "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"(--[a-z][a-z-]*)", out))


class Bench:
    def __init__(self, args, cfg, sessions, redis_place, binary, tag, scratch):
        self.scratch = scratch
        self.args, self.cfg, self.s, self.r, self.bin, self.tag = args, cfg, sessions, redis_place, binary, tag
        # `lovage bench flow` (alias `chord`) times a chord against the same plain tasks.
        self.has_chord = "flow" in lovage_subcommands(binary)
        self.chord_flags = lovage_flags(binary, "flow") if self.has_chord else set()
        self.lovage_sizes = None
        # Temporary files of every session (lovage's bench brokers, Dask's scratch space) go under
        # this run's directory, which is removed at the end even when a session was killed.
        tmp = os.path.join(scratch, "tmp")
        os.makedirs(tmp, exist_ok=True)
        self.env = dict(os.environ, PYTHONPATH=HERE, PYTHONDONTWRITEBYTECODE="1", TMPDIR=tmp)

    def sessions(self):
        """(name, function) for every session of a run, in the order they run."""
        out = [
            ("lovage pools", self.lovage_pool),
            ("python executors", self.python),
            ("lovage queue, SQLite", lambda run: self.lovage_queue(run, None, 2)),
            ("lovage queue, Redis", lambda run: self.lovage_queue(run, "redis", 2)),
            ("lovage queue, Redis, 1 thread/worker", lambda run: self.lovage_queue(run, "redis", 1)),
        ]
        if self.has_chord:
            out.append(("lovage chord, SQLite", lambda run: self.lovage_chord(run, None)))
            if "--broker" in self.chord_flags:
                out.append(("lovage chord, Redis", lambda run: self.lovage_chord(run, "redis")))
        out += [("celery", self.celery), ("dask", self.dask)]
        return out

    def prefix(self, what, run):
        return f"{self.tag}-{what}-r{run}"

    def lovage_pool(self, run):
        argv = [self.bin, "bench", "pool", "--json", "--runs", "1"]
        if self.args.quick:
            argv.append("--quick")
        out = self.s.run(argv, self.cfg["timeout_s"], env=self.env)
        self.lovage_sizes = lovage_sizes(out)
        return last_json(out)

    def lovage_queue(self, run, broker, concurrency):
        argv = [self.bin, "bench", "queue", "--json", "--tasks", str(self.cfg["lovage_tasks"]),
                "--round-trips", str(self.cfg["round_trips"]), "--workers", "2",
                "--concurrency", str(concurrency)]
        prefix = None
        if broker == "redis":
            prefix = self.prefix(f"lovage-c{concurrency}", run)
            argv += ["--broker", f"{self.r.url}?prefix={prefix}"]
        try:
            return last_json(self.s.run(argv, self.cfg["timeout_s"], env=self.env))
        finally:
            if prefix:
                self.r.delete(prefix)

    def lovage_chord(self, run, broker):
        argv = [self.bin, "bench", "flow", "--json", "--runs", "1",
                "--members", str(self.cfg["fanout"]),
                "--chain-steps", "20" if self.args.quick else "1000"]
        prefix = None
        if broker == "redis":
            prefix = self.prefix("lovage-chord", run)
            argv += ["--broker", f"{self.r.url}?prefix={prefix}"]
        try:
            return last_json(self.s.run(argv, self.cfg["timeout_s"], env=self.env))
        finally:
            if prefix:
                self.r.delete(prefix)

    def driver(self, system, cfg, env=None):
        out = self.s.run([sys.executable, os.path.join(HERE, "peers.py"), system, json.dumps(cfg)],
                         self.cfg["timeout_s"], env=env or self.env)
        return last_json(out)

    def python(self, run):
        return self.driver("python", {"tasks_threads": self.cfg["tpe_tasks"],
                                      "tasks_processes": self.cfg["ppe_tasks"],
                                      "sizes": self.cfg["python_sizes"]})

    def celery(self, run):
        prefix = self.prefix("celery", run) + ":"
        env = dict(self.env, LOVAGE_COMPARE_REDIS=self.r.url, LOVAGE_COMPARE_PREFIX=prefix)
        log = os.path.join(self.args.out_dir, "logs", f"celery-worker-run{run}.log")
        try:
            return self.driver("celery", {"tasks": self.cfg["celery_tasks"], "round_trips": self.cfg["round_trips"],
                                          "fanout": self.cfg["fanout"], "worker_log": log}, env)
        finally:
            self.r.delete(prefix)

    def dask(self, run):
        # Dask's scratch space (default /tmp/dask-scratch-space) goes under this run's own directory.
        env = dict(self.env, DASK_TEMPORARY_DIRECTORY=os.path.join(self.scratch, "dask"))
        return self.driver("dask", {"tasks": self.cfg["dask_tasks"], "round_trips": self.cfg["round_trips"],
                                    "fanout": self.cfg["fanout"]}, env)


def one_line(name, r):
    """A short summary of one session's figures, for the progress output."""
    if "error" in r:
        return f"FAILED: {r['error']}"
    parts = []
    if "end_to_end_per_s" in r:
        parts.append(f"{fmt_rate(r['end_to_end_per_s'])} end to end")
    if "p50_latency_ms" in r:
        parts.append(f"p50 {fmt_ms(r['p50_latency_ms'])}, p99 {fmt_ms(r['p99_latency_ms'])}")
    if "chord_s" in r:
        parts.append(f"fan-in {fmt_s(r['chord_s'])}")
    if "thread_submit_per_s" in r:
        parts.append(f"threads {fmt_rate(r['thread_submit_per_s'])}")
    if "process_submit_per_s" in r:
        parts.append(f"processes {fmt_rate(r['process_submit_per_s'])}")
    if "primes_serial_s" in r:
        parts.append("workloads " + ", ".join(f"{w} {fmt_s(r[f'{w}_serial_s'])}→{fmt_s(r[f'{w}_processes_s'])}"
                                              for w in WORKLOADS))
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Formatting.


def fmt_rate(x, unit="/s"):
    """46.3 k/s, 2.31 M/s, 612/s; with unit " samples/s": 5.2 M samples/s."""
    if x is None:
        return "n/a"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g} {suf}{unit}"
    return f"{x:.3g}{unit}"


def fmt_ms(x):
    return "n/a" if x is None else f"{x:.3g} ms"


def fmt_s(x):
    if x is None:
        return "n/a"
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def fmt_ratio(fig, ref, higher_better, words=True, word=None):
    """'0.0134× (lovage 74.6× faster)'; figure ÷ lovage's figure."""
    if fig is None or ref is None or ref == 0 or fig == 0:
        return "–"
    ratio = fig / ref
    adv = (ref / fig) if higher_better else (fig / ref)
    word = word or ("faster" if higher_better else "lower")
    text = f"{ratio:.3g}×"
    if not words:
        return text
    if adv >= 1.05:
        text += f" (lovage {adv:.3g}× {word})"
    elif adv <= 1 / 1.05:
        text += f" (lovage {1 / adv:.3g}× {'slower' if word == 'faster' else 'higher'})"
    return text


# ---------------------------------------------------------------------------------------------
# Medians and tables.


class Results:
    def __init__(self, runs):
        self.runs = runs  # list of {session name: figures or {"error": ...}}

    def values(self, session, key):
        return [r[session][key] for r in self.runs if session in r and key in r[session]]

    def med(self, session, key):
        v = self.values(session, key)
        return statistics.median(v) if v else None

    def errors(self, session):
        return [r[session]["error"] for r in self.runs if session in r and "error" in r[session]]


def build_tables(res, bench, cfg, args):
    """[(key, title, intro, rows, note)] with rows = [(system, figure text, ratio text, value)]."""
    Q = {"SQLite": "lovage queue, SQLite", "Redis": "lovage queue, Redis", "Redis1": "lovage queue, Redis, 1 thread/worker"}
    tables = []
    n_l, n_c, n_d = cfg["lovage_tasks"], cfg["celery_tasks"], cfg["dask_tasks"]

    def row(system, session, key, fmt, ref, higher_better=True, note="", word=None):
        v = res.med(session, key)
        errs = res.errors(session)
        text = fmt(v) if v is not None else ("failed" if errs else "n/a")
        if system.endswith("(reference)") or "(reference " in system:
            ratio = "1× (reference)" if v is not None else "–"
        else:
            ratio = (fmt_ratio(v, ref, higher_better, words=not system.startswith("lovage"), word=word)
                     if v is not None else "–")
        return {"system": system, "figure": text, "ratio": ratio,
                "value": v, "lovage": system.startswith("lovage"), "note": note}

    # a. throughput
    ref = res.med(Q["Redis"], "end_to_end_per_s")
    rows = [
        row("lovage, Redis, 2 workers × 2 threads (reference)", Q["Redis"], "end_to_end_per_s", fmt_rate, ref),
        row("lovage, Redis, 2 workers × 1 thread", Q["Redis1"], "end_to_end_per_s", fmt_rate, ref),
        row("lovage, SQLite (embedded), 2 workers × 2 threads", Q["SQLite"], "end_to_end_per_s", fmt_rate, ref),
        row("Celery, Redis, prefork concurrency 2", "celery", "end_to_end_per_s", fmt_rate, ref),
        row("Dask distributed, LocalCluster 2 processes × 1 thread", "dask", "end_to_end_per_s", fmt_rate, ref),
    ]
    tables.append(("throughput", "No-op tasks end to end, results stored and read back", (
        f"Tasks per second from the first submit to the last result read back (higher is better). "
        f"lovage: `lovage bench queue`, {n_l:,} no-op tasks (after 200 warm-up tasks); "
        f"Celery: {n_c:,} × `noop.delay()`, then `.get()` on each, Redis broker and result backend; "
        f"Dask: `client.map(noop, range({n_d:,}))` then `client.gather`. "
        f"Sizes differ so that each run takes a few seconds on every system."), rows, "tasks/s"))

    # b. latency
    rows = []
    for sysname, session in (("lovage, Redis, 2 workers × 2 threads (reference)", Q["Redis"]),
                             ("lovage, Redis, 2 workers × 1 thread", Q["Redis1"]),
                             ("lovage, SQLite, 2 workers × 2 threads", Q["SQLite"]),
                             ("Celery, Redis", "celery"), ("Dask distributed", "dask")):
        for key, label in (("p50_latency_ms", "p50"), ("p99_latency_ms", "p99")):
            r = row(f"{sysname}: {label}", session, key, fmt_ms, res.med(Q["Redis"], key), higher_better=False)
            r["series"], r["group"] = label, sysname
            rows.append(r)
    tables.append(("latency", "Submit → result latency, one task at a time", (
        f"{cfg['round_trips']:,} sequential round trips each (lower is better): lovage `send` then a blocking wait "
        f"on the result (from `lovage bench queue`); Celery `noop.delay().get()`; Dask "
        f"`client.submit(noop, i, pure=False).result()`. Each p50/p99 is the median of the runs' p50s/p99s; "
        f"ratios are to the lovage reference's p50 and p99 respectively."), rows, "ms"))

    # c. local executors
    lt, lp = res.med("lovage pools", "thread_submit_per_s"), res.med("lovage pools", "process_submit_per_s")
    rows = [
        row("lovage ThreadPool(2) (reference for threads)", "lovage pools", "thread_submit_per_s", fmt_rate, lt),
        row("Python ThreadPoolExecutor(2)", "python executors", "thread_submit_per_s", fmt_rate, lt),
        row("lovage ProcessPool(2) (reference for processes)", "lovage pools", "process_submit_per_s", fmt_rate, lp),
        row("Python ProcessPoolExecutor(2)", "python executors", "process_submit_per_s", fmt_rate, lp),
    ]
    pool_tasks = "20,000" if args.quick else "1,000,000"
    tables.append(("executors", "Local executors: no-op `submit` + `result`", (
        f"Submit every task first, keeping the futures, then take every result (higher is better). "
        f"lovage: `lovage bench pool` ({pool_tasks} tasks for the thread pool, a tenth for the process pool); "
        f"Python {sys.version.split()[0]}: {cfg['tpe_tasks']:,} tasks on ThreadPoolExecutor(2), "
        f"{cfg['ppe_tasks']:,} on ProcessPoolExecutor(2) (fork; children started before the clock)."),
        rows, "tasks/s"))

    # d. CPU workloads
    ls = bench.lovage_sizes or {}
    ps = cfg["python_sizes"]
    py_size = {
        "primes": f"[10,000,000, {10_000_000 + ps['primes_count']:,})",
        "pi": f"{32 * ps['pi_per_part']:,} samples",
        "fib": f"fib({ps['fib_n']}) × {ps['fib_calls']}",
        "matmul": f"{ps['matmul_products']} × ({ps['matmul_n']}×{ps['matmul_n']} · {ps['matmul_n']}×{ps['matmul_n']}), blocks of 25 rows",
    }
    lv_size = {}
    if ls:
        lv_size = {
            "primes": f"[{ls['primes']['lo']:,}, {ls['primes']['hi']:,})",
            "pi": f"{ls['pi']['samples']:,} samples",
            "fib": f"fib({ls['fib']['n']}) × {ls['fib']['calls']}",
            "matmul": (f"{ls['matmul']['products']} × ({ls['matmul']['n']}×{ls['matmul']['n']} · "
                       f"{ls['matmul']['n']}×{ls['matmul']['n']}), blocks of {ls['matmul']['rows']} rows"),
        }
    cpu = []
    for w in WORKLOADS:
        lu = ls.get(w, {}).get("units")
        pu = res.med("python executors", f"{w}_units")

        def rate(session, key, units):
            t = res.med(session, key)
            return units / t if (t and units) else None

        def shown(session, v):
            return fmt_rate(v, "/s") if v else ("failed" if res.errors(session) else "n/a")

        l_ser, l_thr, l_proc = (rate("lovage pools", f"{w}_{k}_s", lu) for k in ("serial", "threads", "processes"))
        p_ser, p_proc = rate("python executors", f"{w}_serial_s", pu), rate("python executors", f"{w}_processes_s", pu)
        spd = lambda a, b: f"{a / b:.2f}×" if a and b else "–"
        cpu.append({"workload": w, "unit": UNITS[w], "rows": [
            {"system": "lovage, serial", "size": lv_size.get(w, "?"), "value": l_ser, "figure": shown("lovage pools", l_ser), "speedup": "–",
             "ratio": "1× (reference for serial)" if l_ser else "–", "lovage": True},
            {"system": "lovage ThreadPool(2)", "size": lv_size.get(w, "?"), "value": l_thr, "figure": shown("lovage pools", l_thr), "speedup": spd(l_thr, l_ser),
             "ratio": (fmt_ratio(l_thr, l_proc, True, words=False) + " of ProcessPool(2)") if l_thr and l_proc else "–",
             "lovage": True},
            {"system": "lovage ProcessPool(2)", "size": lv_size.get(w, "?"), "value": l_proc, "figure": shown("lovage pools", l_proc), "speedup": spd(l_proc, l_ser),
             "ratio": "1× (reference for 2 workers)" if l_proc else "–", "lovage": True},
            {"system": "Python, serial", "size": py_size[w], "value": p_ser, "figure": shown("python executors", p_ser), "speedup": "–",
             "ratio": fmt_ratio(p_ser, l_ser, True), "lovage": False},
            {"system": "Python ProcessPoolExecutor(2)", "size": py_size[w], "value": p_proc, "figure": shown("python executors", p_proc), "speedup": spd(p_proc, p_ser),
             "ratio": fmt_ratio(p_proc, l_proc, True), "lovage": False},
        ]})
    tables.append(("cpu", "The seeds' CPU workloads, serial vs 2 workers", (
        "The algorithms of crates/lovage/src/workloads/*.rs in pure Python (bench/compare/peers.py: trial "
        "division, Monte Carlo with one seeded generator per stream, naive recursive fib, the product by "
        "dot products of rows and columns), split the same way (primes in 64 ranges, π in 32 streams, fib "
        "one call per task, matmul by blocks of rows; each child builds its own input matrices before the "
        "clock starts, as lovage's do). Pure Python at lovage's sizes would take minutes, so Python runs "
        "smaller sizes (column *size*) and both are compared in a rate: numbers tested, samples drawn, fib "
        "calls made, multiply-adds done per second (higher is better). Python's 2-worker figure is "
        "ProcessPoolExecutor(2): threads do not scale CPU-bound work in CPython. Ratios: Python serial to "
        "lovage serial, 2 workers to lovage's ProcessPool(2); lovage's ThreadPool(2) row is also shown "
        "against its ProcessPool(2)."), cpu, None))

    # e. fan-out / fan-in
    k = cfg["fanout"]
    ref_session = "lovage chord, Redis" if res.med("lovage chord, Redis", "chord_s") else "lovage chord, SQLite"
    ref = res.med(ref_session, "chord_s")
    rows = []
    if bench.has_chord:
        for label, session in (("lovage chord, Redis", "lovage chord, Redis"), ("lovage chord, SQLite", "lovage chord, SQLite")):
            if any(session in r for r in res.runs):
                rows.append(row(label + (" (reference)" if session == ref_session else ""), session, "chord_s",
                                fmt_s, ref, higher_better=False, word="faster"))
                if res.med(session, "plain_s") is not None:
                    rows.append(row(f"{label}: the same tasks without the chord", session, "plain_s", fmt_s, ref,
                                    higher_better=False, word="faster"))
    else:
        rows.append({"system": "lovage", "figure": "n/a (this lovage has no `bench flow`)", "ratio": "–", "value": None,
                     "lovage": True, "note": ""})
    rows += [
        row("Celery `chord(group)(total)`, Redis", "celery", "chord_s", fmt_s, ref, higher_better=False, word="faster"),
        row("Dask `client.submit(sum, client.map(...))`", "dask", "chord_s", fmt_s, ref, higher_better=False,
            word="faster"),
    ]
    tables.append(("fanout", f"Fan-out / fan-in: {k:,} tasks, then one that sums their results", (
        f"Seconds from the first submit until the sum of the {k:,} results is back (lower is better); "
        f"each task returns its index, the last one adds them up and the total is checked. Celery waits with "
        f"`.get(follow_parents=False)`: with the default (`True`) the client re-reads all {k:,} header results "
        f"at every poll interval to look for a failed parent, and in a trial run on this machine the chord of "
        f"10,000 took 408 s that way (compare the figure below)."), rows, "s"))
    return tables


# ---------------------------------------------------------------------------------------------
# Charts (matplotlib, Agg, SVG).


def charts(tables, img_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "lovage-compare", "svg.fonttype": "none", "font.size": 9})
    LOV, PEER = "#2e7d4f", "#8a8f98"
    paths = {}

    def barh(ax, labels, values, colors, xlabel, texts):
        ys = list(range(len(labels)))[::-1]
        vals = [v if v else 0 for v in values]
        ax.barh(ys, vals, color=colors)
        ax.set_yticks(ys, labels)
        ax.set_xlabel(xlabel)
        pos = [v for v in vals if v > 0]
        if pos and max(pos) / min(pos) > 30:
            ax.set_xscale("log")
        ax.spines[["top", "right"]].set_visible(False)
        if pos:
            lo, hi = ax.get_xlim()
            ax.set_xlim(lo, hi * (4 if ax.get_xscale() == "log" else 1.3))
        left = ax.get_xlim()[0]
        for y, v, t in zip(ys, vals, texts):
            ax.text(v if v > 0 else left, y, " " + t, va="center", fontsize=8)

    for key, title, _intro, rows, unit in tables:
        path = os.path.join(img_dir, f"compare-{key}.svg")
        if key == "cpu":
            fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.9 * len(rows)))
            for ax, wl in zip(axes, rows):
                rs = wl["rows"]
                barh(ax, [r["system"] for r in rs], [r["value"] for r in rs],
                     [LOV if r["lovage"] else PEER for r in rs], wl["unit"],
                     [fmt_rate(r["value"], "") if r["value"] else "n/a" for r in rs])
                ax.set_title(wl["workload"], loc="left", fontsize=9)
        elif key == "latency":
            groups = list(dict.fromkeys(r["group"] for r in rows))
            fig, ax = plt.subplots(figsize=(8, 0.55 * len(groups) + 1.2))
            ys = list(range(len(groups)))[::-1]
            for off, series, color in ((0.2, "p50", None), (-0.2, "p99", None)):
                vals = [next((r["value"] for r in rows if r["group"] == g and r["series"] == series), None) or 0
                        for g in groups]
                cols = [(LOV if g.startswith("lovage") else PEER) for g in groups]
                ax.barh([y + off for y in ys], vals, height=0.38, color=cols, alpha=1.0 if series == "p50" else 0.55)
                for y, v in zip(ys, vals):
                    ax.text(v, y + off, f" {series} {fmt_ms(v) if v else 'n/a'}", va="center", fontsize=8)
            ax.set_yticks(ys, [g.replace(" (reference)", "") for g in groups])
            if any(r["value"] for r in rows):
                ax.set_xscale("log")
                lo, hi = ax.get_xlim()
                ax.set_xlim(lo, hi * 4)
            ax.set_xlabel("ms (log scale; lower is better)")
            ax.spines[["top", "right"]].set_visible(False)
        else:
            fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.0))
            fmt = {"tasks/s": lambda v: fmt_rate(v), "s": fmt_s}[unit]
            barh(ax, [r["system"].replace(" (reference)", "").replace("`", "") for r in rows], [r["value"] for r in rows],
                 [LOV if r["lovage"] else PEER for r in rows],
                 unit + ("; lower is better" if unit == "s" else "; higher is better"),
                 [fmt(r["value"]) if r["value"] else r["figure"] for r in rows])
        fig.suptitle(title.replace("`", ""), fontsize=10, x=0.01, ha="left")
        fig.tight_layout()
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
        paths[key] = path
    return paths


# ---------------------------------------------------------------------------------------------
# The report.


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model, "kernel": platform.release(), "memory": mem}


def versions(binary, redis_version):
    v = {"python": platform.python_version(), "redis-server": redis_version}
    for pkg in ("celery", "kombu", "redis", "dask", "distributed", "matplotlib"):
        try:
            v["redis-py" if pkg == "redis" else pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v["redis-py" if pkg == "redis" else pkg] = "?"
    v["lovage"] = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip() or "?"
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        v["git"] = rev + (" with uncommitted changes" if dirty else "")
    except OSError:
        v["git"] = "?"
    return v


def markdown(tables, meta, img_rel, graphs=None):
    L = [BEGIN, "", "## Against Celery, Dask and Python's executors — `bench/compare/run`", "",
         "_This section is generated by `bench/compare/run` (do not edit it by hand: the next run rewrites "
         "everything between the `compare:begin`/`compare:end` markers)._", "",
         "```sh", meta["command"], "```", "",
         f"- Date: {meta['date']}; {meta['runs']} run{'s' if meta['runs'] != 1 else ''}, every figure is the median "
         f"over the runs. In each run every system runs once, in turn ({'; '.join(meta['order'])}), so a slow "
         f"moment on the machine hits them alike. Whole invocation: {meta['elapsed']}.",
         f"- Machine: {meta['machine']['nproc']} CPUs ({meta['machine']['cpu']}), {meta['machine']['memory']} RAM, "
         f"Linux {meta['machine']['kernel']}; load average {meta['load_start']} at the start, {meta['load_end']} at "
         f"the end. {meta['machine_note']}",
         "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k not in ("git", "lovage"))
         + f"; {meta['versions']['lovage']} (git {meta['versions']['git']}, release build).",
         f"- Redis: {meta['redis']}.",
         "- *ratio to lovage* is the system's figure divided by lovage's figure in the row marked reference, "
         "then, in words, how many times faster (or lower, for times) lovage is.", ""]
    for key, title, intro, rows, unit in tables:
        L += [f"### {title}", "", intro, "", f"![{title}]({img_rel}/compare-{key}.svg)", ""]
        if key == "cpu":
            L += ["| workload (unit) | system | size run | figure | speed-up over serial | ratio to lovage |",
                  "|---|---|---|---:|---:|---|"]
            for wl in rows:
                for r in wl["rows"]:
                    fig = r["figure"]
                    L.append(f"| {wl['workload']} ({wl['unit']}) | {r['system']} | {r['size']} | {fig} | "
                             f"{r['speedup']} | {r['ratio']} |")
        else:
            L += ["| system | figure | ratio to lovage |", "|---|---:|---|"]
            for r in rows:
                L.append(f"| {r['system']} | {r['figure']} | {r['ratio']} |")
        L.append("")
    if graphs is not None:
        L += graphs_markdown(graphs, img_rel)
    if meta["failures"]:
        L += ["### What failed in this invocation", ""] + [f"- {f}" for f in meta["failures"]] + [""]
    L += ["Raw figures of every run: `target/compare/results.json` after the command (not committed).", "", END]
    return "\n".join(L) + "\n"


def load_graphs(path):
    """bench/compare/dask_graphs.py's results (issue 16), or None and a failure line."""
    if not path:
        return None, None
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"graphs beside Dask (bench/compare/dask_graphs.py): no results ({e})"


def graph_cells(r):
    """(build, run with range, tasks/s) texts of one dask_graphs.py row."""
    def num(x):
        return f"{x:,.3f}" if x < 10 else f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"

    b = r.get("build_us_per_node")
    u = r.get("us_per_task")
    build = num(b[0]) if b and r["shape"] in ("tree", "chains", "fanout") else "–"
    if r.get("note"):
        run = f"n/a ({r['note']})"
    elif u:
        run = f"{num(u[0])} ({num(u[1])}–{num(u[2])})" if u[1] != u[2] else num(u[0])
    else:
        run = "n/a"
    tps = fmt_rate(r["tasks_per_s"]) if r.get("tasks_per_s") else "–"
    return build, run, tps


def graphs_markdown(g, img_rel):
    sz = g["sizes"]
    L = ["### Graphs, the crawler and `client.map` beside Dask (issue 16)", "",
         f"`bench/compare/dask_graphs.py` ({g['runs']} round{'s' if g['runs'] != 1 else ''}, lovage then Dask in "
         f"each; {g['elapsed_s']:.0f} s): no-op tasks. *tree*: n/2 leaves reduced pairwise; *chains*: chains of "
         f"10; *fanout*: one root read by n−1 tasks (crates/lovage/src/cli/bench_graph.rs). lovage: `lovage bench "
         f"graph --json --runs 1 --shape S --scheduler X` ({sz['lovage_local']:,} nodes on inline, threads and "
         f"processes, 2 workers; {sz['lovage_broker']:,} on a broker, 2 worker processes × 2 threads, the graph "
         f"stored in the broker and resolved by the workers). Dask: the same graphs as `dask.delayed`, "
         f"{sz['dask_local']:,} nodes on the synchronous and threaded (2) schedulers, {sz['dask_cluster']:,} on a "
         f"`LocalCluster` of 2 processes × 1 thread (~2 ms a task: a smaller graph; per-task figures are "
         f"compared). *crawl*: the synthetic site of crates/lovage/src/workloads/crawl.rs (8 links a page, "
         f"duplicates and cycles, no network), every run checked to fetch each reachable page once: lovage "
         f"`--shape crawl` on threads ({sz['crawl_threads']:,} pages) and a broker ({sz['crawl_broker']:,}); Dask "
         f"({sz['crawl_dask']:,} pages): each page a task that takes `get_client()`, `secede()`s while a "
         f"deduplicating actor says which links are new, `rejoin()`s and submits them. *map*: `client.map` of "
         f"no-ops then `gather` (lovage `--shape map`, {sz['map_lovage']:,} tasks; Dask "
         f"`client.map(step, range({sz['map_dask']:,}), pure=False)`). Run µs/task: median (min–max); lower is "
         f"better. *Dask ÷ lovage*: Dask synchronous against lovage inline, threads against threads, the "
         f"LocalCluster against lovage's SQLite broker.", "",
         f"![Graphs beside Dask]({img_rel}/compare-graphs.svg)", "",
         "| shape | system | tasks run | build µs/node | run µs/task | tasks/s | Dask ÷ lovage |",
         "|---|---|---:|---:|---:|---:|---:|"]
    for r in g["rows"]:
        build, run, tps = graph_cells(r)
        L.append(f"| {r['shape']} | {r['system']} | {r['tasks']:,} | {build} | {run} | {tps} | "
                 f"{r['dask_over_lovage'] or '–'} |")
    L.append("")
    return L


def graphs_chart(g, img_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in g["rows"]))
    fig, axes = plt.subplots(len(shapes), 1, figsize=(8, 1.0 + 0.32 * len(g["rows"]) + 0.3 * len(shapes)))
    for ax, shape in zip(axes, shapes):
        rs = [r for r in g["rows"] if r["shape"] == shape]
        ys = list(range(len(rs)))[::-1]
        vals = [r["us_per_task"][0] if r.get("us_per_task") else 0 for r in rs]
        ax.barh(ys, vals, color=["#2e7d4f" if r["system"].startswith("lovage") else "#8a8f98" for r in rs])
        ax.set_yticks(ys, [r["system"] for r in rs], fontsize=7)
        if any(vals):
            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            ax.set_xlim(lo, hi * 4)
        for y, v in zip(ys, vals):
            ax.text(v if v else ax.get_xlim()[0], y, (f" {v:,.3g} µs" if v < 1000 else f" {v:,.0f} µs") if v else " n/a", va="center", fontsize=7)
        ax.set_title(shape, loc="left", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xlabel("µs per task (log scale; lower is better)")
    fig.suptitle("Graphs, the crawler and client.map beside Dask", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "compare-graphs.svg"), format="svg", metadata={"Date": None})
    plt.close(fig)


def write_section(path, section):
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + section.rstrip("\n") + text[b:]
        if not text.endswith("\n"):
            text += "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def terminal_summary(tables):
    say("\nSummary (medians; ratio = figure ÷ lovage's):")
    w = 62
    for key, title, _intro, rows, unit in tables:
        say(f"\n  {title}")
        if key == "cpu":
            for wl in rows:
                say(f"    {wl['workload']} ({wl['unit']})")
                for r in wl["rows"]:
                    fig = r["figure"]
                    say(f"      {r['system'][:w - 2]:<{w - 2}} {fig:>12}  {r['ratio']}")
        else:
            for r in rows:
                say(f"    {r['system'].replace('`', '')[:w]:<{w}} {r['figure']:>12}  {r['ratio']}")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="lovage against Celery, Dask and Python's executors")
    ap.add_argument("--quick", action="store_true", help="smoke sizes, 1 run, report under target/compare/")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (median); default 3, 1 with --quick")
    ap.add_argument("--lovage-bin", default=os.environ.get("LOVAGE_BIN", os.path.join(ROOT, "target/release/lovage")))
    ap.add_argument("--redis", default=os.environ.get("LOVAGE_COMPARE_REDIS", "redis://127.0.0.1:6379/12"),
                    help="Redis database for Celery and lovage (keys under an own prefix; never flushed)")
    ap.add_argument("--only", default="", help="comma-separated session names to run (development)")
    ap.add_argument("--command", default="bench/compare/run", help="the command line to print in the report")
    ap.add_argument("--graphs", default=None,
                    help="bench/compare/dask_graphs.py's JSON (issue 16), a section of the report")
    args = ap.parse_args()
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        ap.error("--runs must be at least 1")
    cfg = QUICK if args.quick else FULL
    args.out_dir = os.path.join(ROOT, "target", "compare")
    to_docs = not args.quick and not args.only  # docs/ only ever gets complete, full-size runs
    md_path = os.path.join(ROOT, "docs", "benchmarks.md") if to_docs else os.path.join(args.out_dir, "benchmarks.md")
    img_dir = os.path.join(ROOT, "docs", "img") if to_docs else os.path.join(args.out_dir, "img")
    for d in (args.out_dir, os.path.join(args.out_dir, "logs"), img_dir):
        os.makedirs(d, exist_ok=True)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    started = time.monotonic()
    sessions = Sessions()
    scratch = os.path.join(args.out_dir, f"tmp-{os.getpid()}")
    os.makedirs(scratch, exist_ok=True)
    tag = f"lovage-compare-{os.getpid()}"
    redis_place = None
    touched_pgids = []
    status = 0
    try:
        if not os.access(args.lovage_bin, os.X_OK):
            raise SystemExit(f"no lovage binary at {args.lovage_bin} (build it: cargo build --release -p lovage)")
        # A private copy, so a cargo build during the run cannot swap the binary under it.
        binary = os.path.join(scratch, "lovage")
        shutil.copy2(args.lovage_bin, binary)
        redis_place = RedisPlace(args.redis, sessions, scratch)
        bench = Bench(args, cfg, sessions, redis_place, binary, tag, scratch)
        plan = bench.sessions()
        if args.only:
            wanted = [w.strip() for w in args.only.split(",")]
            plan = [(n, f) for n, f in plan if any(w in n for w in wanted)]
        load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
        say(f"bench/compare: {runs} run(s) × {len(plan)} systems{' (--quick: smoke sizes, not a measurement)' if args.quick else ''}; "
            f"load average {load_start}; Redis {redis_place.url} under keys {tag}-*")
        if not bench.has_chord:
            say("  (this lovage has no `bench flow`: fan-in shows lovage as n/a)")
        results = []
        for run in range(1, runs + 1):
            this = {}
            for name, fn in plan:
                say(f"[run {run}/{runs}] {name} …")
                t0 = time.monotonic()
                try:
                    this[name] = fn(run)
                except Interrupted:
                    raise
                except Exception as e:  # one system failing must not hide the others
                    this[name] = {"error": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}
                say(f"      → {one_line(name, this[name])}  ({time.monotonic() - t0:.1f} s)")
            results.append(this)
        res = Results(results)
        tables = build_tables(res, bench, cfg, args)
        failures = sorted({f"{n}: {e}" for r in results for n, v in r.items() if "error" in v for e in [v["error"]]})
        graphs, graphs_failure = load_graphs(args.graphs)
        if graphs_failure:
            failures.append(graphs_failure)
        elif graphs:
            failures += [f"graphs {rid}: {e}" for rid, e in sorted(graphs.get("errors", {}).items())]
        elapsed = time.monotonic() - started
        meta = {
            "command": args.command,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "runs": runs, "order": [n for n, _ in plan],
            "elapsed": f"{elapsed / 60:.1f} min" if elapsed >= 60 else f"{elapsed:.0f} s",
            "machine": machine(), "load_start": load_start,
            "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "machine_note": os.environ.get("LOVAGE_COMPARE_NOTE", "Figures are from one shared machine; other work may have been running."),
            "versions": versions(binary, redis_place.version),
            "redis": f"{redis_place.url.split('/')[2]} (db {redis_place.url.rsplit('/', 1)[1]}) for Celery's broker and "
                     f"results and for lovage's Redis broker; the keys of this run were deleted at its end",
            "failures": failures,
        }
        with open(os.path.join(args.out_dir, "results.json"), "w") as f:
            json.dump({"meta": meta, "config": cfg, "lovage_sizes": bench.lovage_sizes, "runs": results,
                       "graphs": graphs}, f, indent=1)
        charts(tables, img_dir)
        if graphs:
            graphs_chart(graphs, img_dir)
        write_section(md_path, markdown(tables, meta, "img", graphs))
        terminal_summary(tables)
        say(f"\nReport: {os.path.relpath(md_path, ROOT)} (charts in {os.path.relpath(img_dir, ROOT)}/compare-*.svg); "
            f"raw: target/compare/results.json; {meta['elapsed']} in all")
        if failures:
            say("Failures:\n  " + "\n  ".join(failures))
            status = 1
    except Interrupted as e:
        say(f"\ninterrupted ({e}): stopping everything this run started")
        status = 130
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        sessions.stop_all()
        touched_pgids = list(sessions.all)
        left_keys = None
        if redis_place is not None:
            try:
                redis_place.delete(tag)
                left_keys = redis_place.count(tag)
            except Exception as e:
                say(f"could not clean Redis keys {tag}-*: {e}")
            if redis_place.private is not None:
                sessions.stop(redis_place.private)
        shutil.rmtree(scratch, ignore_errors=True)
        left = sessions.leftovers(touched_pgids)
        say(f"cleanup: {'no process left' if not left else f'STILL RUNNING: {left}'}; "
            f"{'Redis keys left under ' + tag + '-*: ' + str(left_keys) if left_keys is not None else ''}")
    sys.exit(status)


if __name__ == "__main__":
    main()
