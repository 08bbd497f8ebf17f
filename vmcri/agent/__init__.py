"""The vmcri agent: its wire framing, transports, the host-side client and the guest server.

Two trust domains live here. ``vmcri.agent.guest`` runs inside the pod VM (and may import only
the standard library, ``google.protobuf``, ``vmcri.errors`` and ``vmcri.agent``); ``connection``
(the channel), ``client`` (its typed calls) and ``budget`` (a pod's bytes of queued events) run
in the daemon and treat every byte from the guest as untrusted.
"""

PROTOCOL_VERSION = 1
