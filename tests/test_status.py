"""``dlsetup status``: the pure comparison (every drift kind planted in an in-sync host is named, with its
fix), the venv reader, and the command over bundles (exit 0 in sync, 1 on drift, --json)."""

import dataclasses
import json
import shutil
import subprocess
import sys
import venv as venv_module
from pathlib import Path

import pytest

from conftest import H100_BUNDLE, REPO
from dlsetup.model import KernelImage, KernelState, MdArray, MdMember, Mount
from dlsetup.plan import load_request
from dlsetup.probe import Host, probe
from dlsetup.probe.installed import parse_dpkg_status, read_installed, venv_command
from dlsetup.status import planned_accelerator, status_of

K_OLD, K_NEW = "6.8.0-88-generic", "6.8.0-90-generic"
VENV = "/opt/dlsetup/venvs/pytorch"  # one venv per framework: the pytorch one
#: what the capture's host gets: its loaded 580 driver kept, CUDA 13.0, the container toolkit, torch cu130
REQUEST = load_request(None, cuda="13.0", container_toolkit=True, offline=True)
#: the array provision built (a layout over the capture's disks is not plannable: they are in use)
ARRAYS = {"storage_arrays": [{"name": "md0", "level": "raid1", "mountpoint": "/data"}]}


@pytest.fixture(scope="module")
def h100():
    return probe(bundle=H100_BUNDLE)


def in_sync(profile):
    """The capture, with the kernel facts and installed state of a host that provision converged."""
    kernels = KernelState(running=K_NEW, next_boot=K_NEW, next_boot_source="grub.cfg", kernels=(
        KernelImage(K_OLD, nvidia_module="dkms", headers=True), KernelImage(K_NEW, nvidia_module="dkms", headers=True)))
    profile = dataclasses.replace(profile, kernel=kernels, storage=dataclasses.replace(
        profile.storage, arrays=(MdArray("md0", "active", "raid1",
                                         members=(MdMember("nvme1n1", 0), MdMember("nvme2n1", 1)),
                                         devices_total=2, devices_active=2, degraded=False),),
        mounts=profile.storage.mounts + (Mount("/data", "/dev/md0", "xfs"),)))
    installed = {
        "packages": {"cuda-toolkit-13-0": ["ii", "13.0.2-1"], "nvidia-container-toolkit": ["ii", "1.18.0-1"],
                     "nvidia-open-580": ["hi", "580.159.04-1ubuntu1"], "bash": ["ii", "5.2.21-2ubuntu4"]},
        "reboot": [],
        "venv": {"path": VENV, "exists": True, "python": "3.12",
                 "packages": {"torch": "2.15.0+cu130", "numpy": "2.3.0"}, "torch_cuda": "13.0", "torch_hip": None},
    }
    return profile, installed


def replace_in(data, path, value):
    data = json.loads(json.dumps(data))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def nv(profile, **changes):
    return dataclasses.replace(profile, nvidia=dataclasses.replace(profile.nvidia, **changes))


def kern(profile, **changes):
    return dataclasses.replace(profile, kernel=dataclasses.replace(profile.kernel, **changes))


def drift_of(profile, installed):
    return status_of("h", profile, installed, REQUEST, ARRAYS).drift


def test_in_sync_host_has_no_drift(h100):
    profile, installed = in_sync(h100)
    result = status_of("h", profile, installed, REQUEST, ARRAYS)
    assert result.drift == ()
    topics = {i.topic for i in result.items}
    assert {"driver", "driver library", "CUDA toolkit", "container toolkit", "hold nvidia-open-580", "torch",
            "torch build", "array /data", "array md0", "reboot", f"kernel {K_NEW} (running, next boot)"} <= topics


# (name, how the host differs, the drift topic named, a piece of the fix)
PLANTED = [
    ("driver not loaded", lambda p, i: (nv(p, kernel_module_loaded=False), i), "driver", "modprobe nvidia"),
    ("driver gone with the kernel", lambda p, i: (nv(kern(p, kernels=(KernelImage(K_OLD, "dkms", headers=True),
                                                                      KernelImage(K_NEW, headers=False))),
                                                     kernel_module_loaded=False), i),
     ("driver", f"kernel {K_NEW} (running, next boot)"),
     f"apt install linux-headers-{K_NEW} && dkms autoinstall -k {K_NEW} && modprobe nvidia"),
    ("library newer than module", lambda p, i: (nv(p, reboot_required=True, library_version="580.172.01"), i),
     "driver library", "reboot"),
    ("next boot without module", lambda p, i: (kern(p, running=K_OLD, kernels=(
        KernelImage(K_OLD, "dkms", headers=True),
        KernelImage(K_NEW, headers=True, dkms_failure="nvidia/580: error"))), i),
     f"kernel {K_NEW} (next boot)", f"dkms autoinstall -k {K_NEW}"),
    ("running kernel without module", lambda p, i: (kern(p, running=K_OLD, next_boot=K_OLD, kernels=(
        KernelImage(K_OLD, headers=True), KernelImage(K_NEW, "dkms", headers=True))), i),
     f"kernel {K_OLD} (running, next boot)", f"dkms autoinstall -k {K_OLD}"),
    ("CUDA toolkit removed", lambda p, i: (p, replace_in(i, ["packages", "cuda-toolkit-13-0"], ["rc", "13.0.2-1"])),
     "CUDA toolkit", "apt install cuda-toolkit-13-0"),
    ("container toolkit missing", lambda p, i: (p, replace_in(i, ["packages", "nvidia-container-toolkit"], KeyError)),
     "container toolkit", "apt install nvidia-container-toolkit"),
    ("hold removed", lambda p, i: (p, replace_in(i, ["packages", "nvidia-open-580"], ["ii", "580.159.04-1ubuntu1"])),
     "hold nvidia-open-580", "apt-mark hold nvidia-open-580"),
    ("torch uninstalled", lambda p, i: (p, replace_in(i, ["venv", "packages", "torch"], KeyError)),
     "torch", f"{VENV}/bin/pip install --force-reinstall 'torch==2.15.*' --index-url https://download.pytorch.org/whl/cu130"),
    ("torch other release", lambda p, i: (p, replace_in(i, ["venv", "packages", "torch"], "2.14.1+cu130")),
     "torch", "'torch==2.15.*'"),
    ("torch became a CPU build", lambda p, i: (p, replace_in(replace_in(i, ["venv", "packages", "torch"], "2.15.0"),
                                                             ["venv", "torch_cuda"], None)),
     "torch build", "--index-url https://download.pytorch.org/whl/cu130"),
    ("venv gone", lambda p, i: (p, replace_in(i, ["venv", "exists"], False)), "venv", "dlsetup provision"),
    ("array degraded", lambda p, i: (dataclasses.replace(p, storage=dataclasses.replace(p.storage, arrays=(
        MdArray("md0", "active", "raid1", members=(MdMember("nvme1n1", 0), MdMember("nvme2n1", 1, "faulty")),
                devices_total=2, devices_active=1, degraded=True),))), i),
     "array md0", "mdadm /dev/md0 --remove /dev/nvme2n1"),
    ("array not mounted", lambda p, i: (dataclasses.replace(p, storage=dataclasses.replace(
        p.storage, mounts=tuple(m for m in p.storage.mounts if m.mountpoint != "/data"))), i),
     "array /data", "mount /data"),
    ("reboot pending", lambda p, i: (p, replace_in(i, ["reboot"], ["/run/dlsetup/reboot-required"])),
     "reboot", "reboot"),
]


@pytest.mark.parametrize("name, plant, topic, fix", PLANTED, ids=[p[0] for p in PLANTED])
def test_every_planted_drift_is_named_with_its_fix(h100, name, plant, topic, fix):
    profile, installed = plant(*in_sync(h100))
    drift = drift_of(profile, installed)
    assert [d.topic for d in drift] == ([topic] if isinstance(topic, str) else list(topic)), drift
    assert fix in drift[0].fix


def test_dpkg_unknown_is_drift_not_in_sync(h100):
    profile, installed = in_sync(h100)
    drift = drift_of(profile, {**installed, "packages": None})
    assert {d.topic for d in drift} == {"CUDA toolkit", "container toolkit"}


def test_planned_accelerator_from_the_index():
    whl = "https://download.pytorch.org/whl"
    assert planned_accelerator({"frameworks_pip_extra_index_urls": [f"{whl}/cu130"]}) == "cuda 13.0"
    assert planned_accelerator({"frameworks_pip_extra_index_urls": [f"{whl}/rocm7.0/"]}) == "rocm 7.0"
    assert planned_accelerator({"frameworks_pip_extra_index_urls": ["https://download.pytorch.org/whl/cpu"]}) == "cpu"
    assert planned_accelerator({"frameworks_pip_index_url": "https://mirror.example/simple"}) is None


def test_extra_vars():
    from dlsetup.errors import UsageError
    from dlsetup.runner import read_extra_vars

    assert read_extra_vars(('{"frameworks_packages": []}', "a=b")) == {"frameworks_packages": [], "a": "b"}
    with pytest.raises(UsageError):
        read_extra_vars(("nonsense",))


def test_dpkg_status_lines():
    text = "ii  bash 5.2.21-2ubuntu4\nhi  nvidia-open-580 580.159.04-1\nrc  cuda-toolkit-13-0 13.0.2-1\nun  foo \n"
    assert parse_dpkg_status(text) == {"bash": ["ii", "5.2.21-2ubuntu4"], "nvidia-open-580": ["hi", "580.159.04-1"],
                                       "cuda-toolkit-13-0": ["rc", "13.0.2-1"], "foo": ["un", ""]}
    assert parse_dpkg_status(None) is None


def test_venv_reader_on_a_real_venv(tmp_path):
    """The script the venv's python runs: its distributions, and torch's build read from torch/version.py."""
    path = tmp_path / "venv"
    venv_module.create(path, with_pip=False)
    site = next(path.glob("lib/python*/site-packages"))
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text(
        "__version__ = '2.15.0+cu130'\ncuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n")
    info = site / "torch-2.15.0+cu130.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.15.0+cu130\n")
    (info / "RECORD").write_text("torch/version.py,,\ntorch-2.15.0+cu130.dist-info/METADATA,,\n")
    out = subprocess.run(venv_command(str(path)), capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(out.stdout)
    assert data["packages"]["torch"] == "2.15.0+cu130"
    assert (data["torch_cuda"], data["torch_hip"]) == ("13.0", None)
    facts = read_installed(Host.live(), str(path))
    assert facts["venv"]["packages"]["torch"] == "2.15.0+cu130" and facts["venv"]["torch_cuda"] == "13.0"


def test_each_framework_venv_is_compared_with_its_own_packages(h100):
    """Two venvs (PyTorch; Keras on torch): each checked against its own requirements, drift named by venv."""
    profile, installed = in_sync(h100)
    request = load_request(None, cuda="13.0", container_toolkit=True, offline=True, frameworks=("pytorch", "keras"),
                           keras_backend="torch")
    keras = {**installed["venv"], "path": "/opt/dlsetup/venvs/keras",
             "packages": {"torch": "2.15.0+cu130", "keras": "3.15.1"}}
    both = {**installed, "venvs": {VENV: installed["venv"], keras["path"]: keras}}
    assert status_of("h", profile, both, request, ARRAYS).drift == ()
    # keras is not wanted in the pytorch venv: only the keras venv lacking it is drift
    gone = {**both, "venvs": {VENV: installed["venv"], keras["path"]: {**keras, "packages": {"torch": "2.15.0+cu130"}}}}
    (item,) = status_of("h", profile, gone, request, ARRAYS).drift
    assert item.topic == "keras (keras)" and item.fix.startswith("/opt/dlsetup/venvs/keras/bin/pip install")
    missing = {**both, "venvs": {VENV: installed["venv"]}}
    (item,) = status_of("h", profile, missing, request, ARRAYS).drift
    assert (item.topic, item.expected, item.found) == ("venv (keras)", "/opt/dlsetup/venvs/keras", "missing")


# -- the command over bundles -----------------------------------------------------------------------------


def make_bundle(tmp_path: Path, *, torch=True, reboot=False) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle, symlinks=True)
    for release in (K_OLD, K_NEW):
        for path in (f"boot/vmlinuz-{release}", f"lib/modules/{release}/updates/dkms/nvidia.ko.zst",
                     f"usr/src/linux-headers-{release}/Makefile"):
            (bundle / path).parent.mkdir(parents=True, exist_ok=True)
            (bundle / path).write_text("")
    (bundle / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (bundle / "cmd" / "dpkg-query-status.out").write_text(
        "ii  cuda-toolkit-13-0 13.0.2-1\nii  nvidia-container-toolkit 1.18.0-1\nhi  nvidia-open-580 580.159.04-1\n")
    (bundle / "opt/dlsetup/venvs/pytorch/bin").mkdir(parents=True)
    (bundle / "opt/dlsetup/venvs/pytorch/bin/python").write_text("")
    packages = {"torch": "2.15.0+cu130"} if torch else {}
    (bundle / "cmd" / "venv-facts.out").write_text(json.dumps({"python": "3.12", "packages": packages,
                                                               "torch_cuda": "13.0" if torch else None}))
    if reboot:
        (bundle / "run/dlsetup").mkdir(parents=True)
        (bundle / "run/dlsetup/reboot-required").write_text("nvidia_driver\n")
    return bundle


def run_status(bundle: Path, *args: str):
    return subprocess.run([sys.executable, "-m", "dlsetup", "status", "--offline", "--cuda", "13.0",
                           "--container-toolkit", "--from-bundle", str(bundle), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_in_sync_exits_0(tmp_path):
    run = run_status(make_bundle(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "in sync" in run.stdout


def test_cli_drift_exits_1_and_json_names_each(tmp_path):
    run = run_status(make_bundle(tmp_path, torch=False, reboot=True), "--json")
    assert run.returncode == 1, run.stderr
    (doc,) = json.loads(run.stdout).values()
    assert doc["status"] == "drift"
    assert {d["topic"] for d in doc["drift"]} == {"torch", "reboot"}
    assert all(d["fix"] for d in doc["drift"])


def test_cli_bad_input_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dlsetup", "status", "--from-bundle", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0


def test_report_shows_status_json(tmp_path):
    from dlsetup.report import read_inputs, render

    run = run_status(make_bundle(tmp_path, torch=False), "--json")
    path = tmp_path / "status.json"
    path.write_text(run.stdout)
    (host,) = read_inputs([path])
    assert host.documents["status"]["status"] == "drift"
    html = render([host])
    assert "<h3>Status</h3>" in html and "install --force-reinstall" in html
    bad = json.loads(run.stdout)
    next(iter(bad.values()))["items"][0]["ok"] = "yes"
    path.write_text(json.dumps(bad))
    from dlsetup.errors import UsageError

    with pytest.raises(UsageError, match=r"items\[0\]\.ok"):
        read_inputs([path])


def test_cli_inventory_of_bundle_hosts(tmp_path):
    """-i with hosts planned from saved bundles (dlsetup_probe_bundle): no connection, the same comparison."""
    good, bad = make_bundle(tmp_path / "a"), make_bundle(tmp_path / "b", torch=False)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"good": {"dlsetup_probe_bundle": str(good)},
                                                       "bad": {"dlsetup_probe_bundle": str(bad)}}}}))
    run = subprocess.run([sys.executable, "-m", "dlsetup", "status", "-i", str(inventory), "--offline",
                          "--cuda", "13.0", "--container-toolkit", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 1, run.stderr
    docs = json.loads(run.stdout)
    assert (docs["good"]["status"], docs["bad"]["status"]) == ("in sync", "drift")
    assert [d["topic"] for d in docs["bad"]["drift"]] == ["torch"]


@pytest.mark.parametrize("content, message", [
    ("all: [unclosed\n", "is not valid"),
    ('{"all": {"hosts": {"a": {"dlsetup_probe_bundle": "/nonexistent"}}}}', "matches no host"),
])
def test_cli_bad_inventory_is_one_line(tmp_path, content, message):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(content)
    run = subprocess.run([sys.executable, "-m", "dlsetup", "status", "-i", str(inventory), "-l", "nobody", "--offline"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
