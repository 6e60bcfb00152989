#!/usr/bin/env python3
"""Summarize `cargo bench -p qmp-proto --bench decode` from criterion's files.

Prints, per input and feeding, MB/s from the median sample and from the best sample, and each as a
ratio to the serde_json floor of the same input. On a shared, noisy machine the best sample is the
steadiest figure (noise only ever adds time); compare ratios from one run.
Usage: qmp-proto/benches/summarize.py [CARGO_TARGET_DIR]   (default: target)
"""
import json, os, statistics, sys

root = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "target", "criterion")
SIZES = {}  # bytes per iteration, from the benchmark's throughput


def load(group, bench):
    d = os.path.join(root, group, bench, "new")
    sample = json.load(open(os.path.join(d, "sample.json")))
    meta = json.load(open(os.path.join(d, "benchmark.json")))
    size = meta["throughput"]["Bytes"]
    per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]  # ns
    mbps = lambda ns: size / ns * 1e3  # bytes/ns -> MB/s
    return mbps(statistics.median(per_iter)), mbps(min(per_iter))


print("| input | feeding | median MB/s | ratio to floor | best MB/s | ratio to floor |")
print("|---|---|---:|---:|---:|---:|")
for name in ["qsd-compact", "system-pretty", "events-100k"]:
    group = f"decode_{name}"
    floor = load(group, "serde_json floor")
    rows = [("serde_json floor", floor)]
    for feed in ["whole", "4KiB", "64B", "1B"]:
        rows.append((f"qmp-proto {feed}", load(group, os.path.join("qmp-proto", feed))))
    for label, (med, best) in rows:
        print(f"| {name} | {label} | {med:.0f} | {med / floor[0]:.2f} | {best:.0f} | {best / floor[1]:.2f} |")
