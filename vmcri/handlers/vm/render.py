"""Render a DomainSpec into libvirt domain XML with the Jinja templates."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from vmcri.config import SOURCE_TREE
from vmcri.handlers.vm.domain import Disk, DomainSpec, Nic

TEMPLATE_DIR = SOURCE_TREE / "templates"


@cache
def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_domain(spec: DomainSpec, directory: Path = TEMPLATE_DIR) -> str:
    """The domain XML; every value is XML-escaped by the environment."""
    return _environment(directory).get_template("domain.xml.j2").render(spec=spec)


def render_nic(nic: Nic, directory: Path = TEMPLATE_DIR) -> str:
    """The NIC's ``<interface>`` alone, to hotplug into a VM restored from a template."""
    template = _environment(directory).get_template("devices/nic.xml.j2")
    return template.render(spec={"nic": nic}).strip() + "\n"


def render_disk(disk: Disk, directory: Path = TEMPLATE_DIR) -> str:
    """A layer's or the writable disk's ``<disk>`` alone, to hotplug into a running VM."""
    template = _environment(directory).get_template("devices/disk.xml.j2")
    return template.render(spec={"disk": disk}).strip() + "\n"
