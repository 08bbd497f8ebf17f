"""vmcri's own Prometheus metrics (the ``[metrics]`` endpoint).

``families`` defines every metric and the one-line recording calls other modules
make; ``collector`` derives the running pods and containers from the store at
scrape time; ``server`` serves them; ``address`` checks the configured address.
``vmcri.cri.prometheus_calls`` counts the CRI calls into it. This package is
distinct from ``vmcri.runtime.cri_metrics`` and ``cri_metric_families``, which answer
the CRI's pod-metrics RPCs for kubelet.
"""
