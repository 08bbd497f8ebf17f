"""The CRI ImageService: decode, call :class:`vmcri.images.service.ImageService`, encode.

Errors are raised as vmcri errors; the server's interceptor maps them to gRPC
codes. CRI rules kept here: ImageStatus of an absent image is an empty answer,
not NOT_FOUND; RemoveImage of an absent image succeeds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc

from vmcri.api import api_pb2, api_pb2_grpc
from vmcri.errors import InvalidArgument
from vmcri.images.auth import Auth, Deadline
from vmcri.images.content_store import ImageRecord
from vmcri.images.service import ImageService


def auth_from_wire(auth: api_pb2.AuthConfig) -> Auth:
    return Auth(
        username=auth.username,
        password=auth.password,
        auth=auth.auth,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
    )


def image_to_wire(record: ImageRecord) -> api_pb2.Image:
    image = api_pb2.Image(
        id=record.id,
        repo_tags=list(record.repo_tags),
        repo_digests=list(record.repo_digests),
        size=record.size,
        username=record.username,
        pinned=record.pinned,
        spec=api_pb2.ImageSpec(image=record.id),
    )
    if record.uid is not None:
        image.uid.value = record.uid
    return image


def verbose_info(record: ImageRecord, service: ImageService) -> dict[str, str]:
    """``info["info"]``: a JSON document for ``crictl inspecti`` (as containerd does)."""
    doc: dict[str, Any] = {
        "id": record.id,
        "repoTags": list(record.repo_tags),
        "repoDigests": list(record.repo_digests),
        "manifestDigest": record.manifest_digest,
        "config": record.config,
        "layers": [
            {
                "digest": layer.digest,
                "size": layer.size,
                "mediaType": layer.media_type,
                "diffID": layer.diff_id,
                "chainID": layer.chain_id,
                "dir": str(service.layers.diff_dir(layer.chain_id)),
            }
            for layer in record.layers
        ],
    }
    return {"info": json.dumps(doc)}


def _spec_image(spec: api_pb2.ImageSpec, field: str) -> str:
    if not spec.image:
        raise InvalidArgument(f"{field}.image: an image reference or ID is required")
    return spec.image


class ImageServicer(api_pb2_grpc.ImageServiceServicer):  # type: ignore[misc]
    def __init__(self, service: ImageService) -> None:
        self._service = service

    def ListImages(
        self, request: api_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> api_pb2.ListImagesResponse:
        ref = request.filter.image.image if request.HasField("filter") else ""
        records = self._service.list(ref)
        return api_pb2.ListImagesResponse(images=[image_to_wire(r) for r in records])

    def ImageStatus(
        self, request: api_pb2.ImageStatusRequest, context: grpc.ServicerContext
    ) -> api_pb2.ImageStatusResponse:
        record = self._service.status(_spec_image(request.image, "image"))
        if record is None:
            return api_pb2.ImageStatusResponse()
        info = verbose_info(record, self._service) if request.verbose else {}
        return api_pb2.ImageStatusResponse(image=image_to_wire(record), info=info)

    def PullImage(
        self, request: api_pb2.PullImageRequest, context: grpc.ServicerContext
    ) -> api_pb2.PullImageResponse:
        ref = _spec_image(request.image, "image")
        remaining = context.time_remaining()
        deadline = Deadline.after(remaining if remaining is not None and remaining < 1e9 else None)
        # The pod's namespace picks a per-namespace signature policy, as in CRI-O.
        namespace = (
            request.sandbox_config.metadata.namespace if request.HasField("sandbox_config") else ""
        )
        image_id = self._service.pull(
            ref, auth_from_wire(request.auth), deadline, namespace=namespace
        )
        return api_pb2.PullImageResponse(image_ref=image_id)

    def RemoveImage(
        self, request: api_pb2.RemoveImageRequest, context: grpc.ServicerContext
    ) -> api_pb2.RemoveImageResponse:
        self._service.remove(_spec_image(request.image, "image"))
        return api_pb2.RemoveImageResponse()

    def ImageFsInfo(
        self, request: api_pb2.ImageFsInfoRequest, context: grpc.ServicerContext
    ) -> api_pb2.ImageFsInfoResponse:
        usage = self._service.fs_info()
        fs = api_pb2.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=usage.mountpoint),
            used_bytes=api_pb2.UInt64Value(value=usage.used_bytes),
            inodes_used=api_pb2.UInt64Value(value=usage.inodes_used),
        )
        return api_pb2.ImageFsInfoResponse(image_filesystems=[fs])
