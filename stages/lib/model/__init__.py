"""The PyTorch model: network definitions and checkpoints, the training loop, SAM, and the
resume state of an interrupted training (PyTorch side only).

May import: core, data.
"""
