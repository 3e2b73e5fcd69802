"""Dask's side of `lovage bench collections` (issue 17): the same three workloads, same sizes.

Usage: python bench/compare/dask_collections.py [--quick] [--runs N] [--dir DIR] [--scheduler threads|sync]
Prints one JSON object last. DIR must hold the word-count text that `lovage bench collections
--dir DIR` generated (words-*.txt), so both count the same bytes.
"""
import argparse
import glob
import json
import os
import statistics
import time


def timed(f, runs):
    out, value = [], None
    for _ in range(runs):
        t = time.perf_counter()
        value = f()
        out.append(time.perf_counter() - t)
    return statistics.median(out), min(out), max(out), value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    import dask
    import dask.array as da
    import dask.bag as db

    elements, chunk, fold_n = (10_000_000, 1_000_000, 1_000_000) if a.quick else (1_000_000_000, 10_000_000, 10_000_000)
    runs = 1 if a.quick else a.runs
    dask.config.set(scheduler=a.scheduler, num_workers=a.workers)
    res = {"scheduler": a.scheduler, "workers": a.workers, "runs": runs}

    arr = timed(lambda: da.random.random((elements,), chunks=chunk).mean().compute(), runs)
    res.update(array_elements=elements, array_mean_s=arr[0], array_mean_s_range=[arr[1], arr[2]])

    files = sorted(glob.glob(os.path.join(a.dir, "words-*.txt")))
    size = sum(os.path.getsize(f) for f in files)
    wc = timed(lambda: db.read_text(files, blocksize=32 << 20).str.split().flatten().frequencies().compute(), runs)
    res.update(wordcount_mb=size >> 20, wordcount_s=wc[0], wordcount_mb_per_s=size / 1e6 / wc[0],
               distinct_words=len(wc[3]))

    b = db.from_sequence(range(fold_n), npartitions=16)
    fo = timed(lambda: b.fold(lambda acc, x: acc + x, lambda p, q: p + q, initial=0).compute(), runs)
    assert fo[3] == fold_n * (fold_n - 1) // 2
    res.update(fold_ints=fold_n, fold_s=fo[0], fold_s_range=[fo[1], fo[2]])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
