"""Plumbing every stage and package uses: params (types, checks, loading), atomic I/O, errors,
the main() wrapper, progress bars, GPU holds, child interpreters, CUDA buffers and the timing loop.

May import: nothing else in stages.lib (core sits at the bottom).
"""
