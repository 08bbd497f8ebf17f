"""The ``runc`` backend: a pod's containers directly on the host under runc."""
