#!/usr/bin/env bash
# On the GPU host: the TensorRT serving interpreter in $2 (default /opt/serve), a venv of the
# gpu-bundle's Python 3.10 installed in $1 (default /opt/trt), with this bundle's wheels
# (PyTriton, numpy<2, cuda-python, ...) and tensorrt from $1. Then `source $2/env.sh` sets
# SERVE_PYTHON=$2/bin/serve-python, a wrapper that puts the bundle's libpython3.10, TensorRT
# and stub libraries on LD_LIBRARY_PATH (the Triton backend stub needs that libpython too).
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
trt=${1:-/opt/trt}
dst=${2:-/opt/serve}
py=$(ls "$trt"/*/bin/python3.10 2>/dev/null | head -n 1)
[ -x "$py" ] || { echo "no Python 3.10 under $trt (install ../shared/gpu-bundle first)" >&2; exit 1; }
pyhome=$(dirname "$(dirname "$py")")
libs="$trt/stubs:$trt/tensorrt:$pyhome/lib"
LD_LIBRARY_PATH="$pyhome/lib" "$py" -m venv --without-pip "$dst"
site=$(LD_LIBRARY_PATH="$pyhome/lib" "$dst/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
LD_LIBRARY_PATH="$pyhome/lib" "$dst/bin/python" -c \
  "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$site" "$src"/wheels/*.whl
chmod -R u+x "$site/pytriton/tritonserver/bin" "$site/pytriton/tritonserver/python_backend_stubs" 2>/dev/null || true
[ -d "$trt/tensorrt" ] && echo "$trt" > "$site/gpu-bundle-tensorrt.pth"   # import tensorrt from the bundle
cat > "$dst/bin/serve-python" <<WRAP
#!/bin/sh
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$dst/bin/python" "\$@"
WRAP
chmod +x "$dst/bin/serve-python"
echo "export SERVE_PYTHON=$dst/bin/serve-python" > "$dst/env.sh"
"$dst/bin/serve-python" -c "import numpy, pytriton, tritonclient; print('serving interpreter ready in $dst: numpy', numpy.__version__)"
"$dst/bin/serve-python" -c "import tensorrt; print('TensorRT', tensorrt.__version__)" || echo "(no TensorRT: ONNX Runtime only)"
