"""The image service: registry client, content store, safe layer unpack, GC.

Which images may be pulled at all is ``trust/`` (signature policy and verification),
asked by the puller before anything below is written.

Layout of the store under ``<root>/images/`` (``<root>`` is vmcri's ``root``)::

    blobs/sha256/<hex>            content-addressed blobs (manifests, configs, layers)
    blobs/ingest/<pid>-<rand>     blobs being downloaded (verified, then renamed)
    layers/<chain-hex>/diff/      one layer's changeset, unpacked overlay-ready
    layers/<chain-hex>/meta.json  {"chain_id", "diff_id", "parent", "size", "inodes"}
    layers/.tmp-<pid>-<rand>/     a layer being unpacked (renamed when complete)
    records/<id-hex>.json         image records (tags, digests, layers), written last

``layers/<chain>/diff`` holds that one layer's files (not the merged root
filesystem), with OCI whiteouts already turned into overlayfs whiteouts, so a
backend stacks ``ImageInfo.layer_dirs`` (lowest first) as overlay lowerdirs.
"""
