"""What a run reports: its records read back, accuracy metrics, the quality gate's rules,
performance targets, the markdown tables and summary, and the PNG plots.

May import: core, quant.
"""
