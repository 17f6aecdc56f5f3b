#!/usr/bin/env bash
# Steps of a GPU-host session; run from the project root on the host by the device tool.
#
# The device tool re-syncs the project tree before every call, deleting files that are not
# in the local checkout (dvc.lock, reports/ made on the host) — seen 2026-11-23. So the
# pipeline runs in workspaces outside the tree (/tmp/ws/<model>) that keep dvc.lock,
# reports, artifacts and the DVC cache between calls; each call refreshes their code.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
step=${1:?usage: session.sh part pNN | install | variant NAME MODEL [OVERRIDE...] | repro WS [TARGET...] | early WS... | best WS... | second WS | warm WS PREC | ab WS PREC NAME OVERRIDE... | tests [PYTEST_ARG...] | collect}
export PYTHONUNBUFFERED=1 PIPELINE_LOG_LEVEL=${PIPELINE_LOG_LEVEL:-INFO}
WS=${WS:-/tmp/ws}  # workspaces: one per model config name, or per variant (see `variant`)
# DEADLINE (epoch seconds, set by the caller for the whole device call) bounds every long
# step, keeping RESERVE seconds for `collect`; a step that cannot start in time says so.
RESERVE=${RESERVE:-25}
left() { echo $(( ${DEADLINE:-$(( $(date +%s) + 560 ))} - $(date +%s) - RESERVE )); }
need() { [ "$(left)" -ge "$1" ] || { echo "SKIPPED $step: $(left) s left, needs $1"; exit 3; }; }

host_env() {
  # DVC and HOST_PYTHON already set (a local dry run): use them as they are
  if [ -n "${DVC:-}" ] && [ -n "${HOST_PYTHON:-}" ]; then return 0; fi
  # shellcheck disable=SC1091
  source /opt/trt/env.sh
  mkdir -p /tmp/bin && ln -sf "$HOST_PYTHON" /tmp/bin/python && export PATH=/tmp/bin:$PATH
}

compose_params() {  # in a workspace: $1 the params file to write, composed as DVC does from
  # conf/ with the workspace's `overrides` file, then any further Hydra overrides
  "$HOST_PYTHON" -c "import os, sys; from dvc.utils.hydra import compose_and_dump as c; c(sys.argv[1], os.path.abspath('conf'), None, 'config', '', open('overrides').read().split() + sys.argv[2:])" "$@"
}

workspace() {  # $1: a model config name, or a variant's name; prints the workspace path
  local ws=$WS/$1
  [ -f "$ws/overrides" ] || { mkdir -p "$ws" && echo "model=$1" > "$ws/overrides"; }
  mkdir -p "$ws/data"
  rm -rf "$ws/stages" "$ws/conf"
  cp -r conf stages dvc.yaml .dvcignore "$ws"/ && cp -r data/raw "$ws/data/"
  mkdir -p "$ws/.dvc" && cp .dvc/config "$ws/.dvc/config"
  (cd "$ws" && "$DVC" config --local core.no_scm true >/dev/null \
     && compose_params params.yaml \
     && rm -f .dvc/tmp/rwlock .dvc/tmp/lock)
  echo "$ws"
}

model_of() {  # $1: workspace path; the model name its params.yaml says (artifact paths use it)
  sed -n '/^model:/,/^[^ ]/s/^  name: *//p' "$1/params.yaml" | head -1
}

case "$step" in
  part)
    mkdir -p /tmp/gpu-bundle && cp ".gpu-bundle/$2/part" "/tmp/gpu-bundle/$2" && ls /tmp/gpu-bundle | tr '\n' ' ' ;;
  variant)  # $2 a new workspace name, $3 the model config, then Hydra overrides (no spaces):
    # a workspace of its own, e.g. to train two recipes at once in `early`
    [ $# -ge 3 ] || { echo "usage: session.sh variant NAME MODEL [OVERRIDE...]" >&2; exit 2; }
    mkdir -p "$WS/$2" && printf '%s\n' "model=$3" "${@:4}" > "$WS/$2/overrides" && cat "$WS/$2/overrides" ;;
  install)
    cat /tmp/gpu-bundle/p* | tar -x -C /tmp && bash /tmp/bundle/install.sh /opt/trt 2>&1 | tail -1
    rm -rf /tmp/gpu-bundle /tmp/bundle
    host_env
    "$HOST_PYTHON" -c "import onnxruntime as o, torch, dvc; print('ort', o.__version__, o.get_available_providers()); print('torch', torch.__version__, torch.cuda.get_device_name()); print('dvc', dvc.__version__)"
    "$TRT_PYTHON" -c "import tensorrt; print('trt', tensorrt.__version__)" ;;
  repro)  # $2 model, then optional DVC targets and options; stops cleanly at the deadline (DVC
    # resumes next call). NEED=seconds: do not start unless that much time is left (a stage cut
    # by the deadline is time lost).
    need "${NEED:-30}"; host_env; ws=$(workspace "$2"); model=$2; shift 2
    (cd "$ws" && timeout --signal=INT "$(left)" "$DVC" repro "$@" 2>&1) \
      | grep --line-buffered -v -E 'it/s\]|s/it\]' | tee -a "$OUT/repro-$model.log" | grep -E "Running stage|didn't change|INFO|ERROR|error:"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ]; then echo "PIPELINE COMPLETE ($model $*)"; else echo "PIPELINE STOPPED rc=$rc ($model $*): call again"; fi
    exit "$rc" ;;
  early)  # each workspace's data/train/export/calibrate stages, all at once: nothing there is
    # timed but training's wall time, which the report then says was shared. Not the GPU
    # tests: TensorRT times every tactic, so their builds crawl on a busy GPU (2 of 14 tests
    # in ~500 s next to two trainings, 2026-11-23); run `tests` alone.
    # The stages hold the GPU one at a time by default (stages/lib/gpus.py): here they share it.
    need 120; shift; pids=(); export PIPELINE_GPU_LOCK=off
    for m in "$@"; do bash "$0" repro "$m" calibrate probe > "$OUT/early-$m.out" 2>&1 & pids+=($!); done
    rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
    for m in "$@"; do tail -4 "$OUT/early-$m.out"; done; exit "$rc" ;;
  second)  # a repro right after a complete one: should run nothing but the probe
    need 30; host_env; ws=$(workspace "$2"); (cd "$ws" && timeout --signal=INT "$(left)" "$DVC" repro 2>&1) | tee "$OUT/second-repro-$2.log" ;;
  warm)  # rebuild an engine from a copy of its timing cache: cold vs warm build time
    need 60; host_env; ws=$WS/$2; prec=$3; m=$(model_of "$ws")
    (cd "$ws" && rm -rf /tmp/warm && mkdir -p /tmp/warm && cp "artifacts/$m/engines/$prec/timing.cache" /tmp/warm/ \
      && timeout "$(left)" python -m stages.build --precision "$prec" --onnx "artifacts/$m/onnx/$prec.onnx" \
         --fingerprint artifacts/fingerprint.json --out-dir /tmp/warm --report "$OUT/warm-build-$2-$prec.json" \
      && cp "reports/$m/build/$prec.json" "$OUT/cold-build-$2-$prec.json") 2>&1 | tail -3 ;;
  ab)  # $2 workspace, $3 precision, $4 a name, then Hydra overrides: an A/B of build or bench
    # settings on a trained workspace. The engine is rebuilt (from a copy of the cold build's
    # timing cache) with the workspace's overrides plus these, then TensorRT is benchmarked
    # and its test-set accuracy evaluated: a default can change only with both. E.g.
    # `ab resnet50 int8 io build.io_fp16=true`, `ab resnet50 int8 opt5 build.opt_level=5`.
    # With a calibrate.* override (INT8), the Q/DQ model is first calibrated again into the
    # A/B folder: `ab resnet50 int8 pool calibrate.quantize_pools=true`.
    [ $# -ge 5 ] || { echo "usage: session.sh ab WS PREC NAME OVERRIDE..." >&2; exit 2; }
    need "${NEED:-110}"; host_env; ws=$WS/$2; prec=$3; name=$4; shift 4; d=${AB_DIR:-/tmp}/ab-$name-$prec; m=$(model_of "$ws")
    onnx=artifacts/$m/onnx/$prec.onnx; recal=false
    case " $* " in *" calibrate."*) onnx=$d/$prec.onnx; recal=true ;; esac
    # what every per-backend stage takes (stages/lib/fanout.py add_arguments), for this engine
    per_backend=(--params "$d/params.yaml" --precision "$prec" --checkpoint "artifacts/$m/checkpoint.pt"
                 --onnx "$onnx" --engine-dir "$d" --backend tensorrt)
    (cd "$ws" && rm -rf "$d" && mkdir -p "$d" && { cp "artifacts/$m/engines/$prec/timing.cache" "$d/" || true; } \
      && compose_params "$d/params.yaml" "$@" \
      && { ! $recal || timeout "$(left)" python -m stages.calibrate --params "$d/params.yaml" \
             --onnx "artifacts/$m/onnx/fp32.onnx" --calib data/prepared/calib.npz --out "$onnx" \
             --ranges "$d/ranges.json" --report "$OUT/ab-$name-calibrate.json"; } \
      && timeout "$(left)" python -m stages.build --params "$d/params.yaml" --precision "$prec" \
         --onnx "$onnx" --fingerprint artifacts/fingerprint.json --out-dir "$d" \
         --report "$OUT/ab-$name-build-$prec.json" \
      && timeout "$(left)" "$TRT_PYTHON" -m stages.benchmark "${per_backend[@]}" --part "$OUT/ab-$name-bench-$prec.json" \
      && timeout "$(left)" "$TRT_PYTHON" -m stages.evaluate "${per_backend[@]}" --part "$OUT/ab-$name-eval-$prec.json" \
         --test data/prepared/test.npz --reference "artifacts/$m/reference_logits.npy") 2>&1 | grep -E "INFO|ERROR|error" ;;
  best)  # prints the workspace, of those named, whose trained model has the highest test top-1
    shift; for w in "$@"; do m=$(model_of "$WS/$w" 2>/dev/null)
      python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['test_top1'], sys.argv[2])" "$WS/$w/reports/$m/train.json" "$w" 2>/dev/null
    done | sort -rn | head -1 | cut -d' ' -f2 ;;
  tests)  # optional pytest arguments after it, e.g. `tests -k implicit`
    need 60; host_env; shift; timeout "$(left)" python -m pytest -m "gpu or tensorrt" -v --durations=15 -p no:cacheprovider tests/test_gpu.py "$@" 2>&1 | tee "$OUT/gpu-tests.log" | tail -25 ;;
  collect)  # everything worth keeping, in one file under $OUT
    rm -rf /tmp/collect && mkdir -p /tmp/collect
    for ws in "$WS"/*/; do m=$(basename "$ws"); mkdir -p "/tmp/collect/$m"
      (cd "$ws" && cp -r reports dvc.lock params.yaml "/tmp/collect/$m/" 2>/dev/null
       # engines' build/inspector/layer JSON, and the INT8 range cache (to diagnose a calibration)
       for d in artifacts/*/engines/*/ artifacts/*/calibration/; do mkdir -p "/tmp/collect/$m/$d" && cp "$d"/*.json "/tmp/collect/$m/$d" 2>/dev/null; done)
    done
    # The call's logs go in too (only 8 files come back from $OUT).
    mkdir -p /tmp/collect/out && find "$OUT" -maxdepth 1 -type f ! -name results.tgz -exec cp {} /tmp/collect/out/ \;
    tar -C /tmp/collect -czf "$OUT/results.tgz" . && ls -la "$OUT" ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
