#!/usr/bin/env python3
"""Aggregate the report.json files of scripts/fewlabels.sh into markdown tables: test top-1
(mean ± sample sd over seeds) per label fraction, for the linear probe, kNN and fine-tuning of
each pre-training variant, and the baselines. Fine-tuning rows give the last epoch's accuracy,
the accuracy at the epoch chosen on the validation split, and the maximum over epochs (as the
literature reports it). Usage: scripts/fewlabels_table.py [PREFIX]   (default: fewlabels)"""
import glob, json, re, statistics, sys

prefix = sys.argv[1] if len(sys.argv) > 1 else "fewlabels"
cells = {}          # (row, fraction) -> [values]
fractions = set()
for path in sorted(glob.glob(f"runs/{prefix}-*-s*/final/eval/*/report.json")):
    run = path.split("/")[1]
    m = re.fullmatch(rf"{re.escape(prefix)}-(.+)-(split|off)-s(\d+)", run)
    if not m:
        continue
    loss, sb, seed = m.group(1), m.group(2), int(m.group(3))
    folder = path.split("/")[-2]
    pct = re.search(r"-(\d+)pct", folder)
    frac = float(pct.group(1)) if pct else 100.0
    fractions.add(frac)
    rep = json.load(open(path))
    proto, enc = rep["protocol"], rep["encoder"]
    cfg = rep.get("config") or {}
    variant = f"{loss}, shuffle_bn={sb}"
    if enc == "random_init":
        names = {"linear_probe": "random init, linear probe", "knn": "random init, kNN",
                 "supervised": "supervised from scratch"}
        row = names.get(proto, proto)
    else:
        row = {"linear_probe": f"{variant}: linear probe", "knn": f"{variant}: kNN",
               "finetune": f"{variant}: fine-tuned"}.get(proto, proto)
    if proto in ("finetune", "supervised"):
        vals = {"last": cfg.get("test_top1_last_epoch", rep["top1"]),
                "val-selected": cfg.get("test_top1_at_selected_epoch"),
                "max over epochs (as the literature reports it)":
                    cfg.get("test_top1_max_over_epochs_as_the_literature_reports_it")}
        for k, v in vals.items():
            if v is not None:
                cells.setdefault((f"{row} [{k}]", frac), []).append((seed, v))
    else:
        cells.setdefault((row, frac), []).append((seed, rep["top1"]))

fr = sorted(fractions)
rows = sorted({r for r, _ in cells}, key=lambda r: (not r.startswith(("random", "supervised")), r))
print("| encoder / protocol | " + " | ".join(f"{f:g} % labels" for f in fr) + " |")
print("|---|" + "---|" * len(fr))
for r in rows:
    out = []
    for f in fr:
        v = [x[1] * 100 for x in sorted(cells.get((r, f), []))]
        if not v:
            out.append("–")
        elif len(v) == 1:
            out.append(f"{v[0]:.1f} % (1 seed)")
        else:
            out.append(f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f} % ({len(v)} seeds)")
    print(f"| {r} | " + " | ".join(out) + " |")
