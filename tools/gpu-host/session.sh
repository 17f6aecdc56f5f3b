#!/usr/bin/env bash
# Steps of a GPU-host session; run from the project root on the host by the device tool.
# Every step logs under $OUT (the folder that comes back).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
step=${1:?usage: session.sh part pNN | install | repro | repro-r50 | tests | collect}
export PYTHONUNBUFFERED=1 PIPELINE_LOG_LEVEL=${PIPELINE_LOG_LEVEL:-INFO}
R50=/tmp/r50   # ResNet-50 runs in its own workspace so the two models' dvc.lock never clash

host_env() {
  # shellcheck disable=SC1091
  source /opt/trt/env.sh
  mkdir -p /tmp/bin && ln -sf "$HOST_PYTHON" /tmp/bin/python && export PATH=/tmp/bin:$PATH
}

dvc_ready() {  # $1: workspace
  (cd "$1" && { [ -d .git ] || "$DVC" config --local core.no_scm true; }
   rm -f .dvc/tmp/rwlock .dvc/tmp/lock)
}

repro() {  # $1: workspace, $2: seconds
  dvc_ready "$1"
  (cd "$1" && timeout --signal=INT "$2" "$DVC" repro 2>&1) | tee -a "$OUT/repro-$(basename "$1").log" \
    | grep -v -E 'it/s\]|s/it\]' 
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then echo "PIPELINE COMPLETE ($1)"; else echo "PIPELINE STOPPED rc=$rc ($1): call again"; fi
}

case "$step" in
  part)
    mkdir -p /tmp/gpu-bundle && cp ".gpu-bundle/$2/part" "/tmp/gpu-bundle/$2" && ls -l /tmp/gpu-bundle
    nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader ;;
  install)
    cat /tmp/gpu-bundle/p* | tar -x -C /tmp && bash /tmp/bundle/install.sh /opt/trt 2>&1 | tail -3
    rm -rf /tmp/gpu-bundle /tmp/bundle
    host_env
    "$HOST_PYTHON" -c "import onnxruntime as o, torch, dvc; print('ort', o.__version__, o.get_available_providers()); print('torch', torch.__version__, torch.cuda.get_device_name()); print('dvc', dvc.__version__)"
    "$TRT_PYTHON" -c "import tensorrt, cuda.bindings; print('trt', tensorrt.__version__)"
    ls -la; [ -d .git ] && echo "host copy has .git" || echo "host copy has no .git" ;;
  repro)
    host_env; repro . "${2:-560}" ;;
  repro-r50)
    host_env
    if [ ! -f "$R50/params.yaml" ]; then
      mkdir -p "$R50"
      cp -r conf stages dvc.yaml .dvc .dvcignore "$R50"/ && mkdir -p "$R50/data" && cp -r data/raw "$R50/data/"
      rm -f "$R50/.dvc/config.local"; rm -rf "$R50/.dvc/cache" "$R50/.dvc/tmp"
      (cd "$R50" && "$HOST_PYTHON" -c "import os; from dvc.utils.hydra import compose_and_dump as c; c('params.yaml', os.path.abspath('conf'), None, 'config', '', ['model=resnet50'])")
    fi
    repro "$R50" "${2:-560}" ;;
  second)
    host_env; dvc_ready .; "$DVC" repro 2>&1 | tee "$OUT/second-repro.log" | grep -v -E 'it/s\]' ;;
  warm)  # rebuild one engine from a copy of its timing cache: cold vs warm build time
    host_env; m=${2:-resnet50}; prec=${3:-int8}; ws=.; [ "$m" = resnet50 ] && ws=$R50
    (cd "$ws" && rm -rf /tmp/warm && mkdir -p /tmp/warm && cp "artifacts/$m/engines/$prec/timing.cache" /tmp/warm/ \
      && python -m stages.build --precision "$prec" --onnx "artifacts/$m/onnx/$prec.onnx" \
         --fingerprint artifacts/fingerprint.json --out-dir /tmp/warm --report "$OUT/warm-build-$m-$prec.json" \
      && cp "reports/$m/build/$prec.json" "$OUT/cold-build-$m-$prec.json") ;;
  tests)
    host_env; python -m pytest -m "gpu or tensorrt" -v -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.log" | tail -40 ;;
  collect)
    mkdir -p /tmp/collect/r18 /tmp/collect/r50
    cp -r reports dvc.lock params.yaml /tmp/collect/r18/ 2>/dev/null
    [ -d "$R50" ] && (cd "$R50" && cp -r reports dvc.lock params.yaml /tmp/collect/r50/ 2>/dev/null)
    tar -C /tmp/collect -czf "$OUT/results.tgz" . && ls -la "$OUT" ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
