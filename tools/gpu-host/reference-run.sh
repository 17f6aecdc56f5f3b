#!/usr/bin/env bash
# The run behind reports/reference/<gpu>/: one model's complete pipeline (`dvc repro`) on one
# GPU, then its extra measurements, as one background job (session.sh bg), so that it goes on
# between the commands that follow it (session.sh wait, collect).
#
#   bash tools/gpu-host/reference-run.sh resnet50_224    # ResNet-50, then raw-pixel A/Bs
#   bash tools/gpu-host/reference-run.sh resnet18_cifar  # ResNet-18, then the GPU tests
#
# The ResNet-18 run trains first (`repro ... train`) and then runs the rest, so that a serving
# interpreter installed during the training (session.sh serve-install) serves its engines.
#
# Every step runs alone on the GPU: the stages time it (builds pick tactics by timing).
set -euo pipefail
here=$(dirname "$0")
case "${1:?usage: reference-run.sh resnet50_224 | resnet18_cifar}" in
  resnet50_224)
    # export.raw_input=true: uint8 NHWC input, scaling/normalisation/layout inside the graph
    bash "$here/session.sh" bg "$1" "repro resnet50_224" \
      "ab resnet50_224 int8 raw export.raw_input=true" "ab resnet50_224 fp16 raw export.raw_input=true" ;;
  resnet18_cifar)
    bash "$here/session.sh" bg "$1" "repro resnet18_cifar train" "repro resnet18_cifar" "tests" ;;
  *) echo "reference-run.sh: unknown run $1" >&2; exit 2 ;;
esac
