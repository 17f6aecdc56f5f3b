"""Code shared by two or more stages, in packages by concern.

``core`` (params, I/O, errors, CLI, GPUs, child interpreters, CUDA, timing), ``data``,
``model``, ``quant``, ``report``, ``sweep``, ``trt``, ``runners`` and ``serving``. Imports
flow one way: stages -> these packages -> ``core``; each package's docstring names the
packages it may import (``May import: ...``), and ``tests/test_lib_layout.py`` holds the code
to it. The modules TensorRT-side code imports (``trt``, the TensorRT runner and what they
import) use only numpy, pyyaml, cuda-python and tensorrt, and run under Python 3.10.
"""
