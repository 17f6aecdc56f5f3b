"""What a run reports: its records read back, accuracy metrics, the quality gate's rules,
performance targets, the markdown tables and summary, the PNG plots, the curated metrics
file (curated) and the data behind DVC's plots (plotdata).

May import: core, quant.
"""
