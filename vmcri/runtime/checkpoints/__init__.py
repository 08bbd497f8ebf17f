"""CheckpointPod, RestorePod and CheckpointContainer as the runtime carries them out.

The checkpoint format (the directory, its manifest, writing and verifying it) is
:mod:`vmcri.checkpoint`; what a handler saves and restores sits behind
:class:`~vmcri.handlers.checkpointer.PodCheckpointer`. These modules drive both around
the pod and container services, as the runtime's other calls drive the backends.
"""
