#!/usr/bin/env python3
"""Medians, ranges and round-by-round ratios of an events_sitting.py output (the first label is
the base)."""
import json, sys, statistics as st
recs = [json.loads(l) for l in open(sys.argv[1])]
labels = []
for r in recs:
    if r["label"] not in labels: labels.append(r["label"])
base = labels[0]
for fig in ["end_to_end_per_s", "enqueue_per_s", "cpu_s", "p50_latency_ms", "p99_latency_ms"]:
    meds = {}
    for l in labels:
        v = [r[fig] for r in recs if r["label"] == l]
        meds[l] = st.median(v)
        print(f"{fig:18} {l:10} median {st.median(v):>10.4g}  range {min(v):.4g}-{max(v):.4g}  n={len(v)}")
    for l in labels[1:]:
        print(f"{'':18} {l} vs {base}: {100*(meds[l]/meds[base]-1):+.1f}%")
# round by round e2e
rounds = sorted(set(r["round"] for r in recs))
for l in labels[1:]:
    diffs = []
    for rd in rounds:
        a = [r for r in recs if r["round"] == rd and r["label"] == base]
        b = [r for r in recs if r["round"] == rd and r["label"] == l]
        if a and b: diffs.append(f"{100*(b[0]['end_to_end_per_s']/a[0]['end_to_end_per_s']-1):+.0f}%")
    print("round by round e2e", l, "vs", base, ", ".join(diffs))
