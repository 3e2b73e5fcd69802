"""Dask's side of `lovage bench graph` (issue 16): the same graph shapes, the crawler and `client.map`.

Usage:
  python bench/compare/dask_graphs.py --with-lovage [--quick] [--runs N] [--lovage-bin PATH]
          [--redis URL] [--out PATH] [--sizes key=N,key=N]
      (what bench/compare/run calls) lovage then Dask in each round, one run each:
      - tree / chains / fanout (crates/lovage/src/cli/bench_graph.rs: n/2 leaves reduced pairwise;
        chains of 10; one root read by n-1 tasks, every one requested), no-op tasks:
        `lovage bench graph --json --runs 1` on inline, threads, processes (2 workers) and the
        SQLite broker (and Redis when --redis answers; 2 worker processes x 2 threads), then the
        same graphs as dask.delayed built (µs per node) and computed on the synchronous
        scheduler, the threaded one (2 threads) and a LocalCluster (2 processes x 1 thread, as
        peers.py's). A LocalCluster costs ~2 ms a task: its graphs are smaller (the table says
        how many nodes each row ran).
      - crawl: the synthetic site of crates/lovage/src/workloads/crawl.rs (8 links a page, half
        near, half anywhere; `links_of` reproduced bit for bit below), lovage `--shape crawl` on
        threads and the brokers; Dask on the LocalCluster: each page a task that takes
        `get_client()`, `secede()`s while it asks a deduplicating actor which of its links are new,
        `rejoin()`s, and submits those (`fire_and_forget`, keyed `page-N`); every run is checked:
        each reachable page fetched exactly once (the serial crawl's count).
      - map: `client.map` of n no-ops then `gather`: lovage `--shape map` (the futures client on
        the SQLite / Redis broker) and Dask `client.map(step, range(n), pure=False)` + `gather`.
      Prints a table of medians (min-max over the rounds) and Dask ÷ lovage, then one JSON object;
      with --out also writes that JSON to PATH (bench/compare/run gives target/compare/graphs.json,
      which compare.py turns into a section of the report). --quick: smoke sizes, 1 round, seconds.
Unknown flags (bench/compare/run passes its own, such as --only) are ignored.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The environment lovage runs in, taken before Dask starts: a LocalCluster's nannies write
# their `pre-spawn-environ` (MALLOC_TRIM_THRESHOLD_=65536, OMP_NUM_THREADS=1, ...) into this
# process's os.environ, and a lovage started after that would inherit them: with that trim
# threshold glibc hands freed memory back at once, and lovage's group-bys ran 1.6-2x slower
# (measured on `lovage bench frames`, 2026-12-04).
LOVAGE_ENV = dict(os.environ)

# Nodes (pages, tasks) per row. Dask's own schedulers cost ~100 µs a node and its LocalCluster
# ~2-3 ms a task on 2 cores, so its graphs are smaller; per-task figures are compared. Dask's
# per-task cost of a graph with many requested outputs grows with their number (fanout on the
# synchronous scheduler, 2026.8.0: 418 µs/task at 2,000 nodes, 744 at 5,000, 2,860 at 20,000), so
# 100,000-node fanouts would take ~25 min a run: 10,000 it is.
FULL = {"lovage_local": 1_000_000, "lovage_broker": 100_000, "dask_local": 10_000, "dask_cluster": 2_000,
        "crawl_threads": 100_000, "crawl_broker": 20_000, "crawl_dask": 2_000,
        "map_lovage": 100_000, "map_dask": 5_000}
QUICK = {"lovage_local": 2_000, "lovage_broker": 1_000, "dask_local": 2_000, "dask_cluster": 200,
         "crawl_threads": 2_000, "crawl_broker": 300, "crawl_dask": 300,
         "map_lovage": 1_000, "map_dask": 200}
SHAPES = ("tree", "chains", "fanout")
M64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------
# The site of crates/lovage/src/workloads/crawl.rs, bit for bit.


def links_of(page, size):
    h = ((page * 0x9E3779B97F4A7C15) & M64) ^ 0xD1B54A32D192ED03
    out = []
    for _ in range(8):
        h ^= h >> 31
        h = (h * 0xBF58476D1CE4E5B9) & M64
        h ^= h >> 29
        out.append((page + (h >> 8) % 16) % size if h & 1 == 0 else (h >> 8) % size)
    return out


def reachable(size):
    seen, todo = {0}, [0]
    while todo:
        for link in links_of(todo.pop(), size):
            if link not in seen:
                seen.add(link)
                todo.append(link)
    return len(seen)


# ---------------------------------------------------------------------------------------------
# Dask: no-op tasks named as lovage's (lovage.graph.leaf / combine / step).


def leaf(i):
    return i


def combine(a, b):
    return a + b


def step(x):
    return x + 1


def build(shape, n):
    """The shape as dask.delayed objects; returns (outputs, nodes, check)."""
    import dask

    d_leaf, d_combine, d_step = dask.delayed(leaf), dask.delayed(combine), dask.delayed(step)
    n = max(n, 2)
    if shape == "tree":
        half = (n + 1) // 2
        level = [d_leaf(i) for i in range(half)]
        nodes = len(level)
        while len(level) > 1:
            nxt = [d_combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            nodes += len(nxt)
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        want = half * (half - 1) // 2
        return level, nodes, lambda vals: vals == (want,)
    if shape == "chains":
        outs = []
        for c in range((n + 9) // 10):
            x = d_leaf(c)
            for _ in range(9):
                x = d_step(x)
            outs.append(x)
        return outs, len(outs) * 10, lambda vals: all(v == c + 9 for c, v in enumerate(vals))
    root = d_leaf(0)
    outs = [d_step(root) for _ in range(1, n)]
    return outs, n, lambda vals: len(vals) == n - 1 and all(v == 1 for v in vals)


def dask_graph(shape, n, scheduler, client=None):
    """One build + compute; µs per node to build, µs per task to run."""
    import dask

    t = time.perf_counter()
    outs, nodes, check = build(shape, n)
    built = time.perf_counter() - t
    t = time.perf_counter()
    if client is not None:
        vals = tuple(client.gather(client.compute(outs)))
    else:
        vals = dask.compute(*outs, scheduler=scheduler, num_workers=2)
    took = time.perf_counter() - t
    if not check(vals):
        raise SystemExit(f"dask {shape} on {scheduler}: wrong values")
    return {"nodes": nodes, "build_us_per_node": built * 1e6 / nodes, "us_per_task": took * 1e6 / nodes}


class Seen:
    """The crawl's one deduplicating record (a Dask actor): which pages were found, fetched."""

    def __init__(self):
        self.found = {0}
        self.fetched = 0
        self.twice = 0
        self.done = set()

    def visit(self, page, links):
        if page in self.done:
            self.twice += 1
        self.done.add(page)
        self.fetched += 1
        new = [link for link in links if link not in self.found]
        self.found.update(new)
        return new

    def state(self):
        return len(self.found), self.fetched, self.twice


def crawl_page(page, size, seen):
    from distributed import fire_and_forget, get_client, rejoin, secede

    client = get_client()
    links = links_of(page, size)
    # Waiting inside a task holds the worker's only thread unless the task secedes.
    secede()
    new = seen.visit(page, links).result()
    rejoin()
    if new:
        fire_and_forget([client.submit(crawl_page, link, size, seen, key=f"page-{link}") for link in new])
    return len(links)


def dask_crawl(client, size, expected, run):
    seen = client.submit(Seen, actor=True, key=f"seen-{run}").result()
    t = time.perf_counter()
    from distributed import fire_and_forget

    fire_and_forget(client.submit(crawl_page, 0, size, seen, key="page-0"))
    deadline = time.monotonic() + 1800
    while True:
        found, fetched, twice = seen.state().result()
        if fetched == found:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"dask crawl: {fetched} of {found} pages after 30 min")
        time.sleep(0.002)
    took = time.perf_counter() - t
    if found != expected or twice:
        raise SystemExit(f"dask crawl: {fetched} fetched ({twice} twice), {expected} reachable")
    del seen
    return {"nodes": size, "tasks": fetched, "us_per_task": took * 1e6 / fetched}


def dask_map(client, n):
    t = time.perf_counter()
    futs = client.map(step, range(n), pure=False)
    vals = client.gather(futs)
    took = time.perf_counter() - t
    if vals != [i + 1 for i in range(n)]:
        raise SystemExit("dask client.map: wrong values")
    del futs
    return {"nodes": n, "tasks": n, "us_per_task": took * 1e6 / n, "tasks_per_s": n / took}


def start_cluster(scratch):
    import logging

    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL, local_directory=scratch)
    client = Client(cluster)
    client.wait_for_workers(2, timeout=60)
    client.gather(client.map(step, range(-200, 0), pure=False))  # warm-up, as peers.py's
    return cluster, client


# ---------------------------------------------------------------------------------------------
# lovage: one `lovage bench graph --json --runs 1` per row, in a process group of its own.


def run_lovage(argv, timeout):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=LOVAGE_ENV)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = "", f"timed out after {timeout} s"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the bench's worker processes, if any are left
        except ProcessLookupError:
            pass
        p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])}: {err.strip()[-400:]}")
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{' '.join(argv[1:])}: no JSON line")


class Redis:
    """lovage's Redis broker under a key prefix of this process's own, deleted after each row."""

    def __init__(self, url):
        self.url, self.client = url, None
        if not url:
            return
        try:
            import redis

            self.client = redis.Redis.from_url(url, socket_timeout=10)
            self.client.ping()
        except Exception as e:  # no Redis: its rows are left out, and the table says so
            print(f"dask_graphs.py: Redis does not answer at {url} ({e}); Redis rows skipped", flush=True)
            self.client = None

    def prefix(self, what):
        return f"lovage-compare-graphs-{os.getpid()}-{what}"

    def delete(self, prefix):
        keys = list(self.client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i:i + 1000])


# ---------------------------------------------------------------------------------------------


def rows_plan(sz, redis_ok):
    """(row id, shape, system label, nodes, who, what) in table order."""
    plan = []
    brokers = [("sqlite", "SQLite")] + ([("redis", "Redis")] if redis_ok else [])
    for shape in SHAPES:
        for s in ("inline", "threads", "processes"):
            label = {"inline": "lovage inline", "threads": "lovage threads (2)",
                     "processes": "lovage processes (2)"}[s]
            plan.append((f"{shape}/lovage-{s}", shape, label, sz["lovage_local"], "lovage", s))
        for b, bl in brokers:
            plan.append((f"{shape}/lovage-{b}", shape, f"lovage broker, {bl}, 2 workers × 2",
                         sz["lovage_broker"], "lovage", b))
        plan.append((f"{shape}/dask-sync", shape, "Dask synchronous", sz["dask_local"], "dask", "sync"))
        plan.append((f"{shape}/dask-threads", shape, "Dask threads (2)", sz["dask_local"], "dask", "threads"))
        plan.append((f"{shape}/dask-cluster", shape, "Dask LocalCluster, 2 processes × 1 thread",
                     sz["dask_cluster"], "dask", "cluster"))
    plan.append(("crawl/lovage-threads", "crawl", "lovage threads (2), pool scope", sz["crawl_threads"], "lovage", "threads"))
    for b, bl in brokers:
        plan.append((f"crawl/lovage-{b}", "crawl", f"lovage broker, {bl}, 2 workers × 2, app.scope",
                     sz["crawl_broker"], "lovage", b))
    plan.append(("crawl/dask-cluster", "crawl", "Dask LocalCluster, get_client + secede/rejoin",
                 sz["crawl_dask"], "dask", "cluster"))
    for b, bl in brokers:
        plan.append((f"map/lovage-{b}", "map", f"lovage client.map + gather, {bl}, 2 workers × 2",
                     sz["map_lovage"], "lovage", b))
    plan.append(("map/dask-cluster", "map", "Dask client.map + gather, LocalCluster", sz["map_dask"], "dask", "cluster"))
    return plan


# Which lovage row a Dask row is compared with.
PAIR = {"sync": "lovage-inline", "threads": "lovage-threads", "cluster": "lovage-sqlite"}


def with_lovage(a):
    runs = 1 if a.quick else a.runs
    sz = dict(QUICK if a.quick else FULL)
    for kv in filter(None, a.sizes.split(",")):
        k, v = kv.split("=")
        if k not in sz:
            sys.exit(f"dask_graphs.py: --sizes: unknown size {k!r} (known: {', '.join(sz)})")
        sz[k] = int(v)
    redis = Redis(a.redis)
    plan = rows_plan(sz, redis.client is not None)
    has_map = subprocess.run([a.lovage_bin, "bench", "graph", "--help"], capture_output=True,
                             text=True).stdout.find("client.map") >= 0
    if not has_map:
        print(f"dask_graphs.py: {a.lovage_bin} has no `bench graph --shape map`: lovage's client.map rows are n/a",
              flush=True)
    print(f"bench/compare/dask_graphs.py: {runs} round(s) of {len(plan)} rows, lovage then Dask"
          f"{' (--quick: smoke sizes, not a measurement)' if a.quick else ''}", flush=True)
    expected = {n: reachable(n) for n in {sz["crawl_threads"], sz["crawl_broker"], sz["crawl_dask"]}}
    vals = {rid: [] for rid, *_ in plan}
    errors = {}
    scratch = tempfile.mkdtemp(prefix="lovage-compare-graphs-")
    timeout = 120 if a.quick else 1800
    started = time.monotonic()
    for r in range(runs):
        for rid, shape, _label, n, who, what in plan:
            if who != "lovage" or rid in errors:
                continue
            if shape == "map" and not has_map:
                continue
            sched = {"inline": "inline", "threads": "threads", "processes": "processes"}.get(what, "broker")
            argv = [a.lovage_bin, "bench", "graph", "--json", "--runs", "1", "--workers", "2",
                    "--shape", shape, "--scheduler", sched, "--nodes", str(n)]
            prefix = None
            if what == "redis":
                prefix = redis.prefix(f"{shape}-r{r}")
                argv += ["--broker", f"{a.redis}?prefix={prefix}"]
            try:
                vals[rid].append(run_lovage(argv, timeout))
            except RuntimeError as e:
                errors[rid] = str(e).splitlines()[0] if str(e) else "failed"
                print(f"  {rid}: {errors[rid]}", flush=True)
            finally:
                if prefix:
                    redis.delete(prefix)
        for rid, shape, _label, n, who, what in plan:
            if who == "dask" and what in ("sync", "threads"):
                vals[rid].append(dask_graph(shape, n, what))
        cluster, client = start_cluster(scratch)
        try:
            for rid, shape, _label, n, who, what in plan:
                if who != "dask" or what != "cluster":
                    continue
                if shape == "crawl":
                    vals[rid].append(dask_crawl(client, n, expected[n], r))
                elif shape == "map":
                    vals[rid].append(dask_map(client, n))
                else:
                    vals[rid].append(dask_graph(shape, n, "cluster", client))
        finally:
            client.close()
            cluster.close()
        print(f"  round {r + 1}/{runs} done ({time.monotonic() - started:.0f} s)", flush=True)

    def med(rid, key):
        v = [x[key] for x in vals[rid] if key in x]
        return (statistics.median(v), min(v), max(v)) if v else None

    def num(x):
        return f"{x:,.3f}" if x < 10 else f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"

    def fmt(m):
        """(median, 'min–max') of a med() triple."""
        return ("n/a", "") if m is None else (num(m[0]), f"{num(m[1])}–{num(m[2])}")

    table = []
    for rid, shape, label, n, who, what in plan:
        build_m, task_m = med(rid, "build_us_per_node"), med(rid, "us_per_task")
        ran = vals[rid][-1].get("tasks", vals[rid][-1].get("nodes")) if vals[rid] else n
        ratio = ""
        if who == "dask":
            ref = med(f"{shape}/{PAIR[what]}", "us_per_task")
            if ref and task_m:
                ratio = f"{task_m[0] / ref[0]:,.0f}×" if task_m[0] / ref[0] >= 10 else f"{task_m[0] / ref[0]:.1f}×"
        note = errors.get(rid) or ("binary has no --shape map" if shape == "map" and who == "lovage" and not has_map else "")
        table.append({"id": rid, "shape": shape, "system": label, "nodes": n, "tasks": ran,
                      "build_us_per_node": build_m, "us_per_task": task_m,
                      "tasks_per_s": (1e6 / task_m[0]) if task_m else None,
                      "dask_over_lovage": ratio, "vs": PAIR.get(what, "") if who == "dask" else "", "note": note})

    head = ("shape", "system", "tasks run", "build µs/node", "range", "run µs/task", "range", "tasks/s", "Dask ÷ lovage")
    lines = []
    for t in table:
        b, br = fmt(t["build_us_per_node"]) if t["shape"] in SHAPES else ("–", "")
        u, ur = fmt(t["us_per_task"])
        if t["note"]:
            u = f"n/a ({t['note'][:60]})"
        tps = f"{t['tasks_per_s']:,.0f}" if t["tasks_per_s"] else ""
        lines.append((t["shape"], t["system"], f"{t['tasks']:,}", b, br, u, ur, tps, t["dask_over_lovage"]))
    widths = [max(len(x[i]) for x in lines + [head]) for i in range(len(head))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for x in lines:
        print("  ".join(c.ljust(w) for c, w in zip(x, widths)))
    print("(Dask ÷ lovage: Dask synchronous against lovage inline, threads against threads, the LocalCluster "
          "against lovage's SQLite broker; medians of µs/task)")
    result = {"runs": runs, "quick": a.quick, "sizes": sz, "redis": redis.client is not None,
              "has_map": has_map, "rows": table, "errors": errors,
              "elapsed_s": round(time.monotonic() - started, 1)}
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    if errors:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--with-lovage", action="store_true")
    ap.add_argument("--lovage-bin", default=os.environ.get("LOVAGE_BIN", os.path.join(ROOT, "target/release/lovage")))
    ap.add_argument("--redis", default=os.environ.get("LOVAGE_COMPARE_REDIS", "redis://127.0.0.1:6379/12"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--sizes", default="", help="override sizes: key=N,key=N (see FULL)")
    a, _ = ap.parse_known_args()
    if not a.with_lovage:
        sys.exit("dask_graphs.py: only --with-lovage is offered (it runs both sides, see the docstring)")
    if a.runs < 1:
        sys.exit("dask_graphs.py: --runs must be at least 1")
    with_lovage(a)


if __name__ == "__main__":
    main()
