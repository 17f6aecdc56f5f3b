"""Sweeps on DVC's queue: the grid of Hydra overrides, and the report and comparison of the
experiments it ran.

May import: core.
"""
