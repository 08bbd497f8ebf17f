"""Pod networking: the pod network namespace, CNI, and what a backend needs of its result."""
