"""The metrics endpoint has no authentication: only loopback unless explicitly allowed."""

from __future__ import annotations

import pytest

from vmcri.config import parse_config_text
from vmcri.errors import ConfigError


@pytest.mark.parametrize(
    "address", ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:9464", "metrics.example.com:9464"]
)
def test_non_loopback_address_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.address: .* not a loopback address"):
        parse_config_text(f'[metrics]\naddress = "{address}"')


def test_non_loopback_needs_the_explicit_switch() -> None:
    config = parse_config_text('[metrics]\naddress = "0.0.0.0:9464"\nallow_non_loopback = true')
    assert config.metrics.address == "0.0.0.0:9464"


@pytest.mark.parametrize("address", ["127.0.0.1:9464", "[::1]:9464", "localhost:9464"])
def test_loopback_is_accepted(address: str) -> None:
    assert parse_config_text(f'[metrics]\naddress = "{address}"').metrics.address == address


@pytest.mark.parametrize("address", ["9464", "127.0.0.1:", "127.0.0.1:99999", ":9464"])
def test_malformed_address_names_the_key(address: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.address"):
        parse_config_text(f'[metrics]\naddress = "{address}"')


def test_off_by_default() -> None:
    assert parse_config_text("").metrics.address == ""
