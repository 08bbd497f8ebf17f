"""The gRPC server on the CRI unix socket."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from vmcri.api import api_pb2, api_pb2_grpc
from vmcri.config import CriConfig
from vmcri.cri.admission import AdmissionInterceptor, ServiceTargets
from vmcri.cri.call_shares import CallShares
from vmcri.cri.prometheus_calls import MetricsInterceptor
from vmcri.cri.rpc_common import RuntimeServices
from vmcri.cri.runtime_service import RuntimeServicer
from vmcri.cri.status import ErrorMappingInterceptor
from vmcri.cri.validate import ValidatingInterceptor

if TYPE_CHECKING:
    from vmcri.images.service import ImageService

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Threads for the calls that are never limited (kubelet's every-second polls and other
# quick answers), beyond every thread slow calls may hold (``CriConfig.slow_threads``): a
# poll never waits behind slow calls. The executor starts threads only as calls need them.
POLL_WORKERS = 32


def build_server(
    runtime: RuntimeServices,
    images: ImageService,
    socket_path: Path,
    limits: CriConfig | None = None,
) -> grpc.Server:
    """A server with both CRI services bound to ``socket_path`` (not yet started)."""
    from vmcri.cri.images import ImageServicer

    limits = limits or CriConfig()
    admission = AdmissionInterceptor(
        CallShares(limits), ServiceTargets(runtime.pods, runtime.containers)
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=POLL_WORKERS + limits.slow_threads, thread_name_prefix="cri"
        ),
        # Outermost first: metrics see the codes errors map to, and a refusal of the
        # validation or of admission is mapped like any other error. Admission runs
        # after validation, so the IDs it looks up are well-formed.
        interceptors=[
            MetricsInterceptor(),
            ErrorMappingInterceptor(),
            ValidatingInterceptor(_unimplemented()),
            admission,
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(runtime), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(images), server)
    server.add_insecure_port(f"unix:{socket_path}")
    return server


def _unimplemented() -> frozenset[str]:
    """Full names of the methods vmcri leaves to the generated bases (UNIMPLEMENTED)."""
    from vmcri.cri.images import ImageServicer

    servicers = (
        ("RuntimeService", RuntimeServicer, api_pb2_grpc.RuntimeServiceServicer),
        ("ImageService", ImageServicer, api_pb2_grpc.ImageServiceServicer),
    )
    names = set()
    for service_name, servicer, base in servicers:
        service = api_pb2.DESCRIPTOR.services_by_name[service_name]
        for method in service.methods:
            if getattr(servicer, method.name) is getattr(base, method.name):
                names.add(f"/{service.full_name}/{method.name}")
    return frozenset(names)
