#!/usr/bin/env bash
# Pack the runtime for an offline GPU host: TensorRT 8.6 + its Python 3.10, onnxruntime-gpu
# and dvc for the host's Python, cut into parts that fit one transfer beside the project tree.
#   BUNDLE_MAKE  the bundle maker (default ../shared/gpu-bundle/make.sh)
#   PART_BYTES   bytes per part (default 58000000: with a ~7 MB tree, under 64 MiB a transfer)
set -euo pipefail
make=${BUNDLE_MAKE:-../shared/gpu-bundle/make.sh}
[ -x "$make" ] || { echo "pack.sh: no bundle maker at $make (set BUNDLE_MAKE)" >&2; exit 2; }
"$make" --with-ort-gpu --with-dvc
src=.gpu-bundle
tmp=$(mktemp -d "$src/.resplit.XXXX")
cat "$src"/p*/part | split -b "${PART_BYTES:-58000000}" -d -a 2 - "$tmp/part"
rm -rf "$src"/p[0-9]*
n=0; for p in "$tmp"/part*; do d=$(printf 'p%02d' $n); mkdir -p "$src/$d"; mv "$p" "$src/$d/part"; n=$((n+1)); done
rmdir "$tmp"
ls -l "$src"/p*/part | awk '{print $5, $9}'
