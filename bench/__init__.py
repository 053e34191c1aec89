"""cprec benchmarks: `python -m bench.run` (see bench/run.py); results in BENCHMARKS.md."""
