"""Helpers for tests and the demo: a local registry and test images built from busybox.

Not used by the daemon. They live in the package so the README's demo
(``scripts/run.sh``) and the tests share one implementation.

| module | holds |
|---|---|
| `registry.py` | `LocalRegistry`: docker-registry on loopback, `registry_or_skip` |
| `token_server.py` | `TokenServer`: bearer tokens for the registry's token auth |
| `layers.py` | `Layer` (entries, then a blob) and the runnable `busybox_layer` |
| `push.py` | `Pusher` (v2 uploads) and `push_image`/`push_busybox_image` |
| `throttling_proxy.py` | `ThrottlingProxy`: a slow loopback relay |
"""
