"""TensorRT-side code: numpy, cuda-python and tensorrt only (no torch); Python >= 3.10.

Written against the current API (10.x/11.x) with feature detection, and kept working on
TensorRT 8.6, the one version the GPU host can run.

May import: core, data.
"""
