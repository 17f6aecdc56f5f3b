"""Pipeline stages: one module per DVC stage, each runnable as ``python -m stages.<name>``."""
