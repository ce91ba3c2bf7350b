"""The kernel side: parsers over real ``dkms status`` / make.log / grub.cfg captures, the reader over small
fake roots built from them, the bundle round trip, and the check rule that fails before a reboot would
leave the GPUs without a driver."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import H100_BUNDLE, PUBLIC, REPO
from dlsetup.advice import run_checks
from dlsetup.model import HostProfile, KernelImage, KernelState
from dlsetup.parsers import kernel as kp
from dlsetup.probe import Host, Recorder, probe
from dlsetup.probe.kernel import read_kernels

KERNEL = PUBLIC / "kernel"
GRUB_CFG = (KERNEL / "grub-cfg_ubuntu2404.txt").read_text()
OLD, NEW = "6.8.0-88-generic", "6.8.0-90-generic"


def two_kernel_grub_cfg() -> str:
    """The real Ubuntu grub.cfg as update-grub writes it once 6.8.0-90 is installed next to 6.8.0-88:
    the new kernel in the top entry and first in the submenu."""
    top_end = GRUB_CFG.index("submenu ")
    top = GRUB_CFG[:top_end].replace(OLD, NEW)
    sub = GRUB_CFG[top_end:]
    head, _, rest = sub.partition("\n")
    first_entry = rest[:rest.index("        menuentry", 10)]
    return top + head + "\n" + first_entry.replace(OLD, NEW) + rest


# -- parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("dkms-status_dkms3_ubuntu.txt", [("nvidia", "535.86.05", "6.5.0-060500rc5-generic", "installed"),
                                      ("rtl8852bu", "1.19.3", "6.5.0-060500rc5-generic", "installed")]),
    ("dkms-status_dkms2_fedora.txt", [("nvidia", "396.45", k, "installed") for k in
                                      ("4.17.11-200.fc28.x86_64", "4.17.12-200.fc28.x86_64",
                                       "4.17.14-202.fc28.x86_64")]),
    ("dkms-status_dkms2_ubuntu.txt", [("nvidia", "460.91.03", "5.11.0-36-generic", "installed")]),
    ("dkms-status_dkms2_broken.txt", []),
])
def test_dkms_status_real_outputs(name, expected):
    entries = kp.parse_dkms_status((KERNEL / name).read_text())
    assert [(e.module, e.version, e.kernel, e.state) for e in entries] == expected
    assert all(e.arch == "x86_64" for e in entries)


def test_dkms_status_note_and_added():
    (entry,) = kp.parse_dkms_status((KERNEL / "dkms-status_dkms2_original-module.txt").read_text())
    assert entry.state == "installed" and entry.note == "(original_module exists)"
    (added,) = kp.parse_dkms_status("nvidia/580.95.05: added\n")
    assert (added.module, added.version, added.kernel, added.state) == ("nvidia", "580.95.05", None, "added")


def test_make_log_failure_real_logs():
    error = kp.make_log_failure((KERNEL / "make-log_nvidia-465.19.01.txt").read_text())
    assert error.endswith("error: implicit declaration of function ‘sys_close’ [-Werror=implicit-function-declaration]")
    assert kp.make_log_failure((KERNEL / "make-log_nvidia-455.50.10_warnings.txt").read_text()) is None


def test_grub_cfg_real_entries_and_default():
    entries = kp.parse_grub_cfg(GRUB_CFG)
    assert [e.kernel for e in entries] == [OLD, OLD, OLD, None]
    assert entries[1].title == "Advanced options for Ubuntu>Ubuntu, with Linux 6.8.0-88-generic"
    assert kp.grub_default(entries, "0", None) == entries[0]
    assert kp.grub_default(entries, "1>1", None) == entries[2]
    assert kp.grub_default(entries, "2", None).title == "UEFI Firmware Settings"


def test_grub_default_saved_entry_picks_the_older_kernel():
    entries = kp.parse_grub_cfg(two_kernel_grub_cfg())
    assert kp.grub_default(entries, "0", None).kernel == NEW
    saved = ("gnulinux-advanced-bae9d9ac-cfb9-4e94-a5e5-faa77306bffb>"
             "gnulinux-6.8.0-88-generic-advanced-bae9d9ac-cfb9-4e94-a5e5-faa77306bffb")
    assert kp.grub_default(entries, "saved", saved).kernel == OLD
    title = "Advanced options for Ubuntu>Ubuntu, with Linux 6.8.0-88-generic"
    assert kp.grub_default(entries, title, None).kernel == OLD


def test_version_order_is_numeric():
    assert kp.newest(["6.8.0-9-generic", "6.8.0-45-generic", "6.8.0-100-generic"]) == "6.8.0-100-generic"
    assert kp.newest([]) is None


# -- reader over fake roots -------------------------------------------------------------------------


def touch(root: Path, path: str, text: str = "") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def ubuntu_root(root: Path, *, new_module=False, new_headers=False, dkms_status=None, grub=True,
                default="0") -> Path:
    """An Ubuntu host after unattended-upgrades installed NEW next to OLD: OLD has the DKMS-built nvidia
    module and headers; NEW (the next boot) gets them only when asked; the DKMS build for NEW failed."""
    for release in (OLD, NEW):
        touch(root, f"/boot/vmlinuz-{release}")
        touch(root, f"/lib/modules/{release}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.zst")
    touch(root, f"/lib/modules/{OLD}/updates/dkms/nvidia.ko.zst")
    touch(root, f"/usr/src/linux-headers-{OLD}/Makefile")
    (root / f"lib/modules/{OLD}/build").symlink_to(f"/usr/src/linux-headers-{OLD}")
    if new_module:
        touch(root, f"/lib/modules/{NEW}/updates/dkms/nvidia.ko.zst")
    if new_headers:
        touch(root, f"/usr/src/linux-headers-{NEW}/Makefile")
        (root / f"lib/modules/{NEW}/build").symlink_to(f"/usr/src/linux-headers-{NEW}")
    log = (KERNEL / "make-log_nvidia-465.19.01.txt").read_text()
    touch(root, "/var/lib/dkms/nvidia/580.95.05/build/make.log",
          f"DKMS make.log for nvidia-580.95.05 for kernel {NEW} (x86_64)\n" + log)
    status = dkms_status if dkms_status is not None else f"nvidia/580.95.05, {OLD}, x86_64: installed\n"
    touch(root, "/cmd/dkms-status.out", status)
    if grub:
        touch(root, "/boot/grub/grub.cfg", two_kernel_grub_cfg())
        touch(root, "/etc/default/grub", f"GRUB_DEFAULT={default}\nGRUB_TIMEOUT=10\n")
    touch(root, "/proc/sys/kernel/osrelease", OLD + "\n")
    touch(root, "/proc/sys/kernel/hostname", "gpu1\n")
    return root


def test_reader_finds_the_missing_module_on_the_next_boot(tmp_path):
    state = read_kernels(Host.bundle(ubuntu_root(tmp_path)), OLD)
    assert [k.version for k in state.kernels] == [OLD, NEW]
    assert (state.running, state.next_boot, state.next_boot_source) == (OLD, NEW, "grub.cfg")
    old, new = state.kernels
    assert (old.nvidia_module, old.headers, old.dkms) == ("dkms", True, ("nvidia/580.95.05: installed",))
    assert (new.nvidia_module, new.headers) == (None, False)
    assert new.dkms_failure.startswith("nvidia/580.95.05: ") and "sys_close" in new.dkms_failure
    assert old.dkms_failure is None
    assert (old.amdgpu_module, new.amdgpu_module) == ("in-tree", "in-tree")


def test_reader_finds_dkms_module_files_without_dkms_status(tmp_path):
    """updates/dkms is where Debian's DKMS installs: the file alone tells (no dkms command in a bundle)."""
    state = read_kernels(Host.bundle(ubuntu_root(tmp_path, new_module=True, new_headers=True, dkms_status="")), OLD)
    assert [k.nvidia_module for k in state.kernels] == ["dkms", "dkms"]
    assert [k.headers for k in state.kernels] == [True, True]
    assert state.kernels[1].dkms_failure is None


@pytest.mark.parametrize("place, source", [
    ("kernel/nvidia-580/nvidia.ko", "precompiled"),  # Ubuntu's linux-modules-nvidia-580-*
    ("extra/nvidia/nvidia.ko.xz", "precompiled"),  # kmod/akmod
])
def test_reader_precompiled_modules(tmp_path, place, source):
    root = ubuntu_root(tmp_path, dkms_status="")
    touch(root, f"/lib/modules/{NEW}/{place}")
    state = read_kernels(Host.bundle(root), OLD)
    assert state.image(NEW).nvidia_module == source


def test_next_boot_without_grub(tmp_path):
    root = ubuntu_root(tmp_path, grub=False)
    assert read_kernels(Host.bundle(root), OLD).next_boot_source == "newest"
    (root / "boot" / "vmlinuz").symlink_to(f"vmlinuz-{OLD}")
    state = read_kernels(Host.bundle(root), OLD)
    assert (state.next_boot, state.next_boot_source) == (OLD, "/boot/vmlinuz")


def test_next_boot_saved_entry(tmp_path):
    root = ubuntu_root(tmp_path, default="saved")
    touch(root, "/boot/grub/grubenv", "# GRUB Environment Block\nsaved_entry=Advanced options for Ubuntu>"
          f"Ubuntu, with Linux {OLD}\n" + "#" * 900)
    state = read_kernels(Host.bundle(root), OLD)
    assert (state.next_boot, state.next_boot_source) == (OLD, "grubenv")


def test_no_kernels_known_is_unknown(tmp_path):
    assert read_kernels(Host.bundle(tmp_path), "6.1.0-1-amd64") == KernelState(running="6.1.0-1-amd64")
    assert probe(bundle=H100_BUNDLE).kernel.kernels == ()  # the capture holds no /boot nor /lib/modules


def test_saved_bundle_reads_back_the_same(tmp_path):
    root = ubuntu_root(tmp_path / "host")
    recorder = Recorder(Host.bundle(root))
    first = read_kernels(recorder, OLD)
    recorder.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "commands.json").read_text())["cmd/dkms-status.out"] == "dkms status"
    assert read_kernels(Host.bundle(tmp_path / "saved"), OLD) == first


# -- the check rule ---------------------------------------------------------------------------------


def nvidia_profile(state: KernelState, loaded=True) -> HostProfile:
    base = probe(bundle=H100_BUNDLE)
    return dataclasses.replace(base, kernel=state,
                               nvidia=dataclasses.replace(base.nvidia, kernel_module_loaded=loaded))


def kernel_findings(profile: HostProfile):
    return [f for f in run_checks(profile) if f.id.startswith("kernel.")]


def test_check_fails_when_the_next_boot_kernel_has_no_module(tmp_path):
    state = read_kernels(Host.bundle(ubuntu_root(tmp_path)), OLD)
    (finding,) = kernel_findings(nvidia_profile(state))
    assert (finding.id, finding.severity) == ("kernel.next_boot", "fail")
    assert "rebooting now leaves the GPUs without a driver" in finding.message
    assert NEW in finding.message and "sys_close" in finding.message and "no kernel headers" in finding.message
    assert finding.hint == f"apt install linux-headers-{NEW} && dkms autoinstall -k {NEW}"


def test_check_warns_for_another_kernel_and_passes_the_next_boot():
    state = KernelState(running=NEW, next_boot=NEW, next_boot_source="grub.cfg", kernels=(
        KernelImage(OLD, headers=True), KernelImage(NEW, nvidia_module="dkms", headers=True)))
    findings = kernel_findings(nvidia_profile(state))
    assert [(f.id, f.severity) for f in findings] == [("kernel.modules", "warn"), ("kernel.next_boot", "pass")]
    assert findings[0].hint == f"dkms autoinstall -k {OLD}"


def test_check_precompiled_fix_names_the_package():
    state = KernelState(running=OLD, next_boot=NEW, kernels=(
        KernelImage(OLD, nvidia_module="precompiled", headers=False), KernelImage(NEW, headers=False)))
    profile = nvidia_profile(state)
    profile = dataclasses.replace(profile, nvidia=dataclasses.replace(profile.nvidia, library_version="590.48.01"))
    (finding,) = kernel_findings(profile)
    assert finding.severity == "fail"
    assert finding.hint == f"apt install linux-modules-nvidia-590-{NEW}"


def test_check_is_quiet_without_a_driver_or_without_kernel_facts():
    state = KernelState(running=OLD, next_boot=NEW, kernels=(KernelImage(OLD), KernelImage(NEW)))
    fresh = nvidia_profile(state, loaded=False)
    fresh = dataclasses.replace(fresh, nvidia=dataclasses.replace(fresh.nvidia, library_version=None))
    assert kernel_findings(fresh) == []  # nothing installed yet: provision's job, not a broken reboot
    assert kernel_findings(nvidia_profile(KernelState(running=OLD))) == []


def test_cli_check_strict_fails_on_a_bundle(tmp_path):
    """The whole path: a bundle with the capture's GPU facts and a next-boot kernel without its module."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle, symlinks=True)
    ubuntu_root(bundle)
    out = subprocess.run([sys.executable, "-m", "dlsetup", "check", "--strict", "--json", "--from-bundle", str(bundle)],
                         capture_output=True, text=True, cwd=REPO)
    doc = json.loads(out.stdout)
    failing = [f for f in doc["findings"] if f["id"] == "kernel.next_boot"]
    assert failing and failing[0]["severity"] == "fail", out.stderr
    assert out.returncode == 1
