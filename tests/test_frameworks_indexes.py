"""roles/frameworks installs what a vendor index carries from that index alone, the rest from the user's.

The role runs on this machine in check mode, once for three stand-in hosts (local connection), each with
a venv path under the test's folder and the OS package step emptied (``-e``), so nothing is installed:
the pip tasks' arguments are what is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

import rolecheck
from dlsetup.runner import HostResult

VENDOR = "Install the frameworks a vendor index carries, from that index alone"
OTHER = "Install the other packages into the venv"
TORCH_INDEX = "http://127.0.0.1:9/whl/cu130"  # nothing listens: a run that reached it would fail
USER_INDEX = "http://127.0.0.1:9/mirror/simple"
HOSTS = {
    "vendor-and-user": {"frameworks_packages": ["torch==2.13.0", "Tensorflow[and-cuda]==2.21.0", "torchtriton", "jax"],
                        "frameworks_pip_vendor_indexes": [{"url": TORCH_INDEX, "projects": ["torch", "torchaudio"]}],
                        "frameworks_pip_index_url": USER_INDEX},
    "no-vendor-index": {"frameworks_packages": ["torch==2.13.0"], "frameworks_pip_index_url": USER_INDEX},
    "offline": {"frameworks_packages": ["torch==2.13.0+cpu"],
                "frameworks_pip_vendor_indexes": [{"url": TORCH_INDEX, "projects": ["torch"]}],
                "frameworks_pip_find_links": ["/var/cache/dlsetup/wheels"], "frameworks_pip_offline": True},
}

pytestmark = pytest.mark.skipif(not Path("/etc/debian_version").exists(),
                                reason="the role runs on this machine: it supports Debian and Ubuntu")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, HostResult]:
    result = rolecheck.frameworks(tmp_path_factory.mktemp("frameworks"), HOSTS, [VENDOR, OTHER])
    for host in result.values():
        assert host.failed == 0, host.failure
    return result


def _args(result: Dict[str, Any]) -> Dict[str, Any]:
    return result["invocation"]["module_args"]


def test_torch_from_the_vendor_index_alone_the_rest_from_the_users(hosts: Dict[str, HostResult]) -> None:
    captured = hosts["vendor-and-user"].captured
    (vendor,) = captured[VENDOR]["results"]
    assert _args(vendor)["name"] == ["torch==2.13.0"]
    assert _args(vendor)["extra_args"] == f"--index-url {TORCH_INDEX}"
    assert USER_INDEX not in json.dumps(vendor["invocation"])
    other = _args(captured[OTHER])
    # a project whose name only starts like a vendor project's is not the vendor's
    assert other["name"] == ["Tensorflow[and-cuda]==2.21.0", "torchtriton", "jax"]
    assert other["extra_args"] == f"--index-url {USER_INDEX}"


def test_no_vendor_index_one_pip_run(hosts: Dict[str, HostResult]) -> None:
    captured = hosts["no-vendor-index"].captured
    assert VENDOR not in captured  # skipped: no vendor index
    assert _args(captured[OTHER])["name"] == ["torch==2.13.0"]


def test_offline_ignores_vendor_indexes(hosts: Dict[str, HostResult]) -> None:
    captured = hosts["offline"].captured
    assert VENDOR not in captured
    assert _args(captured[OTHER])["name"] == ["torch==2.13.0+cpu"]
    assert _args(captured[OTHER])["extra_args"] == "--find-links=/var/cache/dlsetup/wheels --no-index"
