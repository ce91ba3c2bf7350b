"""Kernel updates: the plan says where the GPU module of every kernel comes from and why, and holds the kernel
only when asked (--hold-kernel, config key hold_kernel); the driver roles' rule for the header meta packages."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import yaml

from conftest import REPO
from dlsetup.errors import UsageError
from dlsetup.model import KernelImage, KernelState
from dlsetup.plan import Request, load_request, make_plan
from tests.test_plan import MI300X, NO_GPU, T4, h100_profile

TODAY = "2026-11-28"


def decision(plan, topic: str):
    return [d for d in plan.decisions if d.topic == topic][-1]


def test_an_installed_driver_comes_from_dkms_and_the_kernel_is_not_held():
    plan = make_plan(T4, Request(), today=TODAY)
    assert plan.variables["nvidia_driver_kernel_module_source"] == "dkms"
    assert plan.variables["nvidia_driver_hold_kernel"] is False
    module = decision(plan, "kernel module")
    assert (module.choice, module.rule) == ("dkms", "rule:kernel-module-dkms")
    assert "DKMS builds for each kernel" in module.reason and "linux-modules-nvidia" in module.reason
    assert decision(plan, "kernel").choice == "updates go on"
    assert not any("--hold-kernel" in w for w in plan.warnings)


def test_hold_kernel_is_passed_to_the_driver_role_only_when_asked():
    plan = make_plan(T4, Request(hold_kernel=True), today=TODAY)
    assert plan.variables["nvidia_driver_hold_kernel"] is True
    held = decision(plan, "kernel")
    assert (held.choice, held.source) == ("held", "request")


def test_rocm_builds_amdgpu_with_dkms_and_holds_only_when_asked():
    plain, held = (make_plan(MI300X, Request(hold_kernel=h), today=TODAY) for h in (False, True))
    assert plain.variables["rocm_install_dkms"] is True
    assert (plain.variables["rocm_hold_kernel"], held.variables["rocm_hold_kernel"]) == (False, True)
    assert "amdgpu-dkms" in decision(plain, "kernel module").reason


def test_hold_kernel_without_a_gpu_driver_warns_and_holds_nothing():
    plan = make_plan(NO_GPU, Request(hold_kernel=True), today=TODAY)
    assert not [k for k in plan.variables if "hold_kernel" in k]
    assert any("--hold-kernel" in w and "not held" in w for w in plan.warnings)
    assert not [d for d in plan.decisions if d.topic.startswith("kernel")]


def test_a_kept_driver_names_the_module_source_the_probe_found():
    """A loaded driver that fits is kept (no driver role): the plan says where its module comes from, and that a
    precompiled one needs a package for each new kernel."""
    release = "6.8.0-90-generic"
    host = replace(h100_profile(), kernel=KernelState(
        running=release, next_boot=release, kernels=(KernelImage(release, nvidia_module="precompiled"),)))
    plan = make_plan(host, Request(), today=TODAY)
    assert "nvidia_driver" not in plan.roles
    module = decision(plan, "kernel module")
    assert module.choice == "precompiled" and release in module.reason
    assert "linux-modules-nvidia-<branch>-<flavour>" in module.reason


def test_hold_kernel_from_the_config_file_and_the_command_line(tmp_path):
    config = tmp_path / "dlsetup.yml"
    config.write_text("hold_kernel: true\n")
    assert load_request(config).hold_kernel is True
    assert load_request(None, hold_kernel=True).hold_kernel is True
    assert load_request(None).hold_kernel is False
    config.write_text("hold_kernel: 'yes'\n")
    with pytest.raises(UsageError, match="hold_kernel: expected true or false"):
        load_request(config)


def test_plan_cli_has_hold_kernel_and_provision_shares_it():
    from dlsetup.commands.plan import plan
    from dlsetup.commands.provision import provision

    for command in (plan, provision):
        assert "--hold-kernel" in [o for p in command.params for o in p.opts]


# -- the driver roles' rule: linux-image-FLAVOUR meta packages get linux-headers-FLAVOUR --------------------
DEFAULTS = yaml.safe_load((REPO / "roles" / "gpu_kernel_module" / "defaults" / "main.yml").read_text())

#: real package names (Debian 12/13 and Ubuntu 22.04/24.04 archives)
META = {
    "linux-image-amd64": "linux-headers-amd64",
    "linux-image-cloud-amd64": "linux-headers-cloud-amd64",
    "linux-image-rt-amd64": "linux-headers-rt-amd64",
    "linux-image-arm64": "linux-headers-arm64",
    "linux-image-generic": "linux-headers-generic",
    "linux-image-generic-hwe-24.04": "linux-headers-generic-hwe-24.04",
    "linux-image-generic-hwe-22.04": "linux-headers-generic-hwe-22.04",
    "linux-image-aws": "linux-headers-aws",
    "linux-image-virtual": "linux-headers-virtual",
    "linux-image-oem-24.04": "linux-headers-oem-24.04",
    "linux-image-lowlatency": "linux-headers-lowlatency",
}
NOT_META = ["linux-image-6.1.0-28-amd64", "linux-image-6.8.0-90-generic", "linux-image-unsigned-6.8.0-90-generic",
            "linux-image-extra-virtual", "linux-image-amd64-dbg", "linux-image-6.1.0-28-amd64-dbg",
            "linux-image-amd64-signed-template", "linux-image-uc-generic", "linux-headers-amd64"]


def test_the_header_meta_rule_of_the_driver_roles():
    """What vars/main.yml does: select('match', pattern), then linux-image- -> linux-headers-."""
    pattern = re.compile(DEFAULTS["gpu_kernel_module_image_meta_pattern"])
    chosen = [name for name in list(META) + NOT_META if pattern.match(name)]
    assert {name: name.replace("linux-image-", "linux-headers-", 1) for name in chosen} == META
    assert DEFAULTS["gpu_kernel_module_hold_kernel"] is False  # nothing holds the kernel unless asked
