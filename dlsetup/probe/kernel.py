"""The kernel side: installed kernels, the one that boots next, and the GPU kernel module each has.

A kernel is installed when ``/boot/vmlinuz-<release>`` exists (a ``/lib/modules/<release>`` folder alone is
often what a removed kernel left behind); where ``/boot`` shows none (containers), the ``/lib/modules``
folders that hold a ``kernel/`` tree count. For each, the GPU module is looked for where packages put it:

* ``updates/dkms/`` (DKMS on Debian/Ubuntu), and any module ``dkms status`` lists as installed: "dkms";
* ``kernel/nvidia-<branch>*/`` (Ubuntu's precompiled linux-modules-nvidia-*), ``updates/``, ``extra/``
  and ``extra/nvidia/`` (kmod/akmod packages): "precompiled";
* ``kernel/drivers/gpu/drm/amd/amdgpu/`` (amdgpu ships with the kernel): "in-tree".

Headers: ``/lib/modules/<release>/build`` pointing at a folder that exists, or ``/usr/src/linux-headers-<release>``.
A DKMS build that failed leaves its log in ``/var/lib/dkms/<module>/<version>/build/make.log``
(the last build) or ``.../<release>/<arch>/log/make.log``; the first error line of it is kept.

The next boot (decided in this order, the first that answers wins):

1. GRUB: ``/boot/grub/grub.cfg`` (or ``/boot/grub2/grub.cfg``) and GRUB_DEFAULT from
   ``/etc/default/grub`` (``saved``: ``saved_entry`` of ``grubenv``): the entry GRUB starts, and the
   vmlinuz it boots ("grubenv" when the saved entry decided, else "grub.cfg"). grub.cfg is what the boot
   loader reads, so a kernel installed without ``update-grub`` having run is rightly not the next boot.
2. The ``/boot/vmlinuz`` (or ``/vmlinuz``) symlink Debian's kernel postinst keeps on the newest kernel.
3. The newest installed kernel by version, which is what update-grub puts first ("newest").

Standard library only, Python 3.9+ (runs on remote hosts too).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from dlsetup.model import KernelImage, KernelState
from dlsetup.parsers import kernel as kp
from dlsetup.probe.host import Host

COMMANDS = {"dkms-status": ["dkms", "status"]}
GPU_MODULES = ("nvidia", "amdgpu")
_KO_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
#: (folder under /lib/modules/<release>, module, source); folders with a "*" are matched by prefix
_MODULE_DIRS = (
    ("updates/dkms", "nvidia", "dkms"),
    ("updates/dkms", "amdgpu", "dkms"),
    ("kernel/nvidia*", "nvidia", "precompiled"),
    ("updates", "nvidia", "precompiled"),
    ("updates", "amdgpu", "precompiled"),
    ("extra", "nvidia", "precompiled"),
    ("extra/nvidia", "nvidia", "precompiled"),
    ("extra", "amdgpu", "precompiled"),
    ("kernel/drivers/gpu/drm/amd/amdgpu", "amdgpu", "in-tree"),
)


def read_kernels(host: Host, running: Optional[str]) -> KernelState:
    """What :class:`KernelState` says about ``host``, whose running kernel is ``running``."""
    releases = [name[len("vmlinuz-"):] for name in _present(host, "/boot", lambda n: n.startswith("vmlinuz-"))]
    modules_dirs = host.listdir("/lib/modules")
    if not releases:
        releases = [r for r in modules_dirs if _present(host, f"/lib/modules/{r}", lambda n: n == "kernel")]
    if running and running not in releases and running in modules_dirs:
        releases.append(running)
    releases = sorted(set(releases), key=kp.version_key)
    if not releases:
        return KernelState(running=running)
    dkms = kp.parse_dkms_status(host.run("dkms-status", COMMANDS["dkms-status"]) or "")
    images = tuple(_image(host, release, dkms) for release in releases)
    next_boot, source = next_boot_kernel(host, releases)
    return KernelState(running=running, next_boot=next_boot, next_boot_source=source, kernels=images)


def _image(host: Host, release: str, dkms: Tuple[kp.DkmsEntry, ...]) -> KernelImage:
    found: Dict[str, str] = {}
    mine = [e for e in dkms if e.kernel == release]
    for entry in mine:
        if entry.module in GPU_MODULES and entry.state == "installed":
            found.setdefault(entry.module, "dkms")
    base = f"/lib/modules/{release}"
    for folder, module, source in _MODULE_DIRS:
        if module in found:
            continue
        for path in _expand(host, base, folder):
            names = {f"{module}{suffix}" for suffix in _KO_SUFFIXES}
            if _present(host, path, names.__contains__):
                found[module] = source
                break
    failure = None
    for module in GPU_MODULES:
        if module in found:
            continue
        for version in host.listdir(f"/var/lib/dkms/{module}"):
            if version in ("original_module", "kernel-" + release) or version.startswith("kernel-"):
                continue
            failure = failure or _failure(host, module, version, release)
    return KernelImage(
        version=release,
        nvidia_module=found.get("nvidia"),
        amdgpu_module=found.get("amdgpu"),
        headers=_headers(host, release),
        dkms=tuple(f"{e.module}/{e.version}: {e.state}" for e in mine),
        dkms_failure=failure,
    )


def _present(host: Host, folder: str, wanted) -> List[str]:
    """The entries of ``folder`` that ``wanted`` accepts; each is looked at (so a saved bundle keeps it)."""
    return [name for name in host.listdir(folder) if wanted(name) and host.exists(f"{folder}/{name}")]


def _expand(host: Host, base: str, folder: str) -> List[str]:
    if not folder.endswith("*"):
        return [f"{base}/{folder}"]
    parent, _, prefix = folder[:-1].rpartition("/")
    return [f"{base}/{parent}/{name}" for name in host.listdir(f"{base}/{parent}") if name.startswith(prefix)]


def _failure(host: Host, module: str, version: str, release: str) -> Optional[str]:
    root = f"/var/lib/dkms/{module}/{version}"
    logs = [f"{root}/{release}/{arch}/log/make.log" for arch in host.listdir(f"{root}/{release}")]
    build_log = f"{root}/build/make.log"
    for log in logs + [build_log]:
        text = host.read(log) if host.exists(log) else None
        if not text:
            continue
        if log == build_log and release not in text:  # the last build was for another kernel
            continue
        error = kp.make_log_failure(text)
        if error:
            return f"{module}/{version}: {error}"
    return None


def _headers(host: Host, release: str) -> bool:
    """Headers are there when /lib/modules/<release>/build (a folder, or a link to one) or
    /usr/src/linux-headers-<release> holds the kernel's top Makefile."""
    build = f"/lib/modules/{release}/build"
    target = host.readlink(build)
    if target is not None:
        build = target if target.startswith("/") else f"/lib/modules/{release}/{target}"
    return host.exists(f"{build}/Makefile") or host.exists(f"/usr/src/linux-headers-{release}/Makefile")


def next_boot_kernel(host: Host, releases: List[str]) -> Tuple[Optional[str], Optional[str]]:
    """(release, how it was decided) of the kernel that boots next; see the module's docstring."""
    cfg = host.read("/boot/grub/grub.cfg") if host.exists("/boot/grub/grub.cfg") else None
    if cfg is None and host.exists("/boot/grub2/grub.cfg"):
        cfg = host.read("/boot/grub2/grub.cfg")
    if cfg:
        entries = kp.parse_grub_cfg(cfg)
        defaults = kp.parse_shell_vars(host.read("/etc/default/grub") or "") if host.exists("/etc/default/grub") else {}
        default = defaults.get("GRUB_DEFAULT", "0")
        saved = None
        if default == "saved":
            env = host.read("/boot/grub/grubenv") if host.exists("/boot/grub/grubenv") else None
            saved = kp.parse_shell_vars(env or "").get("saved_entry")
        entry = kp.grub_default(entries, default, saved)
        kernel = entry.kernel if entry else kp.kernel_in(saved or default, releases)
        if kernel:
            return kernel, "grubenv" if saved else "grub.cfg"
    for link in ("/boot/vmlinuz", "/vmlinuz"):
        target = host.readlink(link)
        if target and "vmlinuz-" in target:
            return target.rsplit("vmlinuz-", 1)[1], "/boot/vmlinuz"
    return kp.newest(releases), "newest"
