"""The plan chooses NVIDIA's compute-only driver for servers and the full desktop driver where a GPU drives
the display, and says why."""

from __future__ import annotations

from dataclasses import replace

from dlsetup.plan import Request, make_plan
from tests.test_plan import A100, choice


def with_class(pci_class: str | None):
    return replace(A100, gpus=tuple(replace(g, pci_class=pci_class) for g in A100.gpus))


def test_a_3d_controller_gets_the_compute_only_driver():
    plan = make_plan(with_class("0302"), Request())
    assert plan.variables["nvidia_driver_install_type"] == "compute"
    assert choice(plan, "driver install") == ("compute-only", "rule:nvidia-install-type")
    assert "no display attached" in next(d.reason for d in plan.decisions if d.topic == "driver install")


def test_a_gpu_driving_the_display_gets_the_desktop_driver():
    plan = make_plan(with_class("0300"), Request())
    assert plan.variables["nvidia_driver_install_type"] == "desktop"
    assert choice(plan, "driver install") == ("desktop", "rule:nvidia-install-type")


def test_an_unknown_class_is_a_server():
    assert make_plan(with_class(None), Request()).variables["nvidia_driver_install_type"] == "compute"


def test_therock_releases_leave_the_repository_to_the_role(monkeypatch):
    """ROCm 7.14 and later live in other repositories (TheRock): the plan names the layout, not a legacy URL."""
    from dlsetup.plan import compat, planner
    from tests.test_plan import MI300X

    data = compat.load()
    if not any(r.version == "7.14" for r in data.rocm):  # the row as the compatibility tables will carry it
        legacy = next(r for r in data.rocm if r.version == "7.2")
        data = replace(data, rocm=(replace(legacy, version="7.14"), *data.rocm))
        monkeypatch.setattr(planner.compat, "load", lambda: data)
    v = make_plan(MI300X, Request(rocm="7.14")).variables
    assert v["rocm_version"] == "7.14" and v["rocm_layout"] == "therock"
    assert not any(k.startswith("rocm_repo_") for k in v)
    legacy_plan = make_plan(MI300X, Request(rocm="7.2")).variables
    assert "rocm_layout" not in legacy_plan and legacy_plan["rocm_repo_url"] == "https://repo.radeon.com/rocm/apt/7.2"
