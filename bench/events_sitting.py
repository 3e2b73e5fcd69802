#!/usr/bin/env python3
"""An alternating sitting of `lovage bench queue` (docs/benchmarks.md, issue 15): for each round,
runs each (label, binary, extra args) once, recording the bench's JSON and the CPU of the run
(bench and workers: RUSAGE_CHILDREN before and after). Run it under the cargo lock as a whole.
Usage: events_sitting.py ROUNDS OUT.jsonl '[[label, binary, [args...]], ...]'"""
import json, os, resource, subprocess, sys, time

rounds = int(sys.argv[1])
out = sys.argv[2]
configs = json.loads(sys.argv[3])  # [[label, binary, [args...]], ...]
with open(out, "a") as f:
    for r in range(rounds):
        for label, binary, extra in configs:
            cmd = [binary, "bench", "queue", "--json"] + extra
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if p.returncode != 0:
                print("FAILED", label, p.stderr[-2000:], file=sys.stderr)
                continue
            fig = json.loads(p.stdout.strip().splitlines()[-1])
            rec = {"round": r, "label": label, "cpu_s": round(cpu, 3), "wall_s": round(time.time() - t, 2),
                   "load1": os.getloadavg()[0], **fig}
            f.write(json.dumps(rec) + "\n"); f.flush()
            print(label, r, rec["end_to_end_per_s"], rec["enqueue_per_s"], rec["cpu_s"], flush=True)
