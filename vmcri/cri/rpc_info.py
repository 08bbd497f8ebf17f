"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import json

from vmcri.api import api_pb2 as pb
from vmcri.cri.rpc_common import Ctx, Rpcs
from vmcri.runtime.info import CRI_API_VERSION, KUBELET_API_VERSION, RUNTIME_NAME
from vmcri.store.codec import to_jsonable


class InfoRpcs(Rpcs):
    def Version(self, request: pb.VersionRequest, context: Ctx) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=self._info.version(),
            runtime_api_version=CRI_API_VERSION,
        )

    def Status(self, request: pb.StatusRequest, context: Ctx) -> pb.StatusResponse:
        status = self._info.status()
        response = pb.StatusResponse(
            status=pb.RuntimeStatus(
                conditions=[
                    pb.RuntimeCondition(
                        type=c.type, status=c.status, reason=c.reason, message=c.message
                    )
                    for c in status.conditions
                ]
            ),
            runtime_handlers=[
                pb.RuntimeHandler(
                    name=h.name,
                    features=pb.RuntimeHandlerFeatures(
                        recursive_read_only_mounts=h.features.recursive_read_only_mounts,
                        user_namespaces=h.features.user_namespaces,
                    ),
                )
                for h in status.handlers
            ],
            features=pb.RuntimeFeatures(supplemental_groups_policy=True),
        )
        if request.verbose:
            response.info["config"] = json.dumps(to_jsonable(self._info.config()))
        return response

    def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: Ctx
    ) -> pb.RuntimeConfigResponse:
        driver = pb.SYSTEMD if self._info.cgroup_driver() == "systemd" else pb.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Ctx
    ) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            self._info.update_pod_cidr(cidr)
        return pb.UpdateRuntimeConfigResponse()

    # ------------------------------------------------------------ pod sandboxes
