"""roles/frameworks installs what a vendor index carries from that index alone, the rest from the user's.

The role runs on this machine in check mode, once for three stand-in hosts (local connection), each with
a venv path under the test's folder and the OS package step emptied (``-e``), so nothing is installed:
the pip tasks' arguments are what is checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from dlsetup.runner import HostResult, RunOptions, run_playbooks

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
    tmp = tmp_path_factory.mktemp("frameworks")
    play = tmp / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "frameworks", "hosts": "all", "gather_facts": False,
                                     "roles": [{"role": "dlsetup.workstation.frameworks"}]}]))
    host_vars = {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                        "frameworks_venv_path": str(tmp / name / "venv"), **variables}
                 for name, variables in HOSTS.items()}
    result = run_playbooks([play], [], host_vars=host_vars, capture=[VENDOR, OTHER],
                           options=RunOptions(check=True, extra_vars=(json.dumps({"__frameworks_packages": []}),)))
    for host in result.hosts:
        assert host.failed == 0, host.failure
    assert not list(tmp.glob("*/venv"))
    return {host.host: host for host in result.hosts}


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
