"""INT8 and graph work on ONNX models: ranges and Q/DQ placement (ONNX Runtime), small ONNX
graph edits, and what a Q/DQ engine would run in FP32 under strong typing.

May import: core, data.
"""
