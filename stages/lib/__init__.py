"""Code shared by two or more stages.

Modules here that TensorRT-side code imports (errors, io, params, data arrays, metrics,
timing, progress, runners.base, runners.tensorrt, trt.*) import only numpy, pyyaml,
cuda-python and tensorrt, and run under Python 3.10.
"""
