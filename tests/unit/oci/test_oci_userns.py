"""User namespace options of a pod: the kernel's rules, checked before anything is made."""

from __future__ import annotations

import pytest

from vmcri.errors import InvalidArgument
from vmcri.host.idmap import id_map_text
from vmcri.model import IDMapping, NamespaceMode, NamespaceOptions
from vmcri.oci.userns import MAX_RANGES, check_pod_userns, owner_outside, pod_root

F = "config.linux.security_context.namespace_options"
KUBELET = (IDMapping(host_id=65536 * 3, container_id=0, length=65536),)


def opts(
    uids: tuple[IDMapping, ...] = KUBELET,
    gids: tuple[IDMapping, ...] = KUBELET,
    mode: NamespaceMode = NamespaceMode.POD,
    **kw: NamespaceMode,
) -> NamespaceOptions:
    return NamespaceOptions(userns_mode=mode, uid_mappings=uids, gid_mappings=gids, **kw)  # type: ignore[arg-type]


def test_what_kubelet_sends_is_accepted() -> None:
    check_pod_userns(opts(), F)
    check_pod_userns(NamespaceOptions(), F)  # the host's: nothing to check
    several = (IDMapping(100000, 0, 1000), IDMapping(300000, 1000, 64536))
    check_pod_userns(opts(uids=several), F)
    assert pod_root(opts()) == (65536 * 3, 65536 * 3)
    assert pod_root(opts(uids=(IDMapping(100000, 1, 10),))) is None  # root not mapped
    assert pod_root(NamespaceOptions()) is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (opts(mode=NamespaceMode.NODE), "userns_options: ID mappings need mode POD"),
        (opts(mode=NamespaceMode.TARGET), "userns_options.mode: TARGET is not valid"),
        (opts(network=NamespaceMode.NODE), "namespace_options.network: a pod with its own"),
        (opts(pid=NamespaceMode.NODE), "namespace_options.pid: a pod with its own"),
        (opts(uids=()), "userns_options.uids: mode POD needs at least one mapping"),
        (opts(gids=(IDMapping(5, 0, 0),)), r"userns_options.gids\[0\].length: must be positive"),
        (opts(uids=(IDMapping(-1, 0, 5),)), r"uids\[0\]: IDs must not be negative"),
        (opts(uids=(IDMapping(0, 0, 65536),)), r"uids\[0\].host_id: must not map the host's ID 0"),
        (opts(uids=(IDMapping(4294967000, 0, 65536),)), r"uids\[0\]: range runs past"),
        (
            opts(uids=(IDMapping(100000, 0, 100), IDMapping(100050, 100, 100))),
            "uids: host_id ranges overlap",
        ),
        (
            opts(uids=(IDMapping(100000, 0, 100), IDMapping(200000, 50, 100))),
            "uids: container_id ranges overlap",
        ),
        (
            opts(uids=tuple(IDMapping(10 + 2 * i, i, 1) for i in range(MAX_RANGES + 1))),
            "the kernel takes 340",
        ),
    ],
)
def test_bad_options_name_their_field(bad: NamespaceOptions, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_pod_userns(bad, F)


def test_id_map_file_format() -> None:
    text = id_map_text((IDMapping(100000, 0, 1000), IDMapping(300000, 1000, 5)))
    assert text == "0 100000 1000\n1000 300000 5\n"


def test_a_files_owner_outside_the_pods_user_namespace() -> None:
    ids = (IDMapping(host_id=65536, container_id=0, length=65536),)
    pod = NamespaceOptions(userns_mode=NamespaceMode.POD, uid_mappings=ids, gid_mappings=ids)
    assert owner_outside(0, 1000, pod) == (65536, 66536)
    assert owner_outside(70000, 0, pod) == (70000, 65536)  # unmapped: as it is
    assert owner_outside(0, 0, NamespaceOptions()) == (0, 0)
