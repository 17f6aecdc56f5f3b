#!/usr/bin/env bash
# Pack the GPU host's TensorRT serving interpreter: the wheels of requirements-gpu-py310.txt
# (cp310, manylinux x86-64, about 110 MB) and install.sh, cut into parts that fit a transfer.
# Run it here, in the project root:
#
#   tools/serving/make-bundle.sh [--out DIR] [--extra "pkg==ver ..."]
#
# It writes DIR/pNN/part (PART_BYTES each, default 44 MB: a transfer also carries the
# project tree) and DIR/steps.txt. DIR defaults to .serve-bundle (added to .git/info/exclude).
# On the host, after ../shared/gpu-bundle is installed in /opt/trt:
#   cat /tmp/serve-bundle/p* | tar -x -C /tmp && bash /tmp/serve-bundle/install.sh /opt/trt /opt/serve
#   source /opt/serve/env.sh      # SERVE_PYTHON=/opt/serve/bin/serve-python
set -euo pipefail
out=.serve-bundle; extra=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2;;
    --extra) extra=$2; shift 2;;
    -h|--help) sed -n '2,14p' "$0"; exit 0;;
    *) echo "unknown option: $1" >&2; exit 2;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
b=$work/serve-bundle; mkdir -p "$b/wheels"
reqs=$(grep -v '^#' "$here/requirements-gpu-py310.txt")
# shellcheck disable=SC2086
pip download -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp --abi cp310 \
  --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$b/wheels" $reqs $extra
cp "$here/install.sh" "$b/install.sh"
ls -l "$b/wheels" | awk 'NR>1{print $5, $9}' > "$b/wheels.txt"
rm -rf "$out"; mkdir -p "$out"
tar -C "$work" -cf "$work/bundle.tar" serve-bundle
(cd "$work" && split -b "${PART_BYTES:-44000000}" -d -a 2 bundle.tar part)
n=0; for p in "$work"/part*; do d=$(printf 'p%02d' $n); mkdir -p "$out/$d"; mv "$p" "$out/$d/part"; n=$((n+1)); done
if exclude=$(git rev-parse --git-path info/exclude 2>/dev/null); then
  mkdir -p "$(dirname "$exclude")"
  grep -qx "/$(basename "$out")/" "$exclude" 2>/dev/null || echo "/$(basename "$out")/" >> "$exclude"
fi
{
  echo "# $n transfers, back to back: send $out/pNN, then on the host run the line below it."
  for i in $(seq 0 $((n-1))); do d=$(printf 'p%02d' "$i")
    echo "$out/$d:  mkdir -p /tmp/serve-parts && cp $out/$d/part /tmp/serve-parts/$d"
  done
  echo "then, once /opt/trt is installed (../shared/gpu-bundle):"
  echo "  cat /tmp/serve-parts/p* | tar -x -C /tmp && bash /tmp/serve-bundle/install.sh /opt/trt /opt/serve && source /opt/serve/env.sh"
} > "$out/steps.txt"
du -sh "$b/wheels" "$out"; cat "$out/steps.txt"
