"""The benchmark suite: the reconciler side by side with Docker Compose v2 and v1.

Run ``python -m bench`` (``make bench``) for the full suite, which rewrites
BENCHMARKS.md, or ``python -m bench --quick`` (``make bench-quick``) to prove
the suite works in under two minutes.
"""
