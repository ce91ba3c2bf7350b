"""Kernel updates on a real Debian 12 VM: a new kernel without the GPU module makes ``dlsetup check`` fail
naming it, ``dlsetup provision`` gives it the module (DKMS), and the module loads after booting that kernel.

One VM boots for the module (lab.vm, an image of its own with the build tools, dkms and the running kernel's
headers pre-installed: what is not under test). The driver is NVIDIA's stand-in from the lab's vendor
repositories (lab.vendor_repos, built from tests/lab/vendors/nvidia.toml) with ``dkms_modules``: its
nvidia-kernel-open-dkms carries a tiny out-of-tree module named ``nvidia`` that DKMS builds like the real one.
The VM has no GPU: the guest's virtio-rng device is shown to the probe as a Tesla T4 (its sysfs vendor, device
and class files bind-mounted over), which is all the planner and check need to treat the host as an NVIDIA one.
The second kernel is another ABI of Debian 12's kernel from the archive (the guest has this machine's apt
sources and reaches the mirror through qemu's NAT), installed without its headers, as a kernel update whose
headers did not come along leaves it. "Rebooting" into it is lab.vm's boot_next: qemu boots kernels directly,
so the kernel the guest's /vmlinuz link names (what its boot loader would start) is copied out and booted.

The image holds one kernel (this machine's sources are in place before its kernel is installed), so the first
provision builds the module once. Measured in a CI-like run on the lab machine (2 cores, beside the other tiers
for part of it, software emulation; the module prints its timings with -s): about 17 min for the module, its image
build (about 4 min, once, then cached) included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from lab import mirror, vendor_repos
from lab import vm as vm_lab

pytestmark = pytest.mark.vm

#: Pre-installed in this module's image: what the roles need but this test does not test (build tools, dkms,
#: python3-apt for Ansible's apt module, common's packages, the running kernel's headers and the header meta
#: package, whose rule tests/test_plan_kernel.py checks).
IMAGE_PACKAGES = ("build-essential", "dkms", "python3-apt", "python3-debian", "gpg", "python3-venv",
                  "python3-packaging", "pciutils", "ca-certificates", "linux-headers-{kernel}", "linux-headers-amd64")
#: The guest's virtio-rng device shown as a Tesla T4 (PCI 10de:1eb8, class 3D controller).
FAKE_GPU = r"""
set -eu
dev=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1af4 ] && grep -qE '^0x(1005|1044)$' "$d/device"; then dev=$d; fi
done
[ -n "$dev" ]
mkdir -p /run/fake-gpu
echo 0x10de > /run/fake-gpu/vendor; echo 0x1eb8 > /run/fake-gpu/device; echo 0x030200 > /run/fake-gpu/class
for f in vendor device class; do mount --bind "/run/fake-gpu/$f" "$dev/$f"; done
cat "$dev/vendor"
"""
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def image() -> vm_lab.Image:
    return vm_lab.build_image(vm_lab.image_dir().parent / "vm-bookworm-dkms", IMAGE_PACKAGES, host_sources=True)


@pytest.fixture(scope="module")
def vm(image: vm_lab.Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[vm_lab.VM]:
    start = time.monotonic()
    with vm_lab.boot(tmp_path_factory.mktemp("vm"), image) as machine:
        TIMES["boot"] = time.monotonic() - start
        yield machine
    print("\ntimings (s):", json.dumps({k: round(v) for k, v in TIMES.items()}))


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL the guest reaches the stand-in repositories at, key fingerprint)."""
    built = vendor_repos.build(tmp_path_factory.mktemp("vendor"), dkms_modules=True)
    with mirror.serve(built.root) as url:
        yield url.replace("127.0.0.1", "10.0.2.2"), built.fingerprint  # the host, as qemu's NAT shows it


def _host(vm: vm_lab.VM) -> str:
    return f"vm-{vm.port}"


@pytest.fixture(scope="module")
def setup(vm: vm_lab.VM, vendor: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("kernel")
    (work / "hosts.ini").write_text(vm.inventory(_host(vm)))
    url, fingerprint = vendor
    (work / "vars.yml").write_text(yaml.safe_dump({
        "nvidia_driver_repo_url": f"{url.rstrip('/')}/nvidia/debian12/",
        "nvidia_driver_repo_key_url": f"{url.rstrip('/')}/key.asc",
        "nvidia_driver_repo_key_fingerprint": fingerprint,
        "nvidia_driver_persistence_daemon": False,  # the stand-in driver has no nvidia-persistenced
    }))
    return {"inventory": work / "hosts.ini", "vars": work / "vars.yml", "work": work}


def _dlsetup(setup: dict[str, Path], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    work = setup["work"]
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_STATE_HOME": str(work / "state"),
           "DLSETUP_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _provision(setup: dict[str, Path]) -> dict[str, Any]:
    run = _dlsetup(setup, "provision", "-i", str(setup["inventory"]), "-t", "common", "-t", "nvidia_driver",
                   "-e", f"@{setup['vars']}", "--offline", "--yes", "--json")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    (summary,) = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return summary


def _next_boot(setup: dict[str, Path], vm: vm_lab.VM) -> list[dict[str, str]]:
    """The kernel findings of ``dlsetup check -i`` for the VM."""
    run = _dlsetup(setup, "check", "-i", str(setup["inventory"]), "--json", timeout=600)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    doc = json.loads(run.stdout)[_host(vm)]
    return [f for f in doc["findings"] if f["id"].startswith("kernel.")]


def _timed(name: str, fn, *args):
    start = time.monotonic()
    try:
        return fn(*args)
    finally:
        TIMES[name] = time.monotonic() - start


def test_a_new_kernel_gets_the_module_and_boots_with_it(vm: vm_lab.VM, setup: dict[str, Path]) -> None:
    assert vm.ssh(FAKE_GPU).stdout.strip() == "0x10de"
    running = vm.ssh("uname -r").stdout.strip()

    # 1. the driver: the stand-in DKMS module is built for the running kernel
    first = _timed("provision 1", _provision, setup)
    assert (first["status"], first["failed"]) == ("changed", 0), first
    assert vm.ssh(f"ls /lib/modules/{running}/updates/dkms/").stdout.split() == ["nvidia.ko"]
    assert vm.ssh("test -x /etc/kernel/postinst.d/dkms", check=False).returncode == 0
    assert vm.ssh("apt-mark showhold").stdout.strip() == ""  # nothing holds the kernel unless asked

    # 2. a second kernel from the archive, without its headers (another ABI than the header meta package's)
    listing = vm.ssh("apt-cache pkgnames linux-image-6.1.0- ; ls /usr/src").stdout.split()
    with_headers = {name.removeprefix("linux-headers-") for name in listing if name.startswith("linux-headers-")}
    abis = [name.removeprefix("linux-image-") for name in listing
            if re.fullmatch(r"linux-image-6\.1\.0-\d+-amd64", name)]
    new = max((k for k in abis if k != running and k not in with_headers),
              key=lambda k: int(k.split("-")[-2]))
    install = _timed("install kernel", vm.ssh,
                     f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                     f"linux-image-{new}", False, 1800)
    assert vm.ssh(f"dpkg-query -W -f '${{db:Status-Abbrev}}' linux-image-{new}").stdout.strip() == "ii", \
        install.stdout[-2000:] + install.stderr[-2000:]
    assert vm.ssh("readlink -f /vmlinuz").stdout.strip() == f"/boot/vmlinuz-{new}"

    findings = _timed("check", _next_boot, setup, vm)
    (failing,) = [f for f in findings if f["id"] == "kernel.next_boot"]
    assert failing["severity"] == "fail", findings
    assert f"kernel {new} boots next and has no nvidia module" in failing["message"]
    assert "rebooting now leaves the GPUs without a driver" in failing["message"]
    assert failing["hint"] == f"apt install linux-headers-{new} && dkms autoinstall -k {new}"

    # 3. provision gives the new kernel its headers and the module
    second = _timed("provision 2", _provision, setup)
    assert (second["status"], second["failed"]) == ("changed", 0), second
    assert vm.ssh(f"dpkg-query -W -f '${{db:Status-Abbrev}}' linux-headers-{new}").stdout.strip() == "ii"
    assert vm.ssh(f"ls /lib/modules/{new}/updates/dkms/").stdout.split() == ["nvidia.ko"]
    (passing,) = [f for f in _next_boot(setup, vm) if f["id"] == "kernel.next_boot"]
    assert passing["severity"] == "pass" and new in passing["message"], passing

    # 4. boot the kernel the boot loader would start next: the module is there and loads
    _timed("boot next", vm.boot_next)
    assert vm.ssh("uname -r").stdout.strip() == new
    vm.ssh("modprobe nvidia")
    assert vm.ssh("test -d /sys/module/nvidia && lsmod | awk '$1 == \"nvidia\" {print $1}'").stdout.split() == \
        ["nvidia"]
    assert "nvidia stand-in" in vm.ssh("dmesg | grep 'nvidia stand-in'").stdout
