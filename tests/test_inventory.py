"""Inventories are read by ansible-inventory and checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsetup.errors import EXIT_USAGE, UsageError
from dlsetup.inventory import LOCALHOST, load_inventory, local_inventory

FLEET = """\
all:
  hosts:
    solo: {}
  children:
    gpu:
      hosts:
        node1: {ansible_host: 10.200.0.11}
        node2: {ansible_host: 10.200.0.12}
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yml"
    path.write_text(FLEET)
    return path


def test_all_hosts(fleet: Path) -> None:
    inventory = load_inventory(fleet)
    assert inventory.hosts == ("node1", "node2", "solo")  # groups first, as ansible-inventory lists them
    assert inventory.sources == (str(fleet),) and not inventory.local
    assert inventory.connection_vars() == {}


def test_limit_selects_a_group(fleet: Path) -> None:
    assert load_inventory(fleet, "gpu").hosts == ("node1", "node2")
    assert load_inventory(fleet, "gpu:!node2").hosts == ("node1",)


def test_limit_matching_nothing(fleet: Path) -> None:
    with pytest.raises(UsageError, match="--limit 'nosuch' matches no host") as err:
        load_inventory(fleet, "nosuch")
    assert err.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("bad.ini", "[gpu\nnode1 ansible_host\n", "Failed to parse"),
    ("bad.yml", "all:\n  hosts: [a, b\n", "YAML parsing failed"),
])
def test_malformed_inventory(tmp_path: Path, name: str, text: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match=f"inventory {path} is not valid: ") as err:
        load_inventory(path)
    assert "\n" not in str(err.value)


def test_missing_inventory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="inventory not found"):
        load_inventory(tmp_path / "nope.yml")


def test_local_inventory() -> None:
    local = local_inventory()
    assert local.local and local.hosts == (LOCALHOST,)
    assert local.connection_vars()[LOCALHOST]["ansible_connection"] == "local"
