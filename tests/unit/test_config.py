from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.config import DEFAULT_CONFIG_TEXT, Config, load_config, parse_config_text
from vmcri.errors import ConfigError
from vmcri.handlers.registry import parse_options
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.vm.options import VmOptions


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vmcri.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    config = load_config(None)
    assert config == Config()
    assert config.default_runtime_handler == "vm"
    assert {n: h.backend for n, h in config.runtimes.items()} == {"vm": "vm", "runc": "runc"}


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_default_text_matches_the_built_in_defaults() -> None:
    config = parse_config_text(DEFAULT_CONFIG_TEXT)
    assert config.root == Config().root
    assert config.streaming == Config().streaming
    assert config.network == Config().network
    options = parse_options(config)
    assert options["vm"] == VmOptions()
    assert options["runc"] == RuncOptions()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus = 1", "bogus"),
        ("[streaming]\nprot = 1", "streaming.prot"),
        ("log_level = 'loud'", "log_level"),
        ("root = 5", "root"),
        ("root = 'relative/dir'", "root"),
        ("[streaming]\nport = 70000", "streaming.port"),
        ("default_runtime_handler = 'kata'", "default_runtime_handler"),
        ("[runtimes.fast]\nbackend = 'firecracker'", "runtimes.fast.backend"),
        ("[network]\ncni_bin_dirs = 'x'", "network.cni_bin_dirs"),
        ("root = ", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config_text(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "[runtimes.vm]\nbackend='vm'\n[runtimes.vm.options]\nmachine='pc'",
            "runtimes.vm.options.machine",
        ),
        (
            "[runtimes.vm]\nbackend='vm'\n[runtimes.vm.options]\nmemory=1",
            "runtimes.vm.options.memory",
        ),
        ("[runtimes.vm]\nbackend='vm'\n[runtimes.vm.options]\nboot_timeout_s=0", "boot_timeout_s"),
        (
            "default_runtime_handler='runc'\n[runtimes.runc]\nbackend='runc'\n"
            "[runtimes.runc.options]\nrunc=''",
            "options.runc",
        ),
    ],
)
def test_backend_options_are_strict(text: str, key: str) -> None:
    config = parse_config_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_options(config)


def test_configured_runtimes_replace_the_built_in_ones() -> None:
    with pytest.raises(ConfigError, match="default_runtime_handler: 'vm'"):
        parse_config_text("[runtimes.plain]\nbackend = 'runc'")


def test_custom_handlers_and_default() -> None:
    config = parse_config_text(
        """
default_runtime_handler = "secure"
[runtimes.secure]
backend = "vm"
[runtimes.secure.options]
machine = "q35"
accel = "tcg"
[runtimes.plain]
backend = "runc"
"""
    )
    assert set(config.runtimes) == {"secure", "plain"}
    options = parse_options(config)
    assert isinstance(options["secure"], VmOptions) and options["secure"].accel == "tcg"


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "config.toml"
    config = load_config(example)
    options = parse_options(config)
    assert set(options) == {"vm", "vm-large", "runc"}
    assert isinstance(options["vm-large"], VmOptions) and options["vm-large"].accel == "kvm"
