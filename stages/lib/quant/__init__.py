"""INT8 and graph work on ONNX models: ranges and Q/DQ placement (ONNX Runtime), small ONNX
graph edits, what a Q/DQ engine would run in FP32 under strong typing, and the INT8 accuracy
budget (Q/DQ groups, the held-out images, the ranking by harm and the choice of float groups).

May import: core, data.
"""
