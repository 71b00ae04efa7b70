#!/usr/bin/env bash
# Shuffled BN on the key side, on the synthetic default: 3 seeds x moco.shuffle_bn = split | off,
# each pre-trained with the default recipe, then linear probe + kNN on the test split; prints a
# markdown table (docs/results.md, "Shuffled BN"). Usage: scripts/shuffle_bn_ablation.sh [NMOCO_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then cargo build --release -q -p nmoco-cli; bin=target/release/nmoco; fi
out=${RESULTS_DIR:-runs/results}
mkdir -p "$out"
for seed in ${SEEDS:-0 1 2}; do
  for sb in split off; do
    name=ablate-sb-$sb-s$seed
    [ -f "runs/$name/final/encoder.safetensors" ] || \
      "$bin" pretrain --name "$name" --set run.seed="$seed" --set "moco.shuffle_bn=\"$sb\"" > "$out/$name.pretrain.txt" 2>&1
    "$bin" linear-probe --checkpoint "runs/$name" --set seed="$seed" > "$out/$name.probe.txt" 2>&1
  done
done
python3 - "$out" <<'PY'
import glob, json, re, statistics, sys
out = sys.argv[1]
rows = {}
for sb in ("split", "off"):
    for path in sorted(glob.glob(f"runs/ablate-sb-{sb}-s*/final/eval/*/report.json")):
        folder = path.split("/")[-2]
        if folder not in ("linear_probe", "knn"):
            continue
        seed = int(re.search(r"-s(\d+)/", path).group(1))
        rows.setdefault((sb, folder), []).append((seed, 100 * json.load(open(path))["top1"]))
    for path in sorted(glob.glob(f"{out}/ablate-sb-{sb}-s*.pretrain.txt")):
        seed = int(re.search(r"-s(\d+)\.pretrain", path).group(1))
        text = open(path).read()
        m = re.search(r"throughput:\s+([0-9.]+)", text)
        if m:
            rows.setdefault((sb, "samples/s"), []).append((seed, float(m.group(1))))
print("| shuffle_bn | protocol | test top-1 mean ± sd | per seed |")
print("|---|---|---|---|")
for (sb, proto), vals in sorted(rows.items()):
    vals.sort()
    xs = [v for _, v in vals]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    unit = "" if proto == "samples/s" else " %"
    print(f"| {sb} | {proto} | {statistics.mean(xs):.1f} ± {sd:.1f}{unit} | "
          + ", ".join(f"{x:.1f}" for x in xs) + f" ({len(xs)} seeds) |")
PY
