"""Exec, Attach and PortForward: URLs on the streaming server."""

from __future__ import annotations

from vmcri.api import api_pb2 as pb
from vmcri.cri.rpc_common import Ctx, Rpcs
from vmcri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest


class StreamingRpcs(Rpcs):
    def Exec(self, request: pb.ExecRequest, context: Ctx) -> pb.ExecResponse:
        url = self._streaming.exec_url(
            ExecRequest(
                container_id=request.container_id,
                cmd=tuple(request.cmd),
                tty=request.tty,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
            )
        )
        return pb.ExecResponse(url=url)

    def Attach(self, request: pb.AttachRequest, context: Ctx) -> pb.AttachResponse:
        url = self._streaming.attach_url(
            AttachRequest(
                container_id=request.container_id,
                tty=request.tty,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
            )
        )
        return pb.AttachResponse(url=url)

    def PortForward(self, request: pb.PortForwardRequest, context: Ctx) -> pb.PortForwardResponse:
        url = self._streaming.port_forward_url(
            PortForwardRequest(sandbox_id=request.pod_sandbox_id, ports=tuple(request.port))
        )
        return pb.PortForwardResponse(url=url)
