"""vmcri: a Kubernetes CRI v1 runtime that runs each pod sandbox in its own VM."""

__version__ = "0.1.0"
