"""The vmcri agent: its wire framing, transports, the host-side client and the guest server.

Two trust domains live here. ``vmcri.agent.guest`` runs inside the pod VM (and may import only
the standard library, ``google.protobuf``, ``vmcri.errors`` and ``vmcri.agent``); ``connection``
(the channel), ``client`` (its typed calls) and ``budget`` (a pod's bytes of queued events) run
in the daemon and treat every byte from the guest as untrusted.
"""

PROTOCOL_VERSION = 1

RUNTIME_COMMAND_TIMEOUT_S = 60.0
"""The agent's bound on one OCI runtime command (create, start, kill, delete, update)."""
RUNTIME_CALL_TIMEOUT_S = RUNTIME_COMMAND_TIMEOUT_S + 30.0
"""How long the host waits for a call that runs one: longer, so that the guest's own error,
naming the command and what the runtime logged, arrives before the host gives up."""
