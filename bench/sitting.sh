#!/usr/bin/env bash
# One sitting, two versions alternated (the machine's speed drifts between runs; alternating
# puts both versions in each drift): throughput, latency and chaos, each version's own venv.
#   bench/sitting.sh BEFORE_TREE AFTER_TREE [OUT_DIR]
# BEFORE_TREE / AFTER_TREE: checkouts with `make install` done (e.g. `git worktree add`).
# Each run's output goes to OUT_DIR/<run>.txt; OUT_DIR/summary.txt has start/end and load.
set -u
before=${1:?usage: bench/sitting.sh BEFORE_TREE AFTER_TREE [OUT_DIR]}
after=${2:?usage: bench/sitting.sh BEFORE_TREE AFTER_TREE [OUT_DIR]}
out=${3:-sitting-$(date -u +%Y%m%dT%H%M)}
mkdir -p "$out"
run() { # tag tree module args...
  local tag=$1 tree=$2; shift 2
  echo "== $tag $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.txt"
  (cd "$tree" && .venv/bin/python -m "$@") >"$out/$tag.txt" 2>&1
  echo "   rc=$? end $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.txt"
}
run thr-before-1 "$before" bench.throughput --documents 1000
run thr-after-1 "$after" bench.throughput --documents 1000
run lat-after-1 "$after" bench.latency --rate 50 --seconds 20
run lat-before-1 "$before" bench.latency --rate 50 --seconds 20
run thr-after-2 "$after" bench.throughput --documents 1000
run thr-before-2 "$before" bench.throughput --documents 1000
run lat-before-2 "$before" bench.latency --rate 50 --seconds 20
run lat-after-2 "$after" bench.latency --rate 50 --seconds 20
run chaos-before "$before" bench.chaos --quick
run chaos-after "$after" bench.chaos --quick
echo "$out"
