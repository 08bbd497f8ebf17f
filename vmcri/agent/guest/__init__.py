"""The agent inside the pod VM: runs the pod's containers with runc on the host's orders.

Imports only the standard library, ``google.protobuf``, ``vmcri.errors`` and ``vmcri.agent``:
nothing else is installed in the guest image.
"""
