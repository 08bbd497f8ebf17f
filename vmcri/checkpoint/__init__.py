"""Pod checkpoint and restore (KEP-5823) and kubelet's forensic container checkpoint.

The checkpoint format lives here (the directory kubelet names, the manifest, writing it
and verifying it); the runtime drives a checkpoint (:mod:`vmcri.runtime.checkpoints`),
and what a handler saves and restores (a VM's memory and disks, CRIU images of runc
containers) sits behind :class:`~vmcri.handlers.checkpointer.PodCheckpointer`, picked
through the backend registry like the backend itself (``handler`` below)::

    CheckpointPod ─▶ paths.open_target ─▶ writer.CheckpointWriter ─▶ handler.save
                                               │ (error/deadline: abort, every file gone)
                                               └▶ manifest.json written last
    RestorePod    ─▶ paths.open_target ─▶ reader.verify (manifest + every checksum)
                  ─▶ bind container configs by name ─▶ new sandbox (handler.restore_sandbox)
                  ─▶ containers (handler.restore_container) RUNNING, restart counts kept

A checkpoint directory is data, never trusted code: it may have been copied from
another node or edited on disk. Nothing of it is used before its manifest parsed
within bounds and every file it lists matched its size and SHA-256, each opened
without following a symlink. Checkpoints hold the pods' memory, so secrets: the
directory vmcri writes is 0700 and every file 0600.
"""
