"""The benchmark of SPEC section 3: `python -m bench` (see docs/benchmark.md)."""
