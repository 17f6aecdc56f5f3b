"""Runners: one interface (:mod:`.base`) with PyTorch, ONNX Runtime and TensorRT
implementations; :mod:`.registry` creates one by backend name.

May import: core, data, model, trt.
"""
