"""vmcri's own Prometheus metrics (the ``[metrics]`` endpoint).

``families`` defines every metric and the one-line recording calls other modules
make; ``collector`` derives the running pods and containers from the store at
scrape time; ``server`` serves them; ``address`` checks the configured address.
This package is distinct from ``vmcri.runtime.metrics``, which answers the CRI's
pod-metrics RPCs for kubelet.
"""
