"""Helpers for the tests, the benchmarks and the demo: a local registry and test images.

Not part of the installed package (they import pytest and need host tools).
``scripts/demo.py`` and the benchmarks in ``bench/`` put the repository root on
``sys.path`` to import them.

| module | holds |
|---|---|
| `registry.py` | `LocalRegistry`: docker-registry on loopback, `registry_or_skip` |
| `token_server.py` | `TokenServer`: bearer tokens for the registry's token auth |
| `layers.py` | `Layer` (entries, then a blob) and the runnable `busybox_layer` |
| `push.py` | `Pusher` (v2 uploads) and `push_image`/`push_busybox_image` |
| `throttling_proxy.py` | `ThrottlingProxy`: a slow loopback relay |
| `wait.py` | `wait_for`/`wait_until`: poll a condition, never sleep and look |
"""
