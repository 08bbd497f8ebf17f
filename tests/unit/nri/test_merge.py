"""Adjustments of several plugins merge; two plugins changing one thing is refused."""

from __future__ import annotations

import pytest

from vmcri.api import nri_pb2
from vmcri.errors import PluginError
from vmcri.nri.merge import CreateResult


def _env(key: str, value: str) -> nri_pb2.ContainerAdjustment:
    return nri_pb2.ContainerAdjustment(env=[nri_pb2.KeyValue(key=key, value=value)])


def test_different_things_merge() -> None:
    result = CreateResult("c1")
    result.add_adjustment("10-a", _env("A", "1"))
    result.add_adjustment("20-b", _env("B", "2"))
    assert [(e.key, e.value) for e in result.adjust.env] == [("A", "1"), ("B", "2")]


def test_the_same_env_from_two_plugins_is_refused_naming_both() -> None:
    result = CreateResult("c1")
    result.add_adjustment("10-a", _env("A", "1"))
    with pytest.raises(PluginError, match="10-a and 20-b both adjust env 'A'"):
        result.add_adjustment("20-b", _env("-A", ""))


def test_one_resource_field_from_two_plugins_is_refused_others_merge() -> None:
    first = nri_pb2.ContainerAdjustment()
    first.linux.resources.memory.limit.value = 1 << 26
    second = nri_pb2.ContainerAdjustment()
    second.linux.resources.cpu.shares.value = 512
    third = nri_pb2.ContainerAdjustment()
    third.linux.resources.memory.limit.value = 1 << 27
    result = CreateResult("c1")
    result.add_adjustment("10-a", first)
    result.add_adjustment("20-b", second)
    resources = result.adjust.linux.resources
    assert (resources.memory.limit.value, resources.cpu.shares.value) == (1 << 26, 512)
    with pytest.raises(PluginError, match=r"resources\.memory\.limit"):
        result.add_adjustment("30-c", third)


def test_hooks_only_add_and_never_conflict() -> None:
    hook = nri_pb2.ContainerAdjustment(hooks=nri_pb2.Hooks(prestart=[nri_pb2.Hook(path="/x")]))
    result = CreateResult("c1")
    result.add_adjustment("10-a", hook)
    result.add_adjustment("20-b", hook)
    assert len(result.adjust.hooks.prestart) == 2


def test_updates_of_one_container_conflict_like_adjustments() -> None:
    update = nri_pb2.ContainerUpdate(container_id="c2")
    update.linux.resources.cpu.quota.value = 1000
    result = CreateResult("c1")
    result.add_updates("10-a", [update])
    with pytest.raises(PluginError, match="c2"):
        result.add_updates("20-b", [update])
