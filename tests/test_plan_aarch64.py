"""aarch64 hosts: a Grace Hopper (GH200) is planned with NVIDIA's sbsa repositories and aarch64 wheels; a Jetson
(Tegra) board and ROCm on Arm are refused with one line.

The hosts are bundles built from real captures (tests/fixtures/public/SOURCES.tsv): a GH200's lscpu, uname
and nvidia-smi -q, and a Jetson AGX Orin's lscpu and uname. Their os-release is the Ubuntu 24.04 one of the
H100 bundle (the public captures have none).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import H100_BUNDLE, PUBLIC, REPO
from dlsetup.model import GPU, HostProfile, OSInfo
from dlsetup.pkgindex import IndexFile, Project
from dlsetup.plan import PlanConflict, Request, make_plan
from dlsetup.probe import probe_host
from dlsetup.probe.host import Host

CUDA_REPOS = "https://developer.download.nvidia.com/compute/cuda/repos/"
TORCH = "https://download.pytorch.org/whl/"


def _bundle(tmp_path: Path, lscpu: str, uname: str, smi_q: str | None = None) -> Path:
    root = tmp_path / "bundle"
    (root / "cmd").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy(H100_BUNDLE / "etc" / "os-release", root / "etc" / "os-release")
    shutil.copy(PUBLIC / "cpu" / lscpu, root / "cmd" / "lscpu.out")
    shutil.copy(PUBLIC / "system" / uname, root / "cmd" / "uname-a.out")
    if smi_q:
        shutil.copy(PUBLIC / "nvidia" / smi_q, root / "cmd" / "nvidia-smi-q.out")
    return root


def gh200_bundle(tmp_path: Path) -> Path:
    return _bundle(tmp_path, "lscpu_gh200-neoverse-v2-64c_container.txt", "uname-a_gh200_6.8.0-1013-nvidia-64k.txt",
                   "smi-q_gh200-480gb_drv550.127.05.txt")


def jetson_bundle(tmp_path: Path) -> Path:
    return _bundle(tmp_path, "lscpu_jetson-agx-orin-cortex-a78ae-12c.txt",
                   "uname-a_jetson-agx-orin_5.15.148-tegra.txt")


@pytest.fixture
def gh200(tmp_path: Path) -> HostProfile:
    return probe_host(Host.bundle(gh200_bundle(tmp_path)))


def choice(plan, topic: str) -> tuple[str, str]:
    d = [d for d in plan.decisions if d.topic == topic][-1]
    return d.choice, d.rule


def test_gh200_bundle_reads_as_an_arm_host_with_a_hopper_gpu(gh200):
    assert (gh200.os.arch, gh200.os.id, gh200.os.version_id) == ("aarch64", "ubuntu", "24.04")
    assert (gh200.cpu.model, gh200.cpu.vendor, gh200.cpu.physical_cores) == ("Neoverse-V2", "ARM", 64)
    (gpu,) = gh200.gpus
    # the text report of nvidia-smi -q (no XML in the bundle) and the GPU table's row for PCI id 2342
    assert (gpu.name, gpu.pci_device_id, gpu.architecture, gpu.compute_capability) == (
        "NVIDIA GH200 480GB", "2342", "Hopper", "9.0")
    assert gh200.nvidia.library_version == "550.127.05" and gh200.nvidia.cuda_driver_version == "12.4"


def test_gh200_is_planned_from_the_sbsa_repository_with_aarch64_wheels(gh200):
    plan = make_plan(gh200, Request(cuda="13.0", container_toolkit=True))
    assert choice(plan, "architecture") == ("aarch64", "os:arch-aarch64")
    assert choice(plan, "kernel modules") == ("open", "nvidia:Hopper")
    # the GH200's loaded 550 runs no CUDA 13 build of torch: the production branch replaces it
    assert choice(plan, "driver") == ("install branch 595", "nvidia:branch-595")
    assert choice(plan, "torch build") == ("cu130", "cuda:13.0")
    v = plan.variables
    for role in ("nvidia_driver", "cuda_toolkit"):
        assert v[f"{role}_repo_url"] == CUDA_REPOS + "ubuntu2404/sbsa/"
        assert v[f"{role}_repo_key_url"] == CUDA_REPOS + "ubuntu2404/sbsa/3bf863cc.pub"
    assert plan.roles == ("common", "nvidia_driver", "cuda_toolkit", "nvidia_container_toolkit", "frameworks")
    assert [i["url"] for i in v["frameworks_pip_vendor_indexes"]] == [TORCH + "cu130"]
    # no variable names the other architecture: the container toolkit's list is per architecture ($(ARCH))
    text = json.dumps(v)
    assert "x86_64" not in text and "amd64" not in text
    assert v["nvidia_container_toolkit_repo_url"].endswith("/stable/deb/$(ARCH)")


def test_debian_13_arm_keeps_its_own_key_under_sbsa(gh200):
    trixie = replace(gh200, os=replace(gh200.os, id="debian", version_id="13", codename="trixie"))
    plan = make_plan(trixie, Request())
    assert plan.variables["nvidia_driver_repo_key_url"] == CUDA_REPOS + "debian13/sbsa/8793F200.pub"
    assert plan.variables["nvidia_driver_repo_key_fingerprint"] == "02182E60104FCDC26EAE1B8597A5D4CB8793F200"


def test_x86_64_plans_keep_the_x86_64_repository(gh200):
    x86 = replace(gh200, os=replace(gh200.os, arch="x86_64"))
    plan = make_plan(x86, Request())
    assert plan.variables["nvidia_driver_repo_url"] == CUDA_REPOS + "ubuntu2404/x86_64/"
    assert not [d for d in plan.decisions if d.topic == "architecture"]


def test_only_torch_builds_with_aarch64_wheels_are_planned(gh200):
    # torch 2.8's aarch64 CUDA wheels are cu128 only: a CUDA 12.6 pin has no aarch64 build, on x86_64 it has
    request = Request(torch="2.8", cuda="12.6", python="3.12")
    with pytest.raises(PlanConflict, match="torch 2.8.0 has no CUDA build for this GPU at CUDA <= 12.6"):
        make_plan(gh200, request)
    x86 = make_plan(replace(gh200, os=replace(gh200.os, arch="x86_64")), request)
    assert choice(x86, "torch build") == ("cu126", "cuda:12.6")


def test_jax_keeps_its_cuda_build_on_grace(gh200):
    plan = make_plan(gh200, Request(frameworks=("jax",)))
    assert plan.variables["frameworks_packages"] == ["jax[cuda13]==0.12.*"]


def test_tensorflow_has_no_cuda_build_for_aarch64(gh200):
    with pytest.raises(PlanConflict) as err:
        make_plan(gh200, Request(frameworks=("tensorflow",)))
    assert str(err.value) == ("tensorflow 2.21.0 has no CUDA build for aarch64 (its Linux aarch64 wheels are CPU "
                              "builds): use --framework pytorch or --framework jax")


def test_cpu_only_arm_server_gets_the_cpu_builds(gh200):
    server = replace(gh200, gpus=(), nvidia=replace(gh200.nvidia, library_version=None, cuda_driver_version=None))
    plan = make_plan(server, Request(frameworks=("pytorch", "tensorflow")))
    assert choice(plan, "torch build") == ("cpu", "rule:cpu-only")
    assert plan.variables["frameworks_packages"] == ["torch==2.15.*", "tensorflow==2.21.*"]
    assert plan.roles == ("common", "frameworks")


def test_rocm_on_arm_is_refused_or_left_out(gh200):
    amd = replace(gh200, gpus=(GPU(vendor="amd", pci_bus_id="0000:03:00.0", name="AMD Instinct MI210",
                                   gfx_target="gfx90a"),))
    with pytest.raises(PlanConflict) as err:
        make_plan(amd, Request(rocm="7.2"))
    assert str(err.value) == "--rocm 7.2: AMD publishes ROCm for x86_64 only and this host is aarch64: drop --rocm"
    plan = make_plan(amd, Request())
    assert "rocm" not in plan.roles
    assert ("accelerator", "cpu", "os:arch-aarch64") in [(d.topic, d.choice, d.rule) for d in plan.decisions]
    assert any("ROCm for x86_64 only" in w for w in plan.warnings)


def test_other_architectures_are_refused():
    host = HostProfile(os=OSInfo(id="ubuntu", version_id="24.04", codename="noble", arch="riscv64"))
    with pytest.raises(PlanConflict, match=r"^architecture riscv64 is not supported: dlsetup plans x86_64 and "
                                           r"aarch64 hosts only"):
        make_plan(host, Request())


def test_jetson_bundle_is_refused_in_one_line_exit_2(tmp_path):
    root = jetson_bundle(tmp_path)
    result = subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--from-bundle", str(root), "--offline"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "NVIDIA Jetson (Tegra) board (L4T kernel 5.15.148-tegra)" in lines[0] and "JetPack" in lines[0]


def test_tegra_cpu_alone_tells_a_jetson(tmp_path):
    # an older Jetson (Xavier-class Carmel cores, lscpu Vendor ID "Nvidia") with a kernel that does not say tegra
    root = _bundle(tmp_path, "lscpu_nvidia-tegra-carmel-6c_socket3-clusters.txt",
                   "uname-a_gh200_6.8.0-1013-nvidia-64k.txt")
    with pytest.raises(PlanConflict, match=r"\(NVIDIA Tegra CPU"):
        make_plan(probe_host(Host.bundle(root)), Request())


def test_grace_is_not_taken_for_a_jetson(gh200):
    from dlsetup.plan.planner import jetson_evidence

    assert jetson_evidence(gh200) is None
    orin = replace(gh200, gpus=(replace(gh200.gpus[0], name="Orin (nvgpu)"),))
    assert jetson_evidence(orin) == "integrated GPU Orin (nvgpu)"


def test_index_answers_are_read_for_the_host_architecture():
    # wheel names as PyTorch's CPU index lists them for 2.10.0 (aarch64 and x86_64)
    page = Project("torch", "https://download.pytorch.org/whl/cpu/torch/", "2026-11-28", (
        IndexFile("torch-2.10.0+cpu-cp313-cp313-manylinux_2_28_aarch64.whl"),
        IndexFile("torch-2.9.1+cpu-cp313-cp313-manylinux_2_28_x86_64.whl"),
    ))
    assert [str(v) for v in page.releases("3.13", "aarch64")] == ["2.10.0"]
    assert [str(v) for v in page.releases("3.13")] == ["2.9.1"]
    assert page.builds("2.10.0", "3.13", "aarch64") == ("cpu",) and page.builds("2.10.0", "3.13") == ()


def test_a_system_without_an_sbsa_repository_is_refused(gh200, monkeypatch):
    from dlsetup.plan import compat

    data = compat.load()
    x86_only = replace(data, systems=tuple(replace(s, cuda_arches=("x86_64",)) if s.key == "ubuntu 24.04" else s
                                           for s in data.systems))
    monkeypatch.setattr(compat, "load", lambda: x86_only)
    with pytest.raises(PlanConflict) as err:
        make_plan(gh200, Request())
    assert str(err.value).startswith("NVIDIA publishes no sbsa CUDA repository for ubuntu 24.04: install one of "
                                     "ubuntu 22.04, debian 12")


def test_check_does_not_ask_an_arm_cpu_for_avx2(gh200):
    from dlsetup.advice import run_checks

    (avx,) = [f for f in run_checks(gh200) if f.id == "cpu.avx2"]
    assert (avx.severity, avx.message) == ("info", "an aarch64 CPU: AVX2 and AVX-512 are x86 instruction sets")
    assert not [f for f in run_checks(gh200) if f.id == "cpu.avx512"]
    x86 = replace(gh200, os=replace(gh200.os, arch="x86_64"))  # the same flags read on x86_64: no AVX2
    assert [f.severity for f in run_checks(x86) if f.id == "cpu.avx2"] == ["warn"]


@pytest.mark.parametrize(("name", "device", "cc", "build"), [
    ("NVIDIA GB200", "2941", "10.0", "cu132"),  # Grace Blackwell: Blackwell needs the open modules
    ("NVIDIA GB10", "2e12", "12.1", "cu132"),  # DGX Spark
])
def test_grace_blackwell_hosts_are_planned_with_open_modules(gh200, name, device, cc, build):
    gpu = replace(gh200.gpus[0], name=name, pci_device_id=device, compute_capability=cc, architecture="Blackwell")
    plan = make_plan(replace(gh200, gpus=(gpu,)), Request())
    assert choice(plan, "kernel modules") == ("open", "nvidia:Blackwell")
    assert choice(plan, "torch build")[0] == build
    assert plan.variables["nvidia_driver_repo_url"] == CUDA_REPOS + "ubuntu2404/sbsa/"


@pytest.mark.parametrize("os_file", ["Debian-12.yml", "Debian-13.yml", "Ubuntu-22.04.yml", "Ubuntu-24.04.yml",
                                     pytest.param("Ubuntu-26.04.yml", marks=pytest.mark.xfail(
                                         strict=True, reason="Ubuntu 26.04's CUDA key: os.toml keeps 3bf863cc "
                                         "(unconfirmed), the roles assume 8793F200 (as test_pinned_keys)"))])
def test_roles_on_their_own_pick_the_repository_the_plan_names_on_arm(gh200, os_file):
    """Run from plain ansible-playbook on an aarch64 host (no plan variables), the driver and CUDA roles default
    to the same sbsa repository and key that the plan hands them."""
    from tests.test_vendor_descriptions import render, value

    distro_id, version = os_file.removesuffix(".yml").split("-")
    host = replace(gh200, os=replace(gh200.os, id=distro_id.lower(), version_id=version))
    plan = make_plan(host, Request(cuda="13.0"))
    facts = {"ansible_facts": {"architecture": "aarch64"}}
    for role in ("nvidia_driver", "cuda_toolkit"):
        templar = render(REPO / "roles" / role, os_file, **facts)
        for key in ("url", "key_url", "key_fingerprint"):
            assert value(templar, f"{role}_repo_{key}") == plan.variables[f"{role}_repo_{key}"], (role, key)
