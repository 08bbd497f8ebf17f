"""The CRI RuntimeService servicer: thin methods that decode, call a service, encode.

RPCs vmcri does not implement fall through to the generated base class, whose
NotImplementedError the error interceptor turns into UNIMPLEMENTED with the name.
"""

from __future__ import annotations

from vmcri.api import api_pb2_grpc
from vmcri.cri.rpc_checkpoint import CheckpointRpcs
from vmcri.cri.rpc_containers import ContainerRpcs
from vmcri.cri.rpc_info import InfoRpcs
from vmcri.cri.rpc_pods import PodRpcs
from vmcri.cri.rpc_stats import StatsRpcs
from vmcri.cri.rpc_streaming import StreamingRpcs


class RuntimeServicer(
    InfoRpcs,
    PodRpcs,
    ContainerRpcs,
    StatsRpcs,
    StreamingRpcs,
    CheckpointRpcs,
    api_pb2_grpc.RuntimeServiceServicer,  # type: ignore[misc]
):
    """RuntimeService: every RPC group above, one servicer for the gRPC server."""
