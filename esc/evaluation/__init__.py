"""Measuring and reporting: the paper's tables (``paper``), results of runs (``results``), parameter and FLOP
counting (``complexity``) and the latency and memory benchmark (``benchmark``, driven by scripts/benchmark.py)."""
