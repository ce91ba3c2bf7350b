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
from dlsetup.pkgindex import PYTORCH, LiveIndex, Project, parse_page
from dlsetup.plan import PlanConflict, Request, compat, make_plan
from tests.conftest import H100_BUNDLE
from tests.index_server import FIXTURES, JSON_TYPE, with_unknown_torch

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


T = "https://download.pytorch.org/whl/"
# Offline (the tables alone): the default torch line is the tables' newest that has a wheel for the
# host's Python and a build for its GPUs; pins follow the release line.
CASES = [
    # id, profile, request, {topic: (choice, rule)}, roles, packages, extra index
    ("h100-keeps-580", h100_profile, {}, {"driver": ("keep 580.159.04", "rule:keep-loaded-driver"),
                                           "torch": ("2.15.0", "pytorch:2.15.0"),
                                           "torch build": ("cu130", "cuda:13.0")},
     ("common", "frameworks"), ["torch==2.15.*"], [T + "cu130"]),
    ("h100-torch-2.11", h100_profile, {"torch": "2.11"}, {"torch": ("2.11.0", "pytorch:2.11.0")},
     ("common", "frameworks"), ["torch==2.11.*"], [T + "cu130"]),
    ("h100-torch-exact", h100_profile, {"torch": "2.14.1"}, {"torch": ("2.14.1", "pytorch:2.14.1")},
     ("common", "frameworks"), ["torch==2.14.1"], [T + "cu130"]),
    ("no-gpu-cpu-wheels", lambda: NO_GPU, {}, {"torch build": ("cpu", "rule:cpu-only"),
                                               "python": ("3.11", "os:debian-12")},
     ("common", "frameworks"), ["torch==2.15.*"], [T + "cpu"]),
    ("no-gpu-local-wheels", lambda: NO_GPU, {"pip_find_links": ("/opt/wheels",)},
     {"wheel index": ("as given", "rule:user-index")}, ("common", "frameworks"), ["torch==2.15.*"], []),
    # Python 3.10: torch 2.15 has no cp310 wheels, 2.14 is the newest line for it
    ("rtx4090-keeps-550-minor-compat", lambda: RTX4090, {},
     {"driver": ("keep 550.127.05", "rule:keep-loaded-driver"), "torch build": ("cu126", "cuda:12.6"),
      "torch": ("2.14.1", "pytorch:2.14.1")},
     ("common", "frameworks"), ["torch==2.14.*"], [T + "cu126"]),
    ("a100-production-branch", lambda: A100, {}, {"driver": ("install branch 595", "nvidia:branch-595"),
                                                  "kernel modules": ("open", "nvidia:Ampere"),
                                                  "torch build": ("cu132", "cuda:13.2")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.14.*"], [T + "cu132"]),
    # 2.15 has no CUDA 12 build: Volta gets 2.14's cu126 and the long-term branch 580, its last
    ("v100-last-branch-580", lambda: V100, {}, {"driver": ("install branch 580", "nvidia:branch-580"),
                                                "kernel modules": ("proprietary", "nvidia:Volta"),
                                                "torch": ("2.14.1", "pytorch:2.14.1"),
                                                "torch build": ("cu126", "cuda:12.6")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.14.*"], [T + "cu126"]),
    ("t4-cuda-toolkit", lambda: T4, {"cuda": "13.0"}, {"cuda toolkit": ("13.0", "cuda:13.0"),
                                                       "torch build": ("cu130", "cuda:13.0")},
     ("common", "nvidia_driver", "cuda_toolkit", "frameworks"), ["torch==2.15.*"], [T + "cu130"]),
    ("gtx1080-cuda12", lambda: GTX1080, {}, {"driver": ("install branch 580", "nvidia:branch-580"),
                                             "torch build": ("cu126", "cuda:12.6")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.14.*"], [T + "cu126"]),
    ("rtx5090-replaces-570", lambda: RTX5090, {}, {"driver": ("install branch 595", "nvidia:branch-595"),
                                                   "torch build": ("cu132", "cuda:13.2"),
                                                   "reboot": ("required", "rule:reboot")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.15.*"], [T + "cu132"]),
    ("mi300x-rocm", lambda: MI300X, {}, {"rocm": ("10.0", "rocm:10.0"), "torch build": ("rocm7.14", "rocm:10.0")},
     ("common", "rocm", "frameworks"), ["torch==2.14.*"], [T + "rocm7.14"]),
    ("mi300x-rocm-7.2", lambda: MI300X, {"rocm": "7.2", "torch": "2.13"},
     {"rocm": ("7.2", "rocm:7.2"), "torch build": ("rocm7.2", "rocm:7.2")},
     ("common", "rocm", "frameworks"), ["torch==2.13.*"], [T + "rocm7.2"]),
    ("rx7900xtx-rocm", lambda: RX7900XTX, {"frameworks": ("jax",)},
     {"jax": ("jax[rocm7-local]==0.12.*", "jax:0.12.0.1")}, ("common", "rocm", "frameworks"),
     ["jax[rocm7-local]==0.12.*"], []),
    ("mi300x-debian-rocm", lambda: replace(MI300X, os=DEBIAN12), {}, {"rocm": ("10.0", "rocm:10.0")},
     ("common", "rocm", "frameworks"), ["torch==2.15.*"], [T + "rocm7.14"]),
    ("rx7900xtx-debian-cpu", lambda: replace(RX7900XTX, os=DEBIAN12), {}, {"accelerator": ("cpu", "rule:cpu-only")},
     ("common", "frameworks"), ["torch==2.15.*"], [T + "cpu"]),
    ("laptop-igpu-ignored", lambda: LAPTOP, {}, {"gpu": ("Ampere", "nvidia:Ampere"),
                                                 "driver": ("install branch 595", "nvidia:branch-595")},
     ("common", "nvidia_driver", "frameworks"), ["torch==2.14.*"], [T + "cu132"]),
    ("h100-tensorflow", h100_profile, {"frameworks": ("tensorflow",)},
     {"tensorflow": ("tensorflow[and-cuda]==2.21.*", "tensorflow:2.21.0")},
     ("common", "frameworks"), ["tensorflow[and-cuda]==2.21.*"], []),
    ("h100-jax", h100_profile, {"frameworks": ("jax",)}, {"jax": ("jax[cuda13]==0.12.*", "jax:0.12.0.1")},
     ("common", "frameworks"), ["jax[cuda13]==0.12.*"], []),
    ("no-gpu-jax", lambda: NO_GPU, {"frameworks": ("jax",)}, {"jax": ("jax==0.10.*", "jax:0.10.2")},
     ("common", "frameworks"), ["jax==0.10.*"], []),
    ("h100-container-toolkit", h100_profile, {"container_toolkit": True},
     {"container toolkit": ("docker", "rule:pin")}, ("common", "nvidia_container_toolkit", "frameworks"),
     ["torch==2.15.*"], [T + "cu130"]),
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
    assert v["nvidia_driver_branch"] == "595"
    assert v["nvidia_driver_open_modules"] is True
    assert v["nvidia_driver_loaded_version"] == ""
    assert v["nvidia_driver_repo_url"] == "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/"
    assert v["nvidia_driver_repo_key_fingerprint"] == "EB693B3035CD5710E231E123A4B469963BF863CC"
    assert v["common_install_headers"] is True


def test_rocm_variables_use_the_codename_suite():
    v = make_plan(MI300X, Request(rocm="7.2")).variables
    assert (v["rocm_repo_url"], v["rocm_repo_suite"]) == ("https://repo.radeon.com/rocm/apt/7.2", "jammy")
    assert v["rocm_repo_key_fingerprint"] == "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C"
    assert "rocm_layout" not in v


def test_therock_releases_leave_their_repositories_to_the_role():
    v = make_plan(MI300X, Request()).variables
    assert (v["rocm_version"], v["rocm_layout"], v["rocm_gfx_target"]) == ("10.0", "therock", "gfx942")
    assert not [k for k in v if k.startswith("rocm_repo_")]


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
    v = make_plan(replace(MI300X, os=DEBIAN12), Request(rocm="7.2", torch="2.13")).variables
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


# -- freshness: live index answers, the driver policy, versions newer than the tables ----------------

TODAY = "2026-11-28"


def recorded_project(name: str, doc: dict | None = None) -> Project:
    body = json.dumps(doc).encode() if doc else (FIXTURES / "simple" / name / "index.json").read_bytes()
    return Project(name, f"http://127.0.0.1/simple/{name}/", TODAY, parse_page(body, JSON_TYPE))


def live(*names: str, torch_doc: dict | None = None, vendor: bool = False, failures=()) -> LiveIndex:
    projects = {n: recorded_project(n, torch_doc if n == "torch" else None) for n in names}
    if vendor:
        projects[PYTORCH] = Project(PYTORCH, "http://127.0.0.1/whl/torch/", TODAY, parse_page(
            (FIXTURES / "pytorch-whl-torch.html").read_bytes(), "text/html"))
    return LiveIndex("http://127.0.0.1/simple", TODAY, projects, tuple(failures))


def decision(plan, topic: str):
    return [d for d in plan.decisions if d.topic == topic][-1]


def test_live_index_picks_the_newest_torch_for_the_python_and_says_so():
    plan = make_plan(h100_profile(), Request(), live("torch"), TODAY)
    torch = decision(plan, "torch")
    assert (torch.choice, torch.rule, torch.source, torch.as_of) == ("2.15.0", "pytorch:2.15.0", "index:torch", TODAY)
    assert "newest torch on http://127.0.0.1/simple/torch/ for Python 3.12 (uploaded 2026-10-28)" in torch.reason
    assert plan.variables["frameworks_packages"] == ["torch==2.15.*"]
    assert plan.sources["index:torch"] == {"as_of": TODAY, "url": "http://127.0.0.1/simple/torch/", "cached": False}
    # Python 3.10 (Ubuntu 22.04): 2.15.0 has no cp310 wheel
    plan = make_plan(replace(h100_profile(), os=UBUNTU2204), Request(), live("torch"), TODAY)
    assert decision(plan, "torch").choice == "2.14.1"
    assert plan.variables["frameworks_packages"] == ["torch==2.14.*"]


def test_live_newest_without_a_build_for_the_gpu_gives_way():
    plan = make_plan(V100, Request(), live("torch"), TODAY)
    torch = decision(plan, "torch")
    assert torch.choice == "2.14.1" and "2.15.0 has no build for these GPUs" in torch.reason


def test_offline_plan_cites_the_tables_with_their_date():
    plan = make_plan(h100_profile(), Request())
    tables = compat.load().as_of
    assert decision(plan, "torch").source == "table:pytorch"
    for d in plan.decisions:
        if d.source.startswith("table:"):
            assert d.as_of == tables[d.source.split(":")[1]] == plan.sources[d.source]["as_of"]
    assert json.loads(json.dumps(plan.to_dict()))["sources"]["table:pytorch"]["as_of"] == tables["pytorch"]


def test_index_failures_become_notes():
    plan = make_plan(h100_profile(), Request(), live(failures=["torch on http://x/: timed out"]), TODAY)
    assert decision(plan, "torch").source == "table:pytorch"
    assert "index: torch on http://x/: timed out; planned from the tables where it mattered" in plan.notes


def test_unknown_torch_on_the_index_is_planned_unverified_with_a_warning():
    plan = make_plan(h100_profile(), Request(), live("torch", torch_doc=with_unknown_torch()), TODAY)
    torch = decision(plan, "torch")
    assert (torch.choice, torch.rule) == ("2.16.0", "rule:newer-than-data")
    assert "unverified" in torch.reason
    assert any(w.startswith("torch 2.16.0 is newer than dlsetup's data") for w in plan.warnings)
    assert plan.variables["frameworks_packages"] == ["torch==2.16.*"]
    assert decision(plan, "torch build").choice == "cu130"  # builds assumed like the newest known release
    # PyTorch's index lists 2.16.0's builds: cu134 is not in the CUDA table, cu130 is
    facts = live("torch", torch_doc=with_unknown_torch(), vendor=True)
    with_vendor = make_plan(A100, Request(torch="2.16", python="3.12"), facts, TODAY)
    assert decision(with_vendor, "torch build").choice == "cu130"


@pytest.mark.parametrize("request_, index, expected", [
    ({"torch": "2.16"}, None, "2.16.0"),  # offline: the next line after 2.15
    ({"torch": "2.16"}, "unknown", "2.16.0"),
    ({"torch": "2.15"}, "torch", "2.15.0"),
    ({"torch": "2.14"}, "torch", "2.14.1"),  # the line's newest patch, pinned as torch==2.14.*
])
def test_torch_versions_newer_or_patches(request_, index, expected):
    source = None if index is None else live("torch", torch_doc=with_unknown_torch() if index == "unknown" else None)
    plan = make_plan(h100_profile(), Request(**request_), source, TODAY)
    assert decision(plan, "torch").choice == expected


NEWER_REFUSED = [
    ("torch-7.0-offline", h100_profile, {"torch": "7.0"}, None,
     "torch 7.0 is not in the compatibility tables and the index could not be asked whether it exists"),
    ("torch-2.16-not-on-index", h100_profile, {"torch": "2.16"}, ("torch",),
     "torch 2.16 is not in the compatibility tables and not published on http://127.0.0.1/simple/torch/"),
    ("torch-patch-not-on-index", h100_profile, {"torch": "2.15.9"}, ("torch",),
     "torch 2.15.9 is not published on http://127.0.0.1/simple/torch/ (as of 2026-11-28): use --torch 2.15"),
    ("torch-2.15-python-3.10", lambda: replace(h100_profile(), os=UBUNTU2204), {"torch": "2.15"}, ("torch",),
     "torch 2.15 has no wheel for Python 3.10"),
    ("cuda-99.9", h100_profile, {"cuda": "99.9"}, None, "CUDA 99.9 is not in the compatibility tables"),
    ("cuda-13.6-not-published", h100_profile, {"cuda": "13.6"}, ("nvidia-cuda-runtime",),
     "CUDA 13.6 is not in the compatibility tables and not published on"),
    ("branch-700", h100_profile, {"driver_branch": "700"}, None, "driver branch 700 is not in the compatibility"),
    ("rocm-12.0", lambda: MI300X, {"rocm": "12.0"}, None, "ROCm 12.0 is not in the compatibility tables"),
    ("rocm-10.2-not-built", lambda: MI300X, {"rocm": "10.2"}, ("torch",),
     "ROCm 10.2 is not in the compatibility tables and not published on http://127.0.0.1/whl/torch/"),
    ("old-torch", h100_profile, {"torch": "1.13"}, None, "torch 1.13 is not in the compatibility tables"),
]


@pytest.mark.parametrize("case", NEWER_REFUSED, ids=[c[0] for c in NEWER_REFUSED])
def test_versions_nobody_publishes_are_refused(case):
    _, profile, request, names, message = case
    source = live(*names, vendor="rocm" in request) if names else None
    with pytest.raises(PlanConflict) as err:
        make_plan(profile(), Request(**request), source, TODAY)
    assert message in str(err.value) and "\n" not in str(err.value) and err.value.exit_code == 2


def test_newer_cuda_branch_and_rocm_are_planned_unverified():
    cuda = make_plan(h100_profile(), Request(cuda="13.6"), None, TODAY)
    assert decision(cuda, "cuda toolkit").choice == "13.6"
    assert decision(cuda, "driver").choice == "install branch 620"  # the newest: CUDA 13.6 needs a new driver
    assert any(w.startswith("CUDA 13.6 is newer than dlsetup's data") for w in cuda.warnings)
    branch = make_plan(h100_profile(), Request(driver_branch="625"), None, TODAY)
    assert (decision(branch, "driver").choice, decision(branch, "driver").rule) == ("install branch 625",
                                                                                    "rule:newer-than-data")
    assert branch.variables["nvidia_driver_branch"] == "625" and branch.reboot_required
    rocm = make_plan(MI300X, Request(rocm="10.1"), None, TODAY)
    assert (decision(rocm, "rocm").choice, rocm.variables["rocm_version"]) == ("10.1", "10.1")
    assert any(w.startswith("ROCm 10.1 is newer than dlsetup's data") for w in rocm.warnings)
    # online, PyTorch's index lists a rocm10.1 build: the fact is dated by that index
    rocm = make_plan(MI300X, Request(rocm="10.1"), live("torch", vendor=True), TODAY)
    assert PYTORCH and f"index:{PYTORCH}" in rocm.sources


@pytest.mark.parametrize("request_", [{"torch": "2.15"}, {"cuda": "13.4"}, {"driver_branch": "615"},
                                      {"driver_branch": "595"}])
def test_current_versions_plan_on_the_h100(request_):
    plan = make_plan(h100_profile(), Request(**request_), live("torch", "nvidia-cuda-runtime"), TODAY)
    assert not plan.warnings or all("newer than" not in w for w in plan.warnings)


def test_rocm_10_on_a_supported_amd_host():
    plan = make_plan(MI300X, Request(rocm="10.0"), None, TODAY)
    assert choice(plan, "rocm") == ("10.0", "rocm:10.0") and "therock" in decision(plan, "rocm").reason


def fresh(profile: HostProfile) -> HostProfile:
    return replace(profile, nvidia=NvidiaState())


@pytest.mark.parametrize("name, cc, branch, kind", [
    ("NVIDIA H100 80GB HBM3", "9.0", "595", "production"),
    ("NVIDIA H200", "9.0", "595", "production"),
    ("NVIDIA B300", "10.3", "595", "production"),
    ("Tesla V100-SXM2-16GB", "7.0", "580", "long-term"),  # 595 dropped Volta
])
def test_a_fresh_gpu_host_gets_a_production_or_long_term_branch(name, cc, branch, kind):
    plan = make_plan(nvidia_host(name, cc), Request(), None, TODAY)
    d = decision(plan, "driver")
    assert (d.choice, d.rule) == (f"install branch {branch}", f"nvidia:branch-{branch}")
    assert f"the newest {kind} branch" in d.reason


def test_new_feature_branch_only_when_the_cuda_needs_it():
    # 595 (production) reports CUDA 13.2; 13.4 needs the long-term 620 rather than the new-feature 615
    plan = make_plan(fresh(h100_profile()), Request(cuda="13.4"), None, TODAY)
    assert choice(plan, "driver") == ("install branch 620", "nvidia:branch-620")
    asked = make_plan(fresh(h100_profile()), Request(cuda="13.4", driver_branch="615"), None, TODAY)
    d = decision(asked, "driver")
    assert d.choice == "install branch 615" and "(new-feature)" in d.reason


def test_a_loaded_615_driver_is_kept_not_downgraded():
    profile = h100_profile()
    profile = replace(profile, nvidia=replace(profile.nvidia, kernel_module_version="615.71.09",
                                              library_version="615.71.09", cuda_driver_version="13.4"))
    plan = make_plan(profile, Request(), live("torch"), TODAY)
    assert choice(plan, "driver") == ("keep 615.71.09", "rule:keep-loaded-driver")
    assert "nvidia_driver" not in plan.roles and plan.reboot_required is False


def test_a_loaded_driver_newer_than_the_tables_is_kept():
    profile = h100_profile()
    profile = replace(profile, nvidia=replace(profile.nvidia, kernel_module_version="630.10.02",
                                              library_version="630.10.02", cuda_driver_version="13.7"))
    plan = make_plan(profile, Request(), None, TODAY)
    d = decision(plan, "driver")
    assert (d.choice, d.rule, d.source) == ("keep 630.10.02", "rule:keep-newer-driver", "host")
    assert "newer than dlsetup's data" in d.reason and "never replaced by an older branch" in d.reason
    assert "nvidia_driver" not in plan.roles and plan.reboot_required is False
    assert any("630.10.02 is newer than dlsetup's data" in w for w in plan.warnings)
    # asked for a branch explicitly: the request wins, and the plan says why the loaded one goes
    asked = make_plan(profile, Request(driver_branch="595"), None, TODAY)
    assert [(d.choice, d.reason) for d in asked.decisions if d.topic == "driver"] == [
        ("replace 630.10.02", "--driver-branch 595 was asked for"),
        ("install branch 595", "pinned by the request (production)")]


def test_end_of_life_branch_asked_for_is_planned_with_a_warning():
    plan = make_plan(h100_profile(), Request(driver_branch="535"), None, TODAY)
    assert choice(plan, "driver") == ("install branch 535", "nvidia:branch-535")
    assert any("535 reached end of life on 2026-06-30" in w for w in plan.warnings)
    before = make_plan(h100_profile(), Request(driver_branch="535"), None, "2026-01-01")
    assert not any("535" in w for w in before.warnings)


def test_open_modules_only_branch_refused_for_pre_turing_gpus():
    with pytest.raises(PlanConflict, match="--driver-branch 615 does not support the Pascal GPU"):
        make_plan(GTX1080, Request(driver_branch="615"), None, TODAY)


def test_experimental_cuda_build_is_not_the_default():
    plan = make_plan(A100, Request(torch="2.13"), None, TODAY)  # branch 595: CUDA 13.2; 2.13's cu132 is experimental
    d = decision(plan, "torch build")
    assert d.choice == "cu130" and "cu132: experimental" in d.reason


def test_jax_on_an_old_python_names_the_python_it_needs():
    with pytest.raises(PlanConflict, match=r"jax\[cuda13\] needs Python >= 3.11 .*use --python 3.11"):
        make_plan(A100, Request(frameworks=("jax",)), None, TODAY)
    plan = make_plan(A100, Request(frameworks=("jax",), python="3.12"), live("jax"), TODAY)
    assert plan.variables["frameworks_packages"] == ["jax[cuda13]==0.12.*"]
    assert decision(plan, "jax").source == "index:jax"


def test_tensorflow_from_the_index_skips_prereleases():
    plan = make_plan(h100_profile(), Request(frameworks=("tensorflow",)), live("tensorflow"), TODAY)
    assert plan.variables["frameworks_packages"] == ["tensorflow[and-cuda]==2.21.*"]
    assert decision(plan, "tensorflow").source == "index:tensorflow"


def test_planner_with_live_facts_does_no_io(monkeypatch):
    facts = live("torch", "jax", "tensorflow", "nvidia-cuda-runtime", vendor=True)
    profile = h100_profile()
    compat.load()

    def refuse(*args, **kwargs):
        raise AssertionError("I/O during planning")

    for module, name in ((builtins, "open"), (io, "open"), (os, "open"), (socket, "socket"), (subprocess, "Popen")):
        monkeypatch.setattr(module, name, refuse)
    make_plan(profile, Request(frameworks=("pytorch", "jax", "tensorflow"), cuda="13.4"), facts, TODAY)


def test_pytorch_index_says_which_builds_a_known_release_has():
    plan = make_plan(h100_profile(), Request(), live("torch", vendor=True), TODAY)
    build = decision(plan, "torch build")
    assert (build.choice, build.source) == ("cu130", f"index:{PYTORCH}")
    assert "PyTorch's index lists cpu, cu130, cu132, rocm7.14" in build.reason
    # the index no longer lists 2.15.0's cu130 build: the 580 driver runs cu132 through minor-version compatibility
    facts = live("torch", vendor=True)
    vendor = facts.projects[PYTORCH]
    without = replace(vendor, files=tuple(f for f in vendor.files if "2.15.0+cu130" not in f.filename))
    facts = replace(facts, projects={**facts.projects, PYTORCH: without})
    assert choice(make_plan(h100_profile(), Request(), facts, TODAY), "torch build") == ("cu132", "cuda:13.2")
