"""The driver role gives every installed kernel the GPU module, on a Debian 12 chroot (lab tier).

A chroot runs the host's kernel, so installed kernels are planted as the files that make one installed
(``/boot/vmlinuz-RELEASE``): the ABI whose headers Debian's archive carries now (the role installs them from the
archive and DKMS really builds the stand-in module against them: lab.vendor_repos with ``dkms_modules``), and
a release no archive has headers for. The role must fail naming that kernel, with DKMS's own words, and build
the module for the other; leaving the unbuildable kernel out (nvidia_driver_ignored_kernels) it converges, and
a second run changes nothing. The whole cycle, with a real kernel update and a reboot, is tests/test_vm_kernel.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

from lab import mirror, play, rootfs, vendor_repos
from lab import vm as vm_lab
from lab.fixtures import lab_root  # noqa: F401 - pytest fixture

#: a release no archive carries headers for
NO_HEADERS = "6.1.0-0-lab-amd64"

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def target(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # noqa: F811
    root = rootfs.fresh_copy(tmp_path_factory.mktemp("kernel-lab") / "target")
    try:
        with vm_lab._chroot_mounts(root):  # dkms reads /proc and /dev/fd, as on a host
            yield root
    finally:
        rootfs.remove_copy(root)


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, str]]:
    built = vendor_repos.build(tmp_path_factory.mktemp("vendors"), dkms_modules=True)
    with mirror.serve(built.root) as url:
        yield url, built.fingerprint


def _chroot(target: Path, *args: str) -> str:
    return subprocess.run(["chroot", str(target), *args], check=True, capture_output=True, text=True).stdout


def converge(target: Path, tmp: Path, variables: Dict[str, Any]) -> Tuple[int, int, str]:
    """Run nvidia_driver on the chroot; (failed count, changed count, output)."""
    run = play.run_role(target, tmp, "nvidia_driver", variables)
    assert run.failed >= 0, run.output  # a recap: the play ran
    return run.failed, run.changed, run.stdout


def _variables(vendors: Tuple[str, str], **extra: Any) -> Dict[str, Any]:
    url, fingerprint = vendors
    return {
        "nvidia_driver_branch": "595", "nvidia_driver_install_type": "compute",
        "nvidia_driver_secure_boot": "disabled", "nvidia_driver_persistence_daemon": False,
        "nvidia_driver_repo_url": f"{url}/nvidia/debian12/", "nvidia_driver_repo_key_url": f"{url}/key.asc",
        "nvidia_driver_repo_key_fingerprint": fingerprint, **extra,
    }


def test_every_installed_kernel_gets_the_module_or_the_role_fails_naming_it(
        target: Path, vendors: Tuple[str, str], tmp_path: Path) -> None:
    _chroot(target, "apt-get", "update", "-qq")
    # the ABI Debian's header meta package points at now: its headers are in the archive
    depends = _chroot(target, "apt-cache", "depends", "linux-headers-amd64")
    (current,) = re.findall(r"Depends: linux-headers-(\d[\w.+-]*-amd64)", depends)
    for release in (current, NO_HEADERS):
        (target / "boot" / f"vmlinuz-{release}").parent.mkdir(exist_ok=True)
        (target / "boot" / f"vmlinuz-{release}").write_text("planted\n")
    variables = _variables(vendors)

    failed, _, out = converge(target, tmp_path, variables)
    assert failed == 1, out[-4000:]
    assert "Fail for a kernel that cannot get the GPU module" in out, out[out.find("fatal:"):][:3000]
    message = out[out.index("Fail for a kernel that cannot get the GPU module"):]
    assert f"Kernel(s) {NO_HEADERS} have no nvidia module (dkms): booting them leaves the GPUs without a driver" \
        in message, message[:3000]
    assert f"no headers for {NO_HEADERS}" in message and "dkms autoinstall -k" in message
    assert f"linux-headers-{current}" in _chroot(target, "dpkg-query", "-W", "-f", "${Package}\n")
    assert _chroot(target, "ls", f"/lib/modules/{current}/updates/dkms/").split() == ["nvidia.ko"]
    assert (target / "etc" / "kernel" / "postinst.d" / "dkms").is_file()

    variables["nvidia_driver_ignored_kernels"] = [NO_HEADERS]
    failed, _, out = converge(target, tmp_path, variables)
    assert failed == 0, out[-4000:]
    failed, changed, out = converge(target, tmp_path, variables)
    assert (failed, changed) == (0, 0), out[-4000:]
    assert _chroot(target, "apt-mark", "showhold").split() == []  # nothing holds the kernel unless asked


def test_the_header_meta_package_of_the_kernel_flavour_and_a_hold_only_when_asked(
        target: Path, vendors: Tuple[str, str], tmp_path: Path) -> None:
    """A real kernel of the cloud flavour from the archive (its meta package linux-image-cloud-amd64, no headers):
    the role installs linux-headers-cloud-amd64 by its rule and builds for the new kernel; the meta packages are
    held only with nvidia_driver_hold_kernel."""
    _chroot(target, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
            "--no-install-recommends", "linux-image-cloud-amd64")
    (cloud,) = [p.name.removeprefix("vmlinuz-") for p in (target / "boot").glob("vmlinuz-*-cloud-amd64")]
    variables = _variables(vendors, nvidia_driver_ignored_kernels=[NO_HEADERS])
    failed, _, out = converge(target, tmp_path, variables)
    assert failed == 0, out[out.find("fatal:"):][:3000]
    packages = _chroot(target, "dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\n").splitlines()
    installed = {line.split()[1] for line in packages if line.startswith("ii")}
    assert {"linux-headers-cloud-amd64", f"linux-headers-{cloud}"} <= installed
    assert _chroot(target, "ls", f"/lib/modules/{cloud}/updates/dkms/").split() == ["nvidia.ko"]
    assert _chroot(target, "apt-mark", "showhold").split() == []

    failed, changed, out = converge(target, tmp_path, {**variables, "nvidia_driver_hold_kernel": True})
    assert (failed, changed) == (0, 1), out[-3000:]
    assert _chroot(target, "apt-mark", "showhold").split() == ["linux-headers-cloud-amd64", "linux-image-cloud-amd64"]
