"""Dask's side of `lovage bench collections` (issue 17): the same three workloads, same sizes.

Usage:
  python bench/compare/dask_collections.py --dir DIR [--quick] [--runs N] [--scheduler threads|sync]
      Dask alone; prints one JSON object last. DIR must hold the word-count text that
      `lovage bench collections --dir DIR` generated (words-*.txt), so both count the same bytes.
  python bench/compare/dask_collections.py --with-lovage [--quick] [--runs N] [--lovage-bin PATH]
      (what bench/compare/run calls) lovage and Dask alternating, one run each per round:
      `lovage bench collections --json --runs 1` first (it generates the text into
      target/compare/collections-text, kept between runs), then Dask on the same files; prints a
      table of medians, ranges and ratios, then one JSON object. --quick: smoke sizes (1e7
      values, 16 MB of text, 1e6 ints, 1 round), a few seconds; not a measurement.
Unknown flags (bench/compare/run passes its own, such as --redis) are ignored.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def timed(f, runs):
    out, value = [], None
    for _ in range(runs):
        t = time.perf_counter()
        value = f()
        out.append(time.perf_counter() - t)
    return statistics.median(out), min(out), max(out), value


def dask_run(text_dir, quick, runs, scheduler, workers):
    """One Dask measurement of the three workloads (median of `runs`)."""
    import dask
    import dask.array as da
    import dask.bag as db

    elements, chunk, fold_n = (10_000_000, 1_000_000, 1_000_000) if quick else (1_000_000_000, 10_000_000, 10_000_000)
    dask.config.set(scheduler=scheduler, num_workers=workers)
    res = {"scheduler": scheduler, "workers": workers, "runs": runs}

    arr = timed(lambda: da.random.random((elements,), chunks=chunk).mean().compute(), runs)
    res.update(array_elements=elements, array_mean_s=arr[0], array_mean_s_range=[arr[1], arr[2]])

    files = sorted(glob.glob(os.path.join(text_dir, "words-*.txt")))
    if not files:
        sys.exit(f"dask_collections.py: no words-*.txt in {text_dir} (run `lovage bench collections --dir {text_dir}` first)")
    size = sum(os.path.getsize(f) for f in files)
    blocksize = (4 << 20) if quick else (32 << 20)
    wc = timed(lambda: db.read_text(files, blocksize=blocksize).str.split().flatten().frequencies().compute(), runs)
    res.update(wordcount_mb=size >> 20, wordcount_s=wc[0], wordcount_mb_per_s=size / 1e6 / wc[0],
               distinct_words=len(wc[3]))

    b = db.from_sequence(range(fold_n), npartitions=16)
    fo = timed(lambda: b.fold(lambda acc, x: acc + x, lambda p, q: p + q, initial=0).compute(), runs)
    assert fo[3] == fold_n * (fold_n - 1) // 2
    res.update(fold_ints=fold_n, fold_s=fo[0], fold_s_range=[fo[1], fo[2]])
    return res


def median(v):
    return statistics.median(v)


def with_lovage(a):
    """lovage and Dask alternating, one run each per round; a table, then one JSON object."""
    runs = 1 if a.quick else a.runs
    text_dir = a.dir or os.path.join(ROOT, "target", "compare", "collections-text" + ("-quick" if a.quick else ""))
    os.makedirs(text_dir, exist_ok=True)
    argv = [a.lovage_bin, "bench", "collections", "--json", "--runs", "1", "--workers", str(a.workers),
            "--dir", text_dir] + (["--quick"] if a.quick else [])
    print(f"bench/compare/dask_collections.py: {runs} round(s), lovage then Dask ({a.scheduler} scheduler, "
          f"{a.workers} workers){' (--quick: smoke sizes, not a measurement)' if a.quick else ''}", flush=True)
    keys = ("array_mean_s", "wordcount_mb_per_s", "fold_s")
    lv = {k: [] for k in keys}
    dv = {k: [] for k in keys}
    hand = []
    for r in range(runs):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            sys.exit(f"lovage bench collections failed: {out.stderr.strip()[-500:]}")
        figs = json.loads(out.stdout.strip().splitlines()[-1])
        for k in keys:
            lv[k].append(figs[k])
        hand.append(figs["hand_loop_s"])
        d = dask_run(text_dir, a.quick, 1, a.scheduler, a.workers)
        for k in keys:
            dv[k].append(d[k])
        print(f"  round {r + 1}/{runs} done", flush=True)

    def rng(v, f):
        return f"{f(min(v))} – {f(max(v))}"

    s = lambda x: f"{x:.3f} s"  # noqa: E731
    mbs = lambda x: f"{x:.0f} MB/s"  # noqa: E731
    rows = [
        (f"array mean of {figs['array_elements']:.0e} f64", s(median(lv['array_mean_s'])), rng(lv['array_mean_s'], s),
         s(median(dv['array_mean_s'])), rng(dv['array_mean_s'], s),
         f"{median(dv['array_mean_s']) / median(lv['array_mean_s']):.1f}×"),
        (f"word count, {figs['wordcount_mb']} MB", mbs(median(lv['wordcount_mb_per_s'])), rng(lv['wordcount_mb_per_s'], mbs),
         mbs(median(dv['wordcount_mb_per_s'])), rng(dv['wordcount_mb_per_s'], mbs),
         f"{median(lv['wordcount_mb_per_s']) / median(dv['wordcount_mb_per_s']):.1f}×"),
        (f"bag fold of {figs['fold_ints']:.0e} ints", s(median(lv['fold_s'])), rng(lv['fold_s'], s),
         s(median(dv['fold_s'])), rng(dv['fold_s'], s),
         f"{median(dv['fold_s']) / median(lv['fold_s']):.0f}×"),
    ]
    head = ("workload", "lovage", "range", f"Dask ({a.scheduler})", "range", "lovage ÷ Dask")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"(the array mean's hand-written 2-thread loop: {median(hand):.3f} s, "
          f"lovage ÷ loop {median(lv['array_mean_s']) / median(hand):.2f})")
    print(json.dumps({"runs": runs, "scheduler": a.scheduler, "workers": a.workers,
                      "lovage": {k: median(v) for k, v in lv.items()},
                      "dask": {k: median(v) for k, v in dv.items()},
                      "lovage_ranges": {k: [min(v), max(v)] for k, v in lv.items()},
                      "dask_ranges": {k: [min(v), max(v)] for k, v in dv.items()},
                      "hand_loop_s": median(hand)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--with-lovage", action="store_true")
    ap.add_argument("--lovage-bin", default=os.environ.get("LOVAGE_BIN", os.path.join(ROOT, "target/release/lovage")))
    a, _ = ap.parse_known_args()
    if a.with_lovage:
        with_lovage(a)
        return
    if not a.dir:
        sys.exit("dask_collections.py: --dir DIR (the words-*.txt) is needed without --with-lovage")
    print(json.dumps(dask_run(a.dir, a.quick, 1 if a.quick else a.runs, a.scheduler, a.workers)))


if __name__ == "__main__":
    main()
