"""The runtime side of NRI (github.com/containerd/nri): node resource plugins for both handlers.

Layers, bottom up, one concern a module::

    ttrpc_frames.py   ttrpc's 10-byte frame header, bounded at ttrpc's 4 MiB
    mux.py            NRI's connection multiplexer: logical connections over one socket
    ttrpc.py          a ttrpc client (vmcri -> plugin) and server (plugin -> vmcri)
    plugin.py         one plugin: registration, Configure, its subscription, bounded calls
    convert.py        domain records <-> NRI messages (the only importer of nri_pb2 types
                      besides the protocol layers)
    merge.py          plugins' adjustments and updates collected, conflicts refused
    adjust.py         a merged adjustment applied to a ContainerConfig, and what a VM
                      guest cannot hold refused
    launcher.py       pre-installed plugins (plugin_path) started with a socket of their own
    listener.py       the root-only socket external plugins connect to
    plugin_set.py     the plugins in index order, and how one joins (synchronize, catch up)
    updates.py        resource updates plugins ask for, of other containers
    stop_relay.py     container exits told to plugins off the thread that saw them
    adaptation.py     one method per lifecycle event, calling the subscribed plugins
    hooks.py          what the runtime calls: NriHooks, a no-op when NRI is disabled
"""
