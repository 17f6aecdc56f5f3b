#!/usr/bin/env bash
# perf_analyzer, Triton's C++ load generator, into the serving venv $1: $1/bin/perf_analyzer.
#
# No PyPI package installs it as such (the `perf-analyzer` package is a placeholder). The
# tritonclient wheels for x86-64 carried it in data/bin up to 2.60.0, but from 2.52.0 on it
# is built against glibc 2.38 (Ubuntu 24.04) and does not start on Debian 12 (glibc 2.36);
# 2.61.0 and later ship none. So the binary comes from the tritonclient 2.51.0 wheel
# (hash-pinned), apart from the venv's own tritonclient. It links libb64.so.0d (Debian's
# libb64-0d: installed with apt-get when run as root) and libcudart.so.12 (PyPI's
# nvidia-cuda-runtime-cu12, in serve-requirements.txt; no GPU is needed), which the wrapper
# puts on LD_LIBRARY_PATH. Exits 1 with one line saying what is missing.
set -euo pipefail
venv=$(cd "${1:?usage: install-perf-analyzer.sh SERVE_VENV}" && pwd)
wheel="tritonclient==2.51.0 --hash=sha256:c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52"

if ! ldconfig -p | grep 'libb64\.so\.0d' >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q libb64-0d >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; }
  else
    echo "perf_analyzer not installed: it needs libb64.so.0d (apt-get install libb64-0d, as root)" >&2
    exit 1
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$wheel" > "$tmp/req.txt"
"$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
  --require-hashes -r "$tmp/req.txt" -d "$tmp" 2>&1 | grep -v "^WARNING: Location" || true
mkdir -p "$venv/libexec"
"$venv/bin/python" - "$tmp" "$venv/libexec/perf_analyzer" <<'PY'
import glob, os, sys, zipfile
(whl,) = glob.glob(os.path.join(sys.argv[1], "tritonclient-2.51.0-*.whl"))
with zipfile.ZipFile(whl) as z, open(sys.argv[2] + ".tmp", "wb") as out:
    out.write(z.read("tritonclient-2.51.0.data/data/bin/perf_analyzer"))
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
cudart=$("$venv/bin/python" -c "import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], 'lib'))")
cat > "$venv/bin/perf_analyzer" <<WRAP
#!/bin/sh
export LD_LIBRARY_PATH="$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$venv/libexec/perf_analyzer" "\$@"
WRAP
chmod +x "$venv/bin/perf_analyzer"
if ! "$venv/bin/perf_analyzer" --version >/dev/null 2>"$tmp/err" && grep -q "error while loading" "$tmp/err"; then
  echo "perf_analyzer does not start: $(head -c 300 "$tmp/err")" >&2
  rm -f "$venv/bin/perf_analyzer"
  exit 1
fi
echo "perf_analyzer 2.51.0 in $venv/bin/perf_analyzer"
