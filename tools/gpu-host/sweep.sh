#!/usr/bin/env bash
# One sweep on N GPUs (N experiments at a time) and the same sweep on one GPU, from one trained
# baseline, on DVC's queue (python -m stages.sweep); then a comparison of the two wall times
# and of every benchmark figure, each with the GPU it ran on.
#
# On the GPU host, after `session.sh install` (the bundle with dvc), from the project root, as a
# background job that outlives the command (README.md):
#   bash tools/gpu-host/session.sh bg sweep "sweep all"
# `all` runs base, run N, run 1 and compare, each only when its result is missing and the
# time left (DEADLINE) allows it, so it resumes where it stopped; it prints SWEEP CHECK
# COMPLETE at the end, and every call leaves $OUT/sweep-check.tgz (reports, manifests, queue
# logs, nvidia-smi).
#
# Environment (defaults in brackets):
#   SWEEP_GPUS   N [the GPUs nvidia-smi -L lists]
#   SWEEP_GRID   the points: Hydra overrides with comma lists [2 x 2 INT8 calibration settings,
#                2 x 2 x 2 with more than four GPUs]
#   SWEEP_BASE   overrides shared by the baseline and every point [see BASE below]
#   SWEEP_POINT_S  seconds one point takes alone on a GPU, to plan a bounded call [110]
#   SWEEP_WS     where the repositories live [/tmp/sweep]
#   SWEEP_REPORT where the comparison is written [/tmp/sweep-check]
# Without a GPU (DVC and HOST_PYTHON set, a tiny SWEEP_BASE) the same steps run on the CPU:
# tests/test_gpu_host_tools.py does that.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
step=${1:?usage: sweep.sh all | base | run K | compare | pack}
export PYTHONUNBUFFERED=1 PIPELINE_LOCK_DIR=${PIPELINE_LOCK_DIR:-/tmp/trt-pipeline/gpu-locks}
ROOT_WS=${SWEEP_WS:-/tmp/sweep}  # not under /tmp/ws: session.sh collect takes each folder there as a workspace
N=${SWEEP_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')}
[ "${N:-0}" -ge 1 ] || N=1
REPORT=${SWEEP_REPORT:-/tmp/sweep-check}
RESERVE=${RESERVE:-25}
left() { echo $(( ${DEADLINE:-$(( $(date +%s) + 560 ))} - $(date +%s) - RESERVE )); }
need() { [ "$(left)" -ge "$1" ] || { echo "SKIPPED $2: $(left) s left, needs $1: call again"; return 3; }; }

# CIFAR-10 when its archive came with the tree (carry data/raw/cifar10-jpg.tar.gz), else
# synthetic images: the timings are the point here, the report says which data it was.
data=synthetic; [ -f data/raw/cifar10-jpg.tar.gz ] && data=cifar10
# Short training (about 30 s on an H200); INT8 TensorRT only; one build profile (half the build
# time); no layer profile; no served benchmark; calibration keeps its method; the quality gate
# off, because a point that loses accuracy must still be timed (its top-1 is in the report).
BASE=${SWEEP_BASE:-"data=$data train.epochs=10 precision=int8 backends=[tensorrt] calibrate.method=minmax \
calibrate.fallback_methods=[] calibrate.num_images=512 build.profiles=[{min:1,opt:256,max:1024}] \
bench.layer_profile=false quality.max_top1_drop=100.0 serve.enabled=false"}
# Points of about equal cost, each its own Q/DQ model and engine: four, or eight for more GPUs.
grid="calibrate.per_channel=true,false calibrate.quantize_residual_add=false,true"
[ "$N" -gt 4 ] && grid="$grid calibrate.quantize_pools=false,true"
GRID=${SWEEP_GRID:-$grid}
POINT_S=${SWEEP_POINT_S:-110}
# The baseline fixes BASE and GRID for the later calls (which may not carry the data archive).
[ -f "$ROOT_WS/base.args" ] && BASE=$(cat "$ROOT_WS/base.args") && GRID=$(cat "$ROOT_WS/grid.args")

host_env() {  # as in session.sh: DVC and HOST_PYTHON set (a local run) are used as they are
  if [ -n "${DVC:-}" ] && [ -n "${HOST_PYTHON:-}" ]; then return 0; fi
  # shellcheck disable=SC1091
  source /opt/trt/env.sh
  mkdir -p /tmp/bin && ln -sf "$HOST_PYTHON" /tmp/bin/python && export PATH=/tmp/bin:$PATH
}

commit_all() {  # in a repository: commit every file git does not ignore (DVC's git layer:
  # the host has no git executable)
  GIT_AUTHOR_NAME=sweep GIT_AUTHOR_EMAIL=sweep@localhost GIT_COMMITTER_NAME=sweep \
  GIT_COMMITTER_EMAIL=sweep@localhost "$HOST_PYTHON" -c "import os, sys; from scmrepo.git import Git
g = Git('.'); g.add([p for p in os.listdir('.') if p != '.git']); g.commit(sys.argv[1])" "$1"
}

base() {  # a git + DVC repository with the trained baseline: prepare, train and export done
  [ -f "$ROOT_WS/base.done" ] && { echo "base: done"; return 0; }
  need 300 base || return 3
  local ws=$ROOT_WS/base
  rm -rf "$ws" && mkdir -p "$ws/data" && cp -r conf stages dvc.yaml .dvcignore .gitignore "$ws"/ && cp -r data/raw "$ws/data/"
  # shellcheck disable=SC2086
  (cd "$ws" && "$HOST_PYTHON" -c "from scmrepo.git import Git; Git.init('.')" && "$DVC" init -q \
    && "$DVC" config hydra.enabled True \
    && "$HOST_PYTHON" -c "import os, sys; from dvc.utils.hydra import compose_and_dump as c; c('params.yaml', os.path.abspath('conf'), None, 'config', '', sys.argv[1:])" $BASE \
    && timeout --signal=INT "$(left)" "$DVC" repro export 2>&1 | grep --line-buffered -E "Running stage|INFO|ERROR|error:" \
    && [ "${PIPESTATUS[0]}" = 0 ] && commit_all "baseline: $BASE") || { echo "base: FAILED"; return 1; }
  printf '%s\n' "$BASE" > "$ROOT_WS/base.args" && printf '%s\n' "$GRID" > "$ROOT_WS/grid.args"
  touch "$ROOT_WS/base.done"; echo "base: done"
}

run() {  # $1 = K: the grid, K experiments at a time, on the first K GPUs
  local k=$1 ws=$ROOT_WS/run-$1gpu
  [ -f "$ws/reports/sweep/summary.md" ] && { echo "run $k: done"; return 0; }
  [ -f "$ROOT_WS/base.done" ] || { echo "run $k: no baseline yet"; return 3; }
  # shellcheck disable=SC2086
  local points; points=$("$HOST_PYTHON" -c "import sys; from stages.lib.sweep.grid import grid_points, parse_grid as p; print(len(grid_points(p(sys.argv[1:]))))" $BASE $GRID) || return 1
  need $(( POINT_S * ((points + k - 1) / k) + 60 )) "run $k ($points points)" || return 3
  # A copy with its own DVC cache: nothing one run computes can be reused by the other.
  rm -rf "$ws" && cp -a "$ROOT_WS/base" "$ws" && rm -rf "$ws/.dvc/tmp"
  local visible; visible=$(seq -s, 0 $((k - 1)))
  # shellcheck disable=SC2086
  (cd "$ws" && CUDA_VISIBLE_DEVICES=$visible python -m stages.sweep run $BASE $GRID --jobs "$k" --poll 2 \
     --timeout "$(( $(left) - 20 ))" 2>&1 | tee "$ws/sweep.log" | grep --line-buffered -v -E 'it/s\]|s/it\]')
  local rc=${PIPESTATUS[0]}
  (cd "$ws" && for name in $("$HOST_PYTHON" -c "import json; print(' '.join(p['name'] for p in json.load(open('reports/sweep/sweep.json'))['points']))" 2>/dev/null); do
     mkdir -p reports/sweep/logs && "$DVC" queue logs "$name" > "reports/sweep/logs/$name.log" 2>&1; done)
  if [ "$rc" != 0 ] && [ ! -f "$ws/reports/sweep/summary.md" ] || grep -q "still running" "$ws/sweep.log"; then
    (cd "$ws" && "$DVC" queue stop --kill >/dev/null 2>&1)
    rm -f "$ws/reports/sweep/summary.md"  # cut short: the next call runs it again, whole
    echo "run $k: STOPPED (rc=$rc): call again"; return 3
  fi
  echo "run $k: done (rc=$rc)"
}

compare() {
  for k in 1 "$N"; do [ -f "$ROOT_WS/run-${k}gpu/reports/sweep/summary.md" ] || { echo "compare: run $k missing"; return 3; }; done
  python -m stages.sweep compare "$ROOT_WS/run-1gpu/reports/sweep" "$ROOT_WS/run-${N}gpu/reports/sweep" --out "$REPORT" \
    && echo "SWEEP CHECK COMPLETE" && sed -n '1,12p' "$REPORT/compare.md"
}

pack() {  # everything worth keeping, in one file under $OUT
  mkdir -p "$REPORT"
  for d in "$ROOT_WS"/run-*gpu; do [ -d "$d/reports/sweep" ] && mkdir -p "$REPORT/$(basename "$d")" \
    && cp -r "$d/reports/sweep/." "$REPORT/$(basename "$d")/" && cp "$d/sweep.log" "$REPORT/$(basename "$d")/" 2>/dev/null; done
  nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,clocks.max.sm --format=csv > "$REPORT/nvidia-smi.csv" 2>&1
  printf 'N=%s\nBASE=%s\nGRID=%s\n' "$N" "$BASE" "$GRID" > "$REPORT/settings.txt"
  tar -C "$(dirname "$REPORT")" -czf "$OUT/sweep-check.tgz" "$(basename "$REPORT")" && ls -la "$OUT/sweep-check.tgz"
}

host_env
case "$step" in
  base) base ;;
  run) run "${2:?usage: sweep.sh run K}" ;;
  compare) compare ;;
  pack) pack ;;
  all)
    rc=0
    base && run "$N" && run 1 && compare || rc=$?
    pack; exit "$rc" ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
