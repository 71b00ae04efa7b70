#!/usr/bin/env python3
"""Aggregate the report.json files written by scripts/results.sh into the markdown table of
docs/results.md (mean and sample standard deviation of top-1 over seeds)."""
import glob, json, statistics, sys

rows = {}
for path in sorted(glob.glob("runs/results-*-s*/final/eval/*/report.json")):
    run = path.split("/")[1]                       # results-<loss>-s<seed>
    loss = run.split("-")[1]
    rep = json.load(open(path))
    proto, enc = rep["protocol"], rep["encoder"]
    folder = path.split("/")[-2]                   # e.g. finetune, supervised-random_init-e60
    tag = folder.rsplit("-", 1)[1] if folder.rsplit("-", 1)[-1].startswith("e") else ""
    epochs = ((rep.get("config") or {}).get("finetune") or {}).get("epochs")
    budget = f", {epochs} epochs" if epochs else ""
    if enc == "random_init" and proto in ("linear_probe", "knn"):
        key = (f"random init ({proto.replace('_', ' ')})", "random_init")
        if loss != "mix":
            continue                               # the same baseline for both losses
    elif proto == "supervised":
        key = (f"supervised from scratch{budget}", "supervised")
    elif proto == "finetune":
        key = (f"fine-tuned NeuroMoCo ({loss}){budget}", "finetune")
    else:
        name = "MixInfoNCE (lambda = 0.5)" if loss == "mix" else "InfoNCE (lambda = 1)"
        key = (f"{name}, {proto.replace('_', ' ')}", proto)
    del tag
    rows.setdefault(key[0], []).append((rep["seed"], rep["top1"], rep["top5"]))

print("| encoder / protocol | top-1 mean ± sd | top-5 mean | per seed (top-1) | seeds |")
print("|---|---|---|---|---|")
for name, vals in rows.items():
    t1 = [v[1] * 100 for v in sorted(vals)]
    t5 = [v[2] * 100 for v in vals]
    sd = statistics.stdev(t1) if len(t1) > 1 else 0.0
    print(f"| {name} | {statistics.mean(t1):.1f} ± {sd:.1f} % | {statistics.mean(t5):.1f} % | "
          f"{', '.join(f'{v:.1f}' for v in t1)} | {len(t1)} |")
