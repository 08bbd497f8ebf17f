"""Image trust: which images may be pulled, decided by signatures before any layer is used.

The formats are those of containers/image, so a node's ``/etc/containers/policy.json``
and ``registries.d`` mean here what they mean to CRI-O, Podman and skopeo:

* ``policy.py``: containers-policy.json(5), parsed strictly at start-up, and the scope
  lookup that picks a reference's requirements;
* ``identity.py``: ``signedIdentity``, how a signature's claimed reference must relate
  to the one pulled;
* ``payload.py``: the signed JSON payload (simple signing and sigstore share it);
* ``gpg.py``: simple signing, verified by ``gpgv`` against a keyring of the policy's keys;
* ``sigstore.py``: cosign-style signatures, verified with ``cryptography``;
* ``registries_d.py``: containers-registries.d(5), where signatures are found;
* ``sources.py``: fetching them (lookaside files or URLs, registry attachments), bounded;
* ``verifier.py``: the one entry point the puller calls, with per-namespace policies;
* ``evidence.py``: what a pull verified, kept on the image record;
* ``admission.py``: CreateContainer's check of a stored image against the policy of the
  pod's namespace, from that record, fetching signatures again only where it must.
"""
