"""Fleet helpers without a fleet: tuned settings, plans grouped from real captures, retry files, bundle probes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import H100_BUNDLE
from rich.console import Console

from dlsetup import fleet
from dlsetup.errors import EXIT_HOSTS_FAILED, EXIT_USAGE, UsageError
from dlsetup.inventory import load_inventory
from dlsetup.plan import load_request, make_plan
from dlsetup.probe import probe
from dlsetup.runner import HostResult, TaskFailure, settings
from dlsetup.ui.plans import render_groups

#: the files that tell a probe the NVIDIA driver is installed and loaded
NVIDIA_DRIVER_FILES = ("proc/driver", "nvml.json", "cmd/nvidia-smi-L.out", "cmd/nvidia-smi-q-x.out",
                       "cmd/nvidia-smi-q.out", "cmd/nvidia-smi-query-gpu.out", "cmd/nvidia-smi-topo-m.out",
                       "cmd/nvidia-smi.out", "cmd/nvcc-version.out", "expected.json")
GPU_SYSFS = "sys/bus/pci/devices/0000:00:06.0"


def derived_bundle(dest: Path, vendor: str | None = None, device: str | None = None) -> Path:
    """The H100 capture without its NVIDIA driver, optionally with another PCI id on its GPU slot."""
    shutil.copytree(H100_BUNDLE, dest)
    for name in NVIDIA_DRIVER_FILES:
        path = dest / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if vendor and device:
        (dest / GPU_SYSFS / "vendor").write_text(f"0x{vendor}\n")
        (dest / GPU_SYSFS / "device").write_text(f"0x{device}\n")
    return dest


@pytest.fixture(scope="module")
def bundles(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real H100 capture; it without a driver; it with an AMD Instinct MI210 (1002:740f) instead."""
    tmp = tmp_path_factory.mktemp("bundles")
    return {"h100": H100_BUNDLE, "h100-no-driver": derived_bundle(tmp / "no-driver"),
            "mi210": derived_bundle(tmp / "mi210", "1002", "740f")}


def test_tuned_env_forks_per_host_pipelining_and_host_keys(tmp_path: Path) -> None:
    env = settings.tuned_ansible_env(8, tmp_path, mitogen=False)
    assert env["ANSIBLE_FORKS"] == "8"
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert "ControlPersist=120s" in env["ANSIBLE_SSH_ARGS"] and "-C" not in env["ANSIBLE_SSH_ARGS"].split()
    assert env["ANSIBLE_GATHER_SUBSET"] == settings.GATHER_SUBSET
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path)
    assert "ANSIBLE_STRATEGY" not in env
    assert settings.tuned_ansible_env(0, tmp_path)["ANSIBLE_FORKS"] == "1"
    assert settings.tuned_ansible_env(500, tmp_path)["ANSIBLE_FORKS"] == str(settings.MAX_FORKS)


def test_mitogen_strategy_when_supported_linear_fallback_when_not(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = settings.mitogen_strategy_plugins()
    assert plugins is not None and (plugins / "mitogen_linear.py").is_file()
    assert "ANSIBLE_STRATEGY" not in settings.tuned_ansible_env(16, tmp_path)  # opt-in
    env = settings.tuned_ansible_env(16, tmp_path, mitogen=True)
    assert (env["ANSIBLE_STRATEGY"], env["ANSIBLE_STRATEGY_PLUGINS"]) == ("mitogen_linear", str(plugins))
    real = settings._release
    monkeypatch.setattr(settings, "_release", lambda name: (2, 99) if name == "ansible-core" else real(name))
    assert settings.mitogen_strategy_plugins() is None
    assert "ANSIBLE_STRATEGY" not in settings.tuned_ansible_env(16, tmp_path, mitogen=True)


def test_plans_of_different_hardware_are_grouped(bundles: dict[str, Path]) -> None:
    request = load_request()
    hosts = {"a": "h100", "b": "mi210", "c": "h100", "d": "h100-no-driver"}
    plans = {name: make_plan(probe(bundles[kind]), request) for name, kind in hosts.items()}
    groups = fleet.group_plans(plans)
    assert [g.hosts for g in groups] == [("a", "c"), ("b",), ("d",)]
    assert groups[0].roles == ("common", "frameworks")
    assert dict(groups[0].choices)["driver"] == "keep 580.159.04"
    assert dict(groups[0].choices)["torch build"] == "cu130"
    assert groups[1].roles == ("common", "rocm", "frameworks")
    assert dict(groups[1].choices)["torch build"].startswith("rocm")
    assert "nvidia_driver" in groups[2].roles
    assert groups[0].to_dict()["variables"]["dlsetup_roles"] == ["common", "frameworks"]
    console = Console(width=200, record=True)
    console.print(render_groups(groups, [fleet.ProbeFailure("e", "unreachable", "Connection refused")]))
    text = console.export_text()
    assert "a, c" in text and "common > rocm > frameworks" in text and "Connection refused" in text


def test_retry_file_holds_failed_and_unreachable_hosts(tmp_path: Path) -> None:
    path = fleet.retry_file(["inventory.yml"], tmp_path)
    assert path == fleet.retry_file([str(Path("inventory.yml").resolve())], tmp_path)
    assert path != fleet.retry_file(["other.yml"], tmp_path)
    with pytest.raises(UsageError, match="no host failed"):
        fleet.retry_limit(path)
    results = [HostResult("h1", ok=5), HostResult("h2", ok=2, failed=1, failure=TaskFailure("apt", "no package")),
               HostResult("h3", unreachable=1), HostResult("h4", ok=5, changed=2)]
    assert fleet.save_retry(path, results) == ("h2", "h3")
    assert path.read_text() == "h2\nh3\n"
    assert fleet.retry_limit(path) == f"@{path}"
    assert fleet.save_retry(path, results[:1]) == ()
    assert not path.exists()


def test_probe_fleet_reads_bundle_hosts_and_names_bad_ones(bundles: dict[str, Path], tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "gpu1": {fleet.HOST_BUNDLE_VAR: str(bundles["h100"])},
        "amd1": {fleet.HOST_BUNDLE_VAR: str(bundles["mi210"])},
        "gone": {fleet.HOST_BUNDLE_VAR: str(tmp_path / "absent")}}}}))
    outcomes = fleet.probe_fleet(load_inventory(inventory))
    assert sorted(outcomes) == ["amd1", "gone", "gpu1"]
    gpu1, amd1, gone = outcomes["gpu1"], outcomes["amd1"], outcomes["gone"]
    assert not isinstance(gpu1, fleet.ProbeFailure) and not isinstance(amd1, fleet.ProbeFailure)
    assert gpu1.hostname == "gpu1" and gpu1.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert gpu1.nvidia.kernel_module_version == "580.159.04"
    assert amd1.gpus[0].vendor == "amd" and amd1.gpus[0].name == "AMD Instinct MI210"
    assert gone == fleet.ProbeFailure("gone", "failed", f"{fleet.HOST_BUNDLE_VAR}: bundle directory not found: "
                                                        f"{tmp_path / 'absent'}")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def bundle_inventory(bundles: dict[str, Path], tmp_path: Path) -> Path:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "gpu1": {fleet.HOST_BUNDLE_VAR: str(bundles["h100"])},
        "amd1": {fleet.HOST_BUNDLE_VAR: str(bundles["mi210"])},
        "gone": {fleet.HOST_BUNDLE_VAR: str(tmp_path / "absent")}}}}, sort_keys=False))
    return inventory


def test_probe_inventory_json_has_every_host(bundle_inventory: Path, tmp_path: Path) -> None:
    run = cli("probe", "-i", str(bundle_inventory), "--json")
    assert run.returncode == EXIT_HOSTS_FAILED, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["gpu1", "amd1", "gone"]  # the inventory's order
    assert doc["gpu1"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert doc["amd1"]["gpus"][0]["name"] == "AMD Instinct MI210"
    assert doc["gone"] == {"host": "gone", "status": "failed",
                           "message": f"{fleet.HOST_BUNDLE_VAR}: bundle directory not found: {tmp_path / 'absent'}"}
    assert run.stderr.startswith("dlsetup: error: 1 host(s) failed while probing: gone (")
    limited = cli("probe", "-i", str(bundle_inventory), "--limit", "gpu1")
    assert limited.returncode == 0 and "NVIDIA H100 80GB HBM3" in limited.stdout and "amd1" not in limited.stdout


def test_check_inventory_judges_each_host(bundle_inventory: Path) -> None:
    run = cli("check", "-i", str(bundle_inventory), "--limit", "gpu1,amd1", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert sorted(doc) == ["amd1", "gpu1"]
    assert doc["gpu1"]["host"] == "gpu1" and doc["gpu1"]["summary"]["fail"] == 0
    findings = {f["id"]: f for f in doc["gpu1"]["findings"]}
    assert (findings["driver.loaded"]["severity"], findings["storage.fast"]["severity"]) == ("pass", "warn")
    text = cli("check", "-i", str(bundle_inventory))
    assert text.returncode == EXIT_HOSTS_FAILED
    assert "check: gpu1" in text.stdout and "check: amd1" in text.stdout and "gone: failed" in text.stdout


@pytest.mark.parametrize("args", [["probe", "--limit", "x"], ["check", "--limit", "x"],
                                  ["probe", "-i", "hosts.yml", "--from-bundle", "b"]])
def test_inventory_options_misused(args: list[str]) -> None:
    run = cli(*args)
    assert run.returncode == EXIT_USAGE and "Traceback" not in run.stderr
    assert run.stderr.startswith("dlsetup: error: ")
