"""The resolver over real captures and profiles of cards we hold no capture of.

Each row: a host, a request, what the plan must decide, and the rule (table row or planner rule)
the decision must cite. Driver versions and compute capabilities come from the captures named.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
import subprocess
from dataclasses import replace

import pytest

from dlsetup.model import GPU, HostProfile, NvidiaState, OSInfo
from dlsetup.plan import PlanConflict, Request, make_plan
from dlsetup.plan import compat
from tests.conftest import H100_BUNDLE

UBUNTU2404 = OSInfo(id="ubuntu", version_id="24.04", codename="noble", arch="x86_64")
UBUNTU2204 = OSInfo(id="ubuntu", version_id="22.04", codename="jammy", arch="x86_64")
DEBIAN12 = OSInfo(id="debian", version_id="12", codename="bookworm", arch="x86_64")


def nvidia_host(name: str, cc: str, os: OSInfo = UBUNTU2404, driver: str | None = None,
                flavor: str | None = "open", cuda: str | None = None, **extra) -> HostProfile:
    gpu = GPU(vendor="nvidia", pci_bus_id="0000:01:00.0", name=name, compute_capability=cc)
    state = NvidiaState(kernel_module_loaded=bool(driver), kernel_module_version=driver, library_version=driver,
                        kernel_module_flavor=flavor if driver else None, cuda_driver_version=cuda)
    return HostProfile(hostname=name.replace(" ", "-").lower(), os=os, gpus=(gpu,), nvidia=state, **extra)


def amd_host(name: str, gfx: str, os: OSInfo = UBUNTU2404) -> HostProfile:
    gpu = GPU(vendor="amd", pci_bus_id="0000:03:00.0", name=name, gfx_target=gfx)
    return HostProfile(hostname=name.replace(" ", "-").lower(), os=os, gpus=(gpu,))


def h100_profile() -> HostProfile:
    """The H100 capture, from the ground truth recorded with it (expected.json)."""
    truth = json.loads((H100_BUNDLE / "expected.json").read_text())
    gpu = truth["gpus"][0]
    version = truth["nvidia"]["driver_version"]
    return HostProfile(
        hostname="h100", os=UBUNTU2404,
        gpus=(GPU(vendor="nvidia", pci_bus_id="0000:00:06.0", pci_device_id="2330", name=gpu["name"],
                  compute_capability=gpu["compute_capability"], architecture="Hopper",
                  memory_bytes=gpu["memory_bytes"]),),
        nvidia=NvidiaState(kernel_module_loaded=True, kernel_module_version=version, kernel_module_flavor="open",
                           library_version=version, cuda_driver_version=truth["nvidia"]["cuda_driver_version"]),
    )


NO_GPU = HostProfile(hostname="cpu-box", os=DEBIAN12)
# smi-q_8x-rtx4090_drv550.127.05.txt: driver 550.127.05 (CUDA 12.4)
RTX4090 = nvidia_host("NVIDIA GeForce RTX 4090", "8.9", UBUNTU2204, "550.127.05", "proprietary", "12.4")
A100 = nvidia_host("NVIDIA A100-SXM4-80GB", "8.0", UBUNTU2204)
V100 = nvidia_host("Tesla V100-SXM2-16GB", "7.0")
T4 = nvidia_host("Tesla T4", "7.5", DEBIAN12)
GTX1080 = nvidia_host("NVIDIA GeForce GTX 1080", "6.1")
# smi-q_rtx5090_drv570.124.06.txt: driver 570.124.06 (CUDA 12.8)
RTX5090 = nvidia_host("NVIDIA GeForce RTX 5090", "12.0", UBUNTU2404, "570.124.06", "open", "12.8")
MI300X = amd_host("AMD Instinct MI300X", "gfx942", UBUNTU2204)
RX7900XTX = amd_host("AMD Radeon RX 7900 XTX", "gfx1100")
# xml_rtx3060-laptop_drv515_v11.xml: driver 515.65.01 (CUDA 11.7), next to an Intel iGPU
LAPTOP = replace(
    nvidia_host("NVIDIA GeForce RTX 3060 Laptop GPU", "8.6", UBUNTU2204, "515.65.01", "proprietary", "11.7"),
    gpus=(GPU(vendor="intel", pci_bus_id="0000:00:02.0", name="Intel UHD Graphics", integrated=True),
          GPU(vendor="nvidia", pci_bus_id="0000:01:00.0", name="NVIDIA GeForce RTX 3060 Laptop GPU",
              compute_capability="8.6")),
)


def choice(plan, topic: str) -> tuple[str, str]:
    """(choice, rule) of the last decision on ``topic``."""
    d = [d for d in plan.decisions if d.topic == topic][-1]
    return d.choice, d.rule


CASES = [
    # id, profile, request, {topic: (choice, rule)}, roles, packages, extra index
    ("h100-keeps-580", h100_profile, {}, {"driver": ("keep 580.159.04", "rule:keep-loaded-driver"),
                                           "torch build": ("cu130", "cuda:13.0")},
     ("common", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu130"]),
    ("h100-torch-2.11", h100_profile, {"torch": "2.11"}, {"torch": ("2.11.0", "pytorch:2.11.0")},
     ("common", "frameworks"), ["torch==2.11.0"], ["https://download.pytorch.org/whl/cu130"]),
    ("no-gpu-cpu-wheels", lambda: NO_GPU, {}, {"torch build": ("cpu", "rule:cpu-only"),
                                               "python": ("3.11", "os:debian-12")},
     ("common", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cpu"]),
    ("no-gpu-local-wheels", lambda: NO_GPU, {"pip_find_links": ("/opt/wheels",)},
     {"wheel index": ("as given", "rule:user-index")}, ("common", "frameworks"), ["torch==2.13.0"], []),
    ("rtx4090-keeps-550-minor-compat", lambda: RTX4090, {},
     {"driver": ("keep 550.127.05", "rule:keep-loaded-driver"), "torch build": ("cu126", "cuda:12.6")},
     ("common", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu126"]),
    ("a100-newest-branch", lambda: A100, {}, {"driver": ("install branch 610", "nvidia:branch-610"),
                                              "kernel modules": ("open", "nvidia:Ampere"),
                                              "torch build": ("cu132", "cuda:13.2")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu132"]),
    ("v100-last-branch-580", lambda: V100, {}, {"driver": ("install branch 580", "nvidia:branch-580"),
                                                "kernel modules": ("proprietary", "nvidia:Volta"),
                                                "torch build": ("cu126", "cuda:12.6")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu126"]),
    ("t4-cuda-toolkit", lambda: T4, {"cuda": "13.0"}, {"cuda toolkit": ("13.0", "cuda:13.0"),
                                                       "torch build": ("cu130", "cuda:13.0")},
     ("common", "nvidia_driver", "cuda_toolkit", "frameworks"), ["torch==2.13.0"],
     ["https://download.pytorch.org/whl/cu130"]),
    ("gtx1080-cuda12", lambda: GTX1080, {}, {"driver": ("install branch 580", "nvidia:branch-580"),
                                             "torch build": ("cu126", "cuda:12.6")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu126"]),
    ("rtx5090-replaces-570", lambda: RTX5090, {}, {"driver": ("install branch 610", "nvidia:branch-610"),
                                                   "torch build": ("cu132", "cuda:13.2"),
                                                   "reboot": ("required", "rule:reboot")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu132"]),
    ("mi300x-rocm", lambda: MI300X, {}, {"rocm": ("7.2", "rocm:7.2"), "torch build": ("rocm7.2", "rocm:7.2")},
     ("common", "rocm", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/rocm7.2"]),
    ("rx7900xtx-rocm", lambda: RX7900XTX, {"frameworks": ("jax",)}, {"jax": ("jax[rocm7-local]", "jax:rocm7-local")},
     ("common", "rocm", "frameworks"), ["jax[rocm7-local]"], []),
    ("mi300x-debian-rocm", lambda: replace(MI300X, os=DEBIAN12), {}, {"rocm": ("7.2", "rocm:7.2")},
     ("common", "rocm", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/rocm7.2"]),
    ("rx7900xtx-debian-cpu", lambda: replace(RX7900XTX, os=DEBIAN12), {}, {"accelerator": ("cpu", "rule:cpu-only")},
     ("common", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cpu"]),
    ("laptop-igpu-ignored", lambda: LAPTOP, {}, {"gpu": ("Ampere", "nvidia:Ampere"),
                                                 "driver": ("install branch 610", "nvidia:branch-610")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu132"]),
    ("h100-tensorflow", h100_profile, {"frameworks": ("tensorflow",)},
     {"tensorflow": ("tensorflow[and-cuda]==2.21.0", "tensorflow:2.21.0")},
     ("common", "frameworks"), ["tensorflow[and-cuda]==2.21.0"], []),
    ("h100-jax", h100_profile, {"frameworks": ("jax",)}, {"jax": ("jax[cuda13]", "jax:cuda13")},
     ("common", "frameworks"), ["jax[cuda13]"], []),
    ("no-gpu-jax", lambda: NO_GPU, {"frameworks": ("jax",)}, {"jax": ("jax", "rule:cpu-only")},
     ("common", "frameworks"), ["jax"], []),
    ("h100-container-toolkit", h100_profile, {"container_toolkit": True},
     {"container toolkit": ("docker", "rule:pin")}, ("common", "nvidia_container_toolkit", "frameworks"),
     ["torch==2.13.0"], ["https://download.pytorch.org/whl/cu130"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_plan_decisions(case):
    _, profile, request, decisions, roles, packages, indexes = case
    plan = make_plan(profile(), Request(**request))
    for topic, expected in decisions.items():
        assert choice(plan, topic) == expected
    assert plan.roles == roles
    assert plan.variables["dlsetup_roles"] == list(roles)
    assert plan.variables["frameworks_packages"] == packages
    # a vendor index is never an extra index beside the default: torch comes from it alone
    assert [i["url"] for i in plan.variables["frameworks_pip_vendor_indexes"]] == indexes
    assert all("torch" in i["projects"] for i in plan.variables["frameworks_pip_vendor_indexes"])
    assert plan.variables["frameworks_pip_extra_index_urls"] == []


CONFLICTS = [
    ("branch-vs-cuda", h100_profile, {"driver_branch": "535", "cuda": "13.0"},
     "--driver-branch 535 supports CUDA up to 12.2, but --cuda 13.0 needs driver >= 580.65.06"),
    ("rocm-on-nvidia", h100_profile, {"rocm": "6.4"}, "--rocm 6.4 needs an AMD GPU and this host has only NVIDIA"),
    ("cuda13-on-pascal", lambda: GTX1080, {"cuda": "13.0"}, "--cuda 13.0 does not support the Pascal GPU"),
    ("mxnet", h100_profile, {"frameworks": ("mxnet",)}, "Apache MXNet is not maintained (retired to the Apache Attic"),
    ("unknown-os", lambda: replace(NO_GPU, os=OSInfo(id="fedora", version_id="40", pretty_name="Fedora Linux 40")),
     {}, "Fedora Linux 40 is not supported: install Ubuntu 22.04, Ubuntu 24.04, Debian 12"),
    ("no-os", lambda: HostProfile(), {}, "an unknown OS is not supported"),
    ("cuda-without-gpu", lambda: NO_GPU, {"cuda": "12.6"}, "--cuda 12.6 needs an NVIDIA GPU and this host has no GPU"),
    ("toolkit-without-gpu", lambda: NO_GPU, {"container_toolkit": True}, "use --no-container-toolkit"),
    ("tensorflow-python-3.14", h100_profile, {"frameworks": ("tensorflow",), "python": "3.14"},
     "tensorflow 2.21.0 supports Python 3.10-3.13, not 3.14"),
    ("tensorflow-on-amd", lambda: MI300X, {"frameworks": ("tensorflow",)}, "TensorFlow is not planned on AMD GPUs"),
    ("rocm-on-debian", lambda: replace(RX7900XTX, os=DEBIAN12), {"rocm": "7.2"},
     "ROCm 7.2 does not support gfx1100 on debian 12"),
    ("branch-too-new-for-volta", lambda: V100, {"driver_branch": "610"},
     "--driver-branch 610 does not support the Volta GPU"),
    ("unknown-torch", lambda: NO_GPU, {"torch": "1.13"}, "torch 1.13 is not in the compatibility tables"),
    ("offline-without-wheels", lambda: NO_GPU, {"pip_offline": True}, "--pip-offline installs only from"),
]


@pytest.mark.parametrize("case", CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_conflicts_name_the_problem_and_a_way_out(case):
    _, profile, request, message = case
    with pytest.raises(PlanConflict) as err:
        make_plan(profile(), Request(**request))
    text = str(err.value)
    assert message in text
    assert "\n" not in text and ("use" in text or "drop" in text or "install" in text)
    assert err.value.exit_code == 2


def test_h100_plan_has_no_rocm_and_no_driver_variables():
    plan = make_plan(h100_profile(), Request())
    dumped = json.dumps(plan.to_dict())
    assert "rocm" not in dumped.lower()
    assert not any(k.startswith("nvidia_driver_") for k in plan.variables)
    assert plan.reboot_required is False


def test_no_gpu_plan_has_no_vendor_roles():
    plan = make_plan(NO_GPU, Request(pip_find_links=("/opt/wheels",)))
    assert not any(k.startswith(("nvidia", "cuda", "rocm")) for k in plan.variables)
    assert plan.variables["frameworks_pip_find_links"] == ["/opt/wheels"]
    assert plan.variables["frameworks_python"] == "python3"


def test_driver_install_variables_follow_the_contract():
    v = make_plan(A100, Request()).variables
    assert v["nvidia_driver_branch"] == "610"
    assert v["nvidia_driver_open_modules"] is True
    assert v["nvidia_driver_loaded_version"] == ""
    assert v["nvidia_driver_repo_url"] == "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/"
    assert v["nvidia_driver_repo_key_fingerprint"] == "EB693B3035CD5710E231E123A4B469963BF863CC"
    assert v["common_install_headers"] is True


def test_rocm_variables_use_the_codename_suite():
    v = make_plan(MI300X, Request()).variables
    assert (v["rocm_repo_url"], v["rocm_repo_suite"]) == ("https://repo.radeon.com/rocm/apt/7.2", "jammy")
    assert v["rocm_repo_key_fingerprint"] == "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C"


def test_module_library_mismatch_requires_reboot():
    profile = h100_profile()
    profile = replace(profile, nvidia=replace(profile.nvidia, kernel_module_version="580.95.05", reboot_required=True))
    plan = make_plan(profile, Request())
    assert plan.reboot_required is True
    assert plan.notes == ("reboot required: kernel module 580.95.05 and library 580.159.04 disagree",)
    assert choice(plan, "driver") == ("keep 580.159.04", "rule:keep-loaded-driver")


def test_every_rule_names_a_table_row_or_a_planner_rule():
    tables = compat.read_tables()
    for case in CASES:
        for d in make_plan(case[1](), Request(**case[2])).decisions:
            table, _, key = d.rule.partition(":")
            assert table == "rule" or table in tables, d.rule
            assert key


def test_planner_does_no_io(monkeypatch):
    compat.load()  # the package's own tables, read once
    requests = [(case[1](), Request(**case[2])) for case in CASES]

    def refuse(*args, **kwargs):
        raise AssertionError("I/O during planning")

    for module, name in ((builtins, "open"), (io, "open"), (os, "open"), (socket, "socket"), (subprocess, "Popen")):
        monkeypatch.setattr(module, name, refuse)
    for profile, request in requests:
        make_plan(profile, request)


def test_container_toolkit_follows_an_installed_engine():
    with_docker = replace(RTX4090, os=replace(RTX4090.os, container_engines=("docker",)))
    plan = make_plan(with_docker, Request())
    assert "nvidia_container_toolkit" in plan.roles
    assert plan.variables["nvidia_container_toolkit_runtimes"] == ["docker"]
    assert choice(plan, "container toolkit") == ("docker", "rule:container-engine-present")
    assert "nvidia_container_toolkit" not in make_plan(with_docker, Request(container_toolkit=False)).roles
    assert "nvidia_container_toolkit" not in make_plan(RTX4090, Request()).roles  # no engine, not asked
    no_gpu_docker = replace(NO_GPU, os=replace(NO_GPU.os, container_engines=("docker",)))
    assert "nvidia_container_toolkit" not in make_plan(no_gpu_docker, Request()).roles


def test_secure_boot_reaches_the_driver_role():
    secure = replace(A100, os=replace(A100.os, secure_boot="enabled"))
    plan = make_plan(secure, Request())
    assert plan.variables["nvidia_driver_secure_boot"] == "enabled"
    assert choice(plan, "secure boot") == ("sign the driver module", "rule:secure-boot-mok")
    assert any("MOK" in note for note in plan.notes)
    assert make_plan(A100, Request()).variables["nvidia_driver_secure_boot"] == A100.os.secure_boot


def test_rocm_on_debian_uses_the_ubuntu_builds():
    v = make_plan(replace(MI300X, os=DEBIAN12), Request()).variables
    assert (v["rocm_repo_url"], v["rocm_repo_suite"]) == ("https://repo.radeon.com/rocm/apt/7.2", "jammy")


@pytest.mark.parametrize("system", [UBUNTU2404, UBUNTU2204, DEBIAN12], ids=lambda s: f"{s.id}-{s.version_id}")
def test_frameworks_packages_come_in_the_common_apt_transaction(system):
    """The frameworks role's apt task finds its packages installed already: one dpkg run, not two."""
    import yaml

    from tests.conftest import REPO

    plan = make_plan(HostProfile(hostname="cpu", os=system), Request())
    name = f"{system.id.capitalize()}-{system.version_id}.yml"
    frameworks = yaml.safe_load((REPO / "roles" / "frameworks" / "vars" / name).read_text())["__frameworks_packages"]
    common = yaml.safe_load((REPO / "roles" / "common" / "vars" / name).read_text())["__common_packages"]
    assert set(frameworks) <= set(common) | set(plan.variables["common_extra_packages"])
