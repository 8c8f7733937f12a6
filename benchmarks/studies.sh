#!/usr/bin/env bash
# The zoo's headline studies from one command, timed: on one GPU, `make studies` (goal < 10 min).
#   benchmarks/studies.sh OUT_DIR [GRID ...]      (default grids below; PARALLEL runs at once per grid)
# Each grid's results, table and figures go to OUT_DIR/<grid>/, its console to OUT_DIR/<grid>.log, and
# the wall times to OUT_DIR/times.txt. Extra CLI overrides for every run: ZOO_ARGS='[--trainer.logger, false]'.
# GRIDS_AT_ONCE grids run side by side (default 1), each with PARALLEL runs at once (default 4).
set -u
out=${1:-runs/studies}; shift || true
grids=("$@")
[ ${#grids[@]} -gt 0 ] || grids=(spoken_digits_loso spoken_digits_ablation spoken_digits_svm_ablation
                                  spoken_digits_cnn_vs_cbam mfcc_representations reduced_mnist_real_x_aug)
py=${PYTHON:-python}
parallel=${PARALLEL:-4}
at_once=${GRIDS_AT_ONCE:-1}
mkdir -p "$out"
start=$(date +%s)
status=0
one() {
  local g=$1 t0
  t0=$(date +%s)
  $py -m zoo.tools.grid "configs/grids/$g.yaml" --max_parallel "$parallel" --out "$out/$g" \
      ${ZOO_ARGS:+--args "$ZOO_ARGS"} > "$out/$g.log" 2>&1
  local rc=$?
  echo "$g: exit $rc, $(( $(date +%s) - t0 )) s" | tee -a "$out/times.txt"
  return $rc
}
for g in "${grids[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$at_once" ]; do wait -n || status=1; done
  one "$g" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || status=1; done
echo "all: $(( $(date +%s) - start )) s on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu)" \
  | tee -a "$out/times.txt"
exit $status
