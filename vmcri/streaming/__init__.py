"""The CRI streaming server: what Exec, Attach and PortForward URLs point at.

::

    Exec/Attach/PortForward RPC ──▶ service.StreamingService  validate (gRPC codes), issue URL
                                         │ tokens.TokenStore    single-use, 60 s, bounded
    kubectl / kubelet / crictl ──HTTP──▶ server.StreamingServer  /{exec,attach,portforward}/<token>
                                         │ upgrade: SPDY/3.1 (spdy_frames, spdy_conn)
                                         │       or WebSocket (websocket)
                  exec/attach ───────────┤ remotecommand + command_spdy | command_websocket
                  port-forward ──────────┘ portforward (SPDY)
                                         ▼
                the pod's backend: ProcessSession / PortConnection (vmcri.handlers.base)
                both: vmcri/supervisor/streams.py, through the pod's agent (host or guest);
                runc port-forward: handlers/runc/port_dial.py (dials in the pod netns)

Protocols: ``v4.channel.k8s.io`` (v3, v2) and ``portforward.k8s.io`` over SPDY;
``v5.channel.k8s.io`` and ``v4.channel.k8s.io`` over WebSocket. Port-forward over
WebSocket is refused with 400, on which kubectl falls back to SPDY.

Trust boundary: anyone who reaches the listen address (loopback by default) may try; a
request needs a valid token, and every frame, header block, message and buffer is bounded.
"""
