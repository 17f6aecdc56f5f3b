#!/usr/bin/env bash
# Re-cut .gpu-bundle/pNN/part (55 MB each from make.sh) into 58 MB parts: fewer transfers
# of at most 64 MiB with the project tree. cat of the parts is unchanged, so install is too.
set -euo pipefail
src=${1:-.gpu-bundle}
tmp=$(mktemp -d "$src/.resplit.XXXX")
cat "$src"/p*/part | split -b ${PART_BYTES:-58000000} -d -a 2 - "$tmp/part"
rm -rf "$src"/p[0-9]*
n=0; for p in "$tmp"/part*; do d=$(printf 'p%02d' $n); mkdir -p "$src/$d"; mv "$p" "$src/$d/part"; n=$((n+1)); done
rmdir "$tmp"
ls -l "$src"/p*/part | awk '{print $5, $9}'
