"""The dataset: raw CIFAR-10 layouts and image decoding, the prepared arrays, the one
preprocessing path from images to model input, and its torch twin for GPU-resident training.

May import: core.
"""
