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
| `hypervisor.py` | `FakeHypervisor`: libvirt without VMs, for the vm backend's tests |
| `mounter.py` | `FakeMounter`: the host's mounts, recorded and never made |
| `taps.py` | `NoTaps`: tap devices for pods without a network |
| `vm_backend.py` | `make_backend`: a vm backend with fakes at its seams; pod, container records |
| `wait.py` | `wait_for`/`wait_until`: poll a condition, never sleep and look |
"""
