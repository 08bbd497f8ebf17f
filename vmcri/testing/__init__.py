"""Helpers for tests and the demo: a local registry and test images built from busybox.

Not used by the daemon. They live in the package so the README's demo
(``scripts/run.sh``) and the tests share one implementation.
"""
