#!/usr/bin/env bash
# Run the pipeline on an offline GPU host: the steps one transfer-and-command at a time can
# take. Run from the project root on the host (see tools/gpu-host/README.md).
#
# The host's copy of the project is replaced at every transfer, so each pipeline runs in a
# workspace outside it (/tmp/ws/<name>) that keeps dvc.lock, reports, artifacts and the DVC
# cache between commands; every step refreshes the workspace's code and config first.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
usage="usage: session.sh part pNN | install | serve-part pNN | serve-install | workspace NAME [OVERRIDE...] | repro NAME [DVC-ARG...] |
  early NAME... | bg JOB STEP... | wait SECONDS | tests [PYTEST-ARG...] | ab NAME PREC LABEL OVERRIDE... |
  sweep STEP... | collect"
step=${1:?$usage}
export PYTHONUNBUFFERED=1 PIPELINE_LOG_LEVEL=${PIPELINE_LOG_LEVEL:-INFO}
WS=${WS:-/tmp/ws}    # workspaces
BG=${BG:-/tmp/bg}    # background jobs: <job>.log, <job>.rc once finished
# DEADLINE (epoch seconds) bounds the long steps of one command, keeping RESERVE seconds for
# `collect`; a step that cannot finish in time does not start.
RESERVE=${RESERVE:-25}
left() { echo $(( ${DEADLINE:-$(( $(date +%s) + 560 ))} - $(date +%s) - RESERVE )); }
need() { [ "$(left)" -ge "$1" ] || { echo "SKIPPED $step: $(left) s left, needs $1"; exit 3; }; }

host_env() {  # the bundle's interpreters (install), unless DVC and HOST_PYTHON are set already;
  # the serving interpreter (serve-install) once it is installed
  # shellcheck disable=SC1091
  if [ -f /opt/serve/env.sh ] && [ -z "${SERVE_PYTHON:-}" ]; then source /opt/serve/env.sh; fi
  if [ -n "${DVC:-}" ] && [ -n "${HOST_PYTHON:-}" ]; then return 0; fi
  # shellcheck disable=SC1091
  source /opt/trt/env.sh
  mkdir -p /tmp/bin && ln -sf "$HOST_PYTHON" /tmp/bin/python && export PATH=/tmp/bin:$PATH
}

compose_params() {  # $1 the params file to write: conf/ composed with the workspace's
  # `overrides` file, then any further Hydra overrides, as `dvc exp run -S` composes it
  "$HOST_PYTHON" -c "import os, sys; from dvc.utils.hydra import compose_and_dump as c; c(sys.argv[1], os.path.abspath('conf'), None, 'config', '', open('overrides').read().split() + sys.argv[2:])" "$@"
}

overrides_for() {  # a new workspace's overrides: experiment=NAME when conf/experiment/NAME.yaml exists
  if [ -f "conf/experiment/$1.yaml" ]; then echo "experiment=$1"; fi
  printf '%s\n' "${@:2}"
}

workspace() {  # $1 a workspace name; refreshes its code and params, prints its path
  local ws=$WS/$1
  [ -f "$ws/overrides" ] || { mkdir -p "$ws" && overrides_for "$1" > "$ws/overrides"; }
  mkdir -p "$ws/data"
  rm -rf "$ws/stages" "$ws/conf"
  cp -r conf stages dvc.yaml .dvcignore "$ws"/ && cp -r data/raw "$ws/data/"
  mkdir -p "$ws/.dvc" && cp .dvc/config "$ws/.dvc/config"
  (cd "$ws" && "$DVC" config --local core.no_scm true >/dev/null \
     && compose_params params.yaml \
     && rm -f .dvc/tmp/rwlock .dvc/tmp/lock)
  echo "$ws"
}

model_of() {  # $1 a workspace path: the model name its params.yaml says (artifact paths use it)
  sed -n '/^model:/,/^[^ ]/s/^  name: *//p' "$1/params.yaml" | head -1
}

case "$step" in
  part)  # one bundle part per transfer, carried as .gpu-bundle/pNN
    mkdir -p /tmp/gpu-bundle && cp ".gpu-bundle/$2/part" "/tmp/gpu-bundle/$2" && ls /tmp/gpu-bundle | tr '\n' ' ' ;;
  install)
    cat /tmp/gpu-bundle/p* | tar -x -C /tmp && bash /tmp/bundle/install.sh /opt/trt 2>&1 | tail -1
    rm -rf /tmp/gpu-bundle /tmp/bundle
    host_env
    "$HOST_PYTHON" -c "import onnxruntime as o, torch, dvc; print('onnxruntime', o.__version__, o.get_available_providers()); print('torch', torch.__version__, torch.cuda.get_device_name()); print('dvc', dvc.__version__)"
    "$TRT_PYTHON" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" ;;
  serve-part)  # one part of the serving interpreter (tools/serving/make-bundle.sh), as .serve-bundle/pNN
    mkdir -p /tmp/serve-parts && cp ".serve-bundle/$2/part" "/tmp/serve-parts/$2" && ls /tmp/serve-parts | tr '\n' ' ' ;;
  serve-install)  # after install: the serving interpreter in /opt/serve (SERVE_PYTHON for the serve stage)
    cat /tmp/serve-parts/p* | tar -x -C /tmp && bash /tmp/serve-bundle/install.sh /opt/trt /opt/serve 2>&1 | tail -1
    rm -rf /tmp/serve-parts /tmp/serve-bundle
    host_env
    "$SERVE_PYTHON" -c "import numpy, pytriton, tensorrt; from importlib.metadata import version as v; print('serving: numpy', numpy.__version__, 'pytriton', v('nvidia-pytriton'), 'tensorrt', tensorrt.__version__)" ;;
  workspace)  # $2 a name, then Hydra overrides (no spaces): a workspace of its own, e.g. two
    # training recipes side by side. A name of conf/experiment/ selects that experiment.
    [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
    mkdir -p "$WS/$2" && overrides_for "$2" "${@:3}" > "$WS/$2/overrides" && cat "$WS/$2/overrides" ;;
  repro)  # $2 a workspace, then DVC targets/options. Stops cleanly at the deadline; DVC goes on
    # from there next time (a training continues from its resume state).
    need "${NEED:-30}"; host_env; ws=$(workspace "$2"); name=$2; shift 2
    (cd "$ws" && timeout --signal=INT "$(left)" "$DVC" repro "$@" 2>&1) \
      | grep --line-buffered -v -E 'it/s\]|s/it\]' | tee -a "$OUT/repro-$name.log" | grep -E "Running stage|didn't change|INFO|ERROR|error:"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ]; then echo "PIPELINE COMPLETE ($name $*)"; else echo "PIPELINE STOPPED rc=$rc ($name $*)"; fi
    exit "$rc" ;;
  early)  # the untimed stages (up to calibrate) of several workspaces at once; training wall
    # times are then shared. Builds, benchmarks and the GPU tests time the GPU: run them alone.
    # Stages hold the GPU one at a time by default (stages/lib/core/gpus.py): these share it.
    need 120; shift; pids=(); export PIPELINE_GPU_LOCK=off
    for w in "$@"; do bash "$0" repro "$w" calibrate probe > "$OUT/early-$w.out" 2>&1 & pids+=($!); done
    rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
    for w in "$@"; do tail -4 "$OUT/early-$w.out"; done; exit "$rc" ;;
  bg)  # $2 a job name, then steps of this script, each one quoted ("repro r50", "tests"),
    # run one after the other in the background, in a process session of their own so that
    # they outlive this command; `wait` follows them
    [ $# -ge 3 ] || { echo "$usage" >&2; exit 2; }
    mkdir -p "$BG"; job=$2; shift 2; rm -f "$BG/$job.rc"
    # its own OUT: a command's $OUT is emptied when the next command starts
    { echo "export DEADLINE=$(( $(date +%s) + 86400 )) OUT=$BG/$job.out; mkdir -p \$OUT; rc=0"
      for s in "$@"; do printf 'echo "== %s ($(date +%%T))"; bash %q %s || rc=$?\n' "$s" "$0" "$s"; done
      printf 'echo $rc > %q\n' "$BG/$job.rc"
    } > "$BG/$job.sh"
    setsid nohup bash "$BG/$job.sh" > "$BG/$job.log" 2>&1 < /dev/null &
    echo "started $job: $*" ;;
  wait)  # until every background job has finished, or $2 seconds; prints where each one is
    end=$(( $(date +%s) + ${2:?seconds} ))
    while [ "$(date +%s)" -lt "$end" ] && ls "$BG"/*.log >/dev/null 2>&1; do
      busy=0; for log in "$BG"/*.log; do [ -f "${log%.log}.rc" ] || busy=1; done
      [ "$busy" = 0 ] && break; sleep 5
    done
    for log in "$BG"/*.log; do [ -f "$log" ] || continue; j=$(basename "$log" .log)
      echo "== $j: $([ -f "$BG/$j.rc" ] && echo "finished rc=$(cat "$BG/$j.rc")" || echo running)"
      grep -E "^== |Running stage|PIPELINE|passed|failed|ERROR|error:" "$log" | tail -6
    done ;;
  tests)  # the GPU and TensorRT tests, alone on the GPU; pytest arguments after it
    need 60; host_env; shift; timeout "$(left)" "$HOST_PYTHON" -m pytest -m "gpu or tensorrt" -v --durations=15 -p no:cacheprovider tests/test_gpu.py "$@" 2>&1 | tee "$OUT/gpu-tests.log" | tail -25 ;;
  ab)  # $2 workspace, $3 precision, $4 a label, then Hydra overrides: an A/B of export, calibrate,
    # build or bench settings on a trained workspace, in its own folder. It re-exports (export.*
    # overrides) or re-calibrates (calibrate.*, and INT8 after a re-export) as the overrides
    # need, rebuilds the engine from a copy of the cold build's timing cache, then benchmarks
    # TensorRT and evaluates its test accuracy: `ab resnet50_224 int8 raw export.raw_input=true`.
    [ $# -ge 5 ] || { echo "$usage" >&2; exit 2; }
    need "${NEED:-110}"; host_env; ws=$WS/$2; prec=$3; label=$4; shift 4
    d=${AB_DIR:-/tmp}/ab-$label-$prec; m=$(model_of "$ws"); onnx_dir=artifacts/$m/onnx
    reexport=false; recal=false
    case " $* " in *" export."*) reexport=true; onnx_dir=$d/onnx ;; esac
    case " $* " in *" calibrate."*) recal=true ;; esac
    if $reexport && [ "$prec" = int8 ]; then recal=true; fi
    onnx=$onnx_dir/$prec.onnx; $recal && [ "$prec" = int8 ] && onnx=$d/int8.onnx
    # what every per-backend stage takes (stages/lib/core/fanout.py add_arguments), for this engine
    per_backend=(--params "$d/params.yaml" --precision "$prec" --checkpoint "artifacts/$m/checkpoint.pt"
                 --onnx "$onnx" --engine-dir "$d" --backend tensorrt)
    (cd "$ws" && rm -rf "$d" && mkdir -p "$d" && { cp "artifacts/$m/engines/$prec/timing.cache" "$d/" || true; } \
      && compose_params "$d/params.yaml" "$@" \
      && { ! $reexport || timeout "$(left)" "$HOST_PYTHON" -m stages.export --params "$d/params.yaml" \
             --checkpoint "artifacts/$m/checkpoint.pt" --test data/prepared/test.npz --out-dir "$onnx_dir" \
             --reference "$d/reference_logits.npy" --report "$OUT/ab-$label-export.json"; } \
      && { ! $recal || [ "$prec" != int8 ] || timeout "$(left)" "$HOST_PYTHON" -m stages.calibrate --params "$d/params.yaml" \
             --onnx "$onnx_dir/fp32.onnx" --calib data/prepared/calib.npz --out "$onnx" \
             --ranges "$d/ranges.json" --report "$OUT/ab-$label-calibrate.json"; } \
      && timeout "$(left)" "$HOST_PYTHON" -m stages.build --params "$d/params.yaml" --precision "$prec" \
         --onnx "$onnx" --fingerprint artifacts/fingerprint.json --out-dir "$d" \
         --report "$OUT/ab-$label-build-$prec.json" \
      && timeout "$(left)" "$TRT_PYTHON" -m stages.benchmark "${per_backend[@]}" --part "$OUT/ab-$label-bench-$prec.json" \
      && timeout "$(left)" "$TRT_PYTHON" -m stages.evaluate "${per_backend[@]}" --part "$OUT/ab-$label-eval-$prec.json" \
         --test data/prepared/test.npz --reference "artifacts/$m/reference_logits.npy") 2>&1 | grep -E "INFO|ERROR|error" ;;
  sweep)  # the multi-GPU sweep check, tools/gpu-host/sweep.sh (a step for `bg`: "sweep all")
    shift; bash "$(dirname "$0")/sweep.sh" "$@" ;;
  collect)  # everything worth keeping, in one file under $OUT
    rm -rf /tmp/collect && mkdir -p /tmp/collect
    for ws in "$WS"/*/; do [ -d "$ws" ] || continue; w=$(basename "$ws"); mkdir -p "/tmp/collect/$w"
      (cd "$ws" && cp -r reports dvc.lock params.yaml overrides "/tmp/collect/$w/" 2>/dev/null
       cp artifacts/fingerprint.json "/tmp/collect/$w/" 2>/dev/null
       # engines' build/inspector/layer JSON, and the INT8 range cache (to diagnose a calibration)
       for d in artifacts/*/engines/*/ artifacts/*/calibration/; do mkdir -p "/tmp/collect/$w/$d" && cp "$d"/*.json "/tmp/collect/$w/$d" 2>/dev/null; done)
    done
    # this command's logs and the background jobs' logs (only 8 files come back from $OUT)
    mkdir -p /tmp/collect/out /tmp/collect/bg && find "$OUT" -maxdepth 1 -type f ! -name results.tgz -exec cp {} /tmp/collect/out/ \;
    cp -r "$BG"/. /tmp/collect/bg/ 2>/dev/null
    tar -C /tmp/collect -czf "$OUT/results.tgz" . && ls -la "$OUT" ;;
  *) echo "unknown step $step; $usage" >&2; exit 2 ;;
esac
