"""Serving a model: its Triton model configuration, a Triton server in a serving interpreter
(PyTriton) with a pass-through model beside the real one, perf_analyzer as the load
generator, the measurements of the serving path (options, profile), and the report of what
serving costs.

The modules the serving interpreter runs (server, process, spec) import only the standard
library, numpy and pyyaml at module level (PyTriton and tritonclient inside functions), and
run under Python 3.10 with numpy < 2.

May import: core, runners.
"""
