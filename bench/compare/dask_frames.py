"""Dask DataFrame's side of `lovage bench frames` (issue 18): the same workloads, same sizes.

Usage:
  python bench/compare/dask_frames.py [--quick] [--runs N] [--workers N] [--scheduler cluster|threads]
      Dask alone; prints one JSON object last.
  python bench/compare/dask_frames.py --with-lovage [--quick] [--runs N] [--lovage-bin PATH]
      (what bench/compare/run calls) lovage, single-process Polars and Dask alternating, one run
      each per round: `lovage bench frames --json --runs 1 --warmup 1` (lovage, then Polars in
      the same process, on the same generated data, each workload once untimed first), then
      Dask (each workload run once untimed before the rounds); prints a table of medians, ranges and
      ratios, then one JSON object. --quick: smoke sizes (1e5 rows, 2e5 project rows, 1e7
      numbers, 1 round), well under a minute once Dask's data is made; not a measurement.
Workloads: group-by sum of a float column over an int key with 10 and with 1e6 groups (1e7
rows in 20 partitions), then the seed's e-commerce mini project (50M rows in 50 partitions:
mean total_sales, max/min price, sales by category, top 5 products by sales, and the mean of
1e9 random numbers with dask.array). Dask runs on a LocalCluster of --workers processes (one
thread each) unless --scheduler threads. Dask's data is made and persisted once, before the
rounds (not timed), as lovage's generation is not compared either.
Unknown flags (bench/compare/run passes its own, such as --redis) are ignored.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The environment lovage runs in, taken before Dask starts: a LocalCluster's nannies write
# their `pre-spawn-environ` (MALLOC_TRIM_THRESHOLD_=65536, OMP_NUM_THREADS=1, ...) into this
# process's os.environ, and a lovage started after that would inherit them: with that trim
# threshold glibc hands freed memory back at once, and lovage's group-bys ran 1.6-2x slower
# (measured on `lovage bench frames`, 2026-12-04).
LOVAGE_ENV = dict(os.environ)

# The project steps both sides time, by lovage's step names.
PROJECT_STEPS = ("mean total_sales", "max and min price", "sales by category",
                 "top 5 products by sales", "mean of random numbers (lovage::array)")
# Made and kept before the questions: timed by lovage and Polars (and in their total), in
# Dask's untimed persist, as a Dask user writes it.
KEPT_COLUMN_STEP = "total_sales column (kept)"


def once(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def dask_setup(a):
    """Dask's data, persisted on the cluster; returns {workload: function to time}."""
    import dask
    import dask.array as da
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rows, project_rows, numbers = (100_000, 200_000, 10_000_000) if a.quick else (10_000_000, 50_000_000, 1_000_000_000)
    chunk = 1_000_000 if a.quick else 10_000_000
    if a.scheduler == "cluster":
        import logging

        from dask.distributed import Client, LocalCluster

        a.client = Client(LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=None,
                                       silence_logs=logging.ERROR))
    else:
        dask.config.set(scheduler="threads", num_workers=a.workers)
    rng = np.random.default_rng(0)
    work = {}
    for groups in (10, 1_000_000):
        pdf = pd.DataFrame({"k": rng.integers(0, groups, rows), "v": rng.random(rows)})
        df = dd.from_pandas(pdf, npartitions=20).persist()
        split_out = 2 if groups > 100_000 else 1
        work[f"groupby_{groups}"] = (lambda df=df, s=split_out: df.groupby("k").v.sum(split_out=s).compute())
    cats = np.array(["Books", "Clothing", "Electronics", "Home", "Toys"])
    pdf = pd.DataFrame({
        "product_id": rng.integers(1, 10_001, project_rows),
        "category": cats[rng.integers(0, 5, project_rows)],
        "price": rng.uniform(5, 500, project_rows),
        "units_sold": rng.integers(1, 50, project_rows),
    })
    df = dd.from_pandas(pdf, npartitions=50)
    df["total_sales"] = df["price"] * df["units_sold"]
    df = df.persist()
    del pdf
    work["mean total_sales"] = lambda: df["total_sales"].mean().compute()
    work["max and min price"] = lambda: dask.compute(df["price"].max(), df["price"].min())
    work["sales by category"] = lambda: df.groupby("category")["total_sales"].sum().compute()
    work["top 5 products by sales"] = lambda: df.groupby("product_id")["total_sales"].sum().nlargest(5).compute()
    work["mean of random numbers (lovage::array)"] = (
        lambda: da.random.random((numbers,), chunks=chunk).mean().compute())
    return work, {"rows": rows, "project_rows": project_rows, "numbers": numbers}


def warm_up(a, work):
    """One untimed run of each workload (not with --quick), as `lovage bench frames --warmup 1`
    does on its side: both sides' timed runs are then in processes that have run them once."""
    if not a.quick:
        for f in work.values():
            f()


def med(v):
    return statistics.median(v)


def with_lovage(a):
    runs = 1 if a.quick else a.runs
    argv = [a.lovage_bin, "bench", "frames", "--json", "--runs", "1", "--warmup", "1", "--workers", str(a.workers)] + (
        ["--quick"] if a.quick else [])
    print(f"bench/compare/dask_frames.py: {runs} round(s), lovage and Polars, then Dask DataFrame "
          f"({a.scheduler}, {a.workers} workers){' (--quick: smoke sizes, not a measurement)' if a.quick else ''}",
          flush=True)
    work, sizes = dask_setup(a)
    warm_up(a, work)
    names = ["groupby_10", "groupby_1000000"] + list(PROJECT_STEPS)
    lv = {n: [] for n in names + [KEPT_COLUMN_STEP]}
    pv = {n: [] for n in names + [KEPT_COLUMN_STEP]}
    dv = {n: [] for n in names}
    for r in range(runs):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=3600, env=LOVAGE_ENV)
        if out.returncode != 0:
            sys.exit(f"lovage bench frames failed: {out.stderr.strip()[-500:]}")
        figs = json.loads(out.stdout.strip().splitlines()[-1])
        for g in ("10", "1000000"):
            lv[f"groupby_{g}"].append(figs[f"groupby_{g}_s"])
            pv[f"groupby_{g}"].append(figs[f"groupby_{g}_polars_s"])
        for s in figs["project_steps"]:
            if s["step"] in lv:
                lv[s["step"]].append(s["s"])
                if s.get("polars_s") is not None:
                    pv[s["step"]].append(s["polars_s"])
        for n in names:
            dv[n].append(once(work[n]))
        print(f"  round {r + 1}/{runs} done", flush=True)

    sec = lambda x: f"{x:.3f} s"  # noqa: E731
    span = lambda v: f"{min(v):.3f}–{max(v):.3f}" if v else ""  # noqa: E731
    labels = {"groupby_10": f"group-by sum, {sizes['rows']:.0e} rows, 10 groups",
              "groupby_1000000": f"group-by sum, {sizes['rows']:.0e} rows, 1e6 groups"}
    rows = []
    for n in names:
        label = labels.get(n, f"project ({sizes['project_rows']:.0e} rows): {n}")
        lm, dm = med(lv[n]), med(dv[n])
        pm = med(pv[n]) if pv[n] else None
        rows.append((label, sec(lm), span(lv[n]), sec(pm) if pm else "—", span(pv[n]), sec(dm), span(dv[n]),
                     f"{dm / lm:.1f}×", f"{lm / pm:.2f}" if pm else "—"))
    head = ("workload", "lovage", "range", "Polars (1 process)", "range", f"Dask ({a.scheduler})", "range",
            "Dask ÷ lovage", "lovage ÷ Polars")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    proj = [n for n in (KEPT_COLUMN_STEP,) + PROJECT_STEPS if pv[n] and lv[n]]
    lt, pt = sum(med(lv[n]) for n in proj), sum(med(pv[n]) for n in proj)
    if lv[KEPT_COLUMN_STEP]:
        print(f"({KEPT_COLUMN_STEP}, in Dask's untimed persist: lovage {med(lv[KEPT_COLUMN_STEP]):.3f} s, "
              f"Polars {med(pv[KEPT_COLUMN_STEP]):.3f} s)")
    print(f"(project steps that Polars also runs, {KEPT_COLUMN_STEP} included: lovage {lt:.3f} s, "
          f"Polars {pt:.3f} s, ratio {lt / pt:.2f})")
    print(json.dumps({"runs": runs, "scheduler": a.scheduler, "workers": a.workers, **sizes,
                      "lovage": {n: med(v) for n, v in lv.items() if v},
                      "polars": {n: med(v) for n, v in pv.items() if v},
                      "dask": {n: med(v) for n, v in dv.items()},
                      "lovage_ranges": {n: [min(v), max(v)] for n, v in lv.items() if v},
                      "polars_ranges": {n: [min(v), max(v)] for n, v in pv.items() if v},
                      "dask_ranges": {n: [min(v), max(v)] for n, v in dv.items()}}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scheduler", choices=("cluster", "threads"), default="cluster")
    ap.add_argument("--with-lovage", action="store_true")
    ap.add_argument("--lovage-bin", default=os.environ.get("LOVAGE_BIN", os.path.join(ROOT, "target/release/lovage")))
    a, _ = ap.parse_known_args()
    if a.with_lovage:
        with_lovage(a)
        return
    runs = 1 if a.quick else a.runs
    work, sizes = dask_setup(a)
    warm_up(a, work)
    res = {"runs": runs, "scheduler": a.scheduler, "workers": a.workers, **sizes}
    for n, f in work.items():
        ts = [once(f) for _ in range(runs)]
        res[n] = {"s": med(ts), "s_range": [min(ts), max(ts)]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
