"""Dask's side of `lovage bench frames` (issue 18): the same workloads, same sizes.

Usage: python bench/compare/dask_frames.py [--quick] [--runs N] [--workers N] [--cluster]
Prints one JSON object last. Group-by sum of a float column over an int key with 10 and with
1e6 groups (1e7 rows in 20 partitions), then the seed's e-commerce mini project (50M rows in 50
partitions: mean total_sales, max/min price, sales by category, top 5 products). Without
--cluster it runs on Dask's threaded scheduler; with it, on a LocalCluster of --workers
processes. Not yet part of bench/compare/run (written without a venv to try it in).
"""
import argparse
import json
import statistics
import time


def timed(f, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return statistics.median(out), min(out), max(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cluster", action="store_true")
    a = ap.parse_args()
    import dask
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rows, project_rows = (100_000, 200_000) if a.quick else (10_000_000, 50_000_000)
    runs = 1 if a.quick else a.runs
    if a.cluster:
        from dask.distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=a.workers, threads_per_worker=1))
    else:
        dask.config.set(scheduler="threads", num_workers=a.workers)
    res = {"workers": a.workers, "runs": runs, "cluster": a.cluster, "rows": rows}

    rng = np.random.default_rng(0)
    for groups in (10, 1_000_000):
        pdf = pd.DataFrame({"k": rng.integers(0, groups, rows), "v": rng.random(rows)})
        df = dd.from_pandas(pdf, npartitions=20).persist()
        split_out = 2 if groups > 100_000 else 1
        t = timed(lambda: df.groupby("k").v.sum(split_out=split_out).compute(), runs)
        res[f"groupby_{groups}_s"] = t[0]
        res[f"groupby_{groups}_s_range"] = [t[1], t[2]]

    cats = np.array(["Books", "Clothing", "Electronics", "Home", "Toys"])
    pdf = pd.DataFrame({
        "product_id": rng.integers(1, 10_001, project_rows),
        "category": cats[rng.integers(0, 5, project_rows)],
        "price": rng.uniform(5, 500, project_rows),
        "units_sold": rng.integers(1, 50, project_rows),
    })
    df = dd.from_pandas(pdf, npartitions=50).persist()
    df["total_sales"] = df["price"] * df["units_sold"]
    steps = {
        "mean total_sales": lambda: df["total_sales"].mean().compute(),
        "max and min price": lambda: dask.compute(df["price"].max(), df["price"].min()),
        "sales by category": lambda: df.groupby("category")["total_sales"].sum().compute(),
        "top 5 products by sales": lambda: df.groupby("product_id")["total_sales"].sum().nlargest(5).compute(),
    }
    res["project_rows"] = project_rows
    res["project_steps"] = []
    for name, f in steps.items():
        t = timed(f, runs)
        res["project_steps"].append({"step": name, "s": t[0], "s_range": [t[1], t[2]]})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
