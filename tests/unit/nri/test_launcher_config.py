"""Pre-installed plugins are found by NRI's naming and refused when another user could
have written them; the [nri] section is off by default and strict."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmcri.config import Config, parse_config_text
from vmcri.errors import ConfigError
from vmcri.nri.launcher import discover

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plugin files must be root's")


def _exe(path: Path, mode: int = 0o755) -> None:
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)


@needs_root
def test_plugins_are_found_by_name_with_their_config(tmp_path: Path) -> None:
    plugins, conf = tmp_path / "plugins", tmp_path / "conf"
    plugins.mkdir(mode=0o755)
    conf.mkdir()
    _exe(plugins / "20-second")
    _exe(plugins / "10-first")
    _exe(plugins / "not-a-plugin")
    (plugins / "30-not-executable").write_text("")
    (conf / "10-first.conf").write_text("a = 1\n")
    (conf / "second.conf").write_text("b = 2\n")
    found = discover(str(plugins), str(conf))
    assert [(f.idx, f.base, f.config) for f in found] == [
        ("10", "first", "a = 1\n"),
        ("20", "second", "b = 2\n"),
    ]


@needs_root
def test_a_plugin_others_could_write_is_refused(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o755)
    _exe(plugins / "10-writable", 0o777)
    _exe(plugins / "20-fine")
    (plugins / "30-link").symlink_to(plugins / "20-fine")
    assert [f.base for f in discover(str(plugins), str(tmp_path))] == ["fine"]
    plugins.chmod(0o777)
    assert discover(str(plugins), str(tmp_path)) == []


def test_nri_is_off_by_default_and_its_section_is_strict() -> None:
    assert Config().nri.enable is False
    config = parse_config_text("[nri]\nenable = true\nrequest_timeout_s = 1.5\n")
    assert config.nri.enable and config.nri.request_timeout_s == 1.5
    with pytest.raises(ConfigError, match="nri"):
        parse_config_text("[nri]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"nri\.socket_path"):
        parse_config_text('[nri]\nsocket_path = "relative.sock"\n')
