"""A Debian 12 VM with its own kernel under qemu (software emulation), four extra disks, SSH on 127.0.0.1.

The image is built once from the cached Debian root (:mod:`lab.rootfs`) and cached next to it
(``<lab cache>/../vm-bookworm``): a raw ext4 root filesystem, the kernel and initramfs to boot it with,
and the SSH key that logs in as root. Each :class:`VM` boots a copy-on-write overlay of that image, so
every session starts from the pristine one, plus its own blank data disks, each with a serial number so
the guest lists it under ``/dev/disk/by-id/virtio-<serial>``. (The test lab's VM recipe.)

Command line, from tests/: ``python -m lab.vm build`` (print the cached image folder, building it if needed).
"""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from lab import rootfs

#: Packages of the guest: a kernel, systemd with D-Bus (shutdown -r needs it), DHCP, sshd, and the disk tools
#: the tests plant data with.
#: xfsprogs is left out on purpose: the storage role installs it, so an interrupted run can hit dpkg.
PACKAGES = ("linux-image-amd64", "systemd-sysv", "dbus", "udev", "ifupdown", "isc-dhcp-client", "openssh-server",
            "mdadm", "lvm2", "fdisk", "kmod", "initramfs-tools")
#: Data disks attached to every VM, with the serial numbers the guest sees.
DISK_SERIALS = ("dlsetup-d1", "dlsetup-d2", "dlsetup-d3", "dlsetup-d4")
DISK_SIZE = "256M"
ROOT_SIZE = "3G"
HOSTNAME = "dlsetup-vm"
ROOT_LABEL = "vmroot"
BOOT_TIMEOUT = 300.0
_SSH_OPTIONS = ("-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
                "-o", "BatchMode=yes")


def image_dir() -> Path:
    """Where the cached VM image lives."""
    return rootfs.cache_dir().parent / "vm-bookworm"


@dataclass(frozen=True)
class Image:
    """A built VM image folder."""

    path: Path

    @property
    def disk(self) -> Path:
        return self.path / "root.img"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def host_key(self) -> Path:
        """The guest's SSH host key (public), so clients check it."""
        return self.path / "ssh_host_ed25519_key.pub"


def _run(args: Sequence[str]) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys and /dev inside ``root`` for package scripts, unmounted again in reverse order."""
    mounted: list[Path] = []
    try:
        for name, args in (("proc", ["-t", "proc", "proc"]), ("sys", ["-t", "sysfs", "sysfs"]),
                           ("dev", ["--bind", "/dev"])):
            target = root / name
            _run(["mount", *args, str(target)])
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def _configure(root: Path, public_key: str) -> None:
    """Hostname, DHCP on the qemu NIC, the root filesystem, the initramfs and the authorized SSH key."""
    (root / "etc" / "hostname").write_text(HOSTNAME + "\n")
    (root / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    (root / "etc" / "network" / "interfaces").write_text(
        "auto lo\niface lo inet loopback\n\nauto ens3\niface ens3 inet dhcp\n")
    (root / "etc" / "fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 defaults 0 1\n")
    # The boot initramfs (built in the chroot) has every block driver; rebuilt inside the VM, under
    # software emulation, it takes the drivers in use only, or one update-initramfs takes many minutes.
    conf = root / "etc" / "initramfs-tools" / "initramfs.conf"
    conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=dep"))
    ssh = root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key)
    (ssh / "authorized_keys").chmod(0o600)


def build_image(dest: Path | None = None, extra_packages: Sequence[str] = (), host_sources: bool = False,
                root_size: str = ROOT_SIZE) -> Image:
    """Return the cached VM image, building it first (about 3 minutes) if it does not exist.

    A test that needs more in the guest builds its own image (another ``dest``): ``extra_packages`` are
    installed after :data:`PACKAGES` ("{kernel}" in a name stands for the image's kernel release), and with
    ``host_sources`` the guest gets this machine's apt sources (its updates and security suites too) instead of
    the root's single suite. ``root_size``: the root filesystem's size (sparse), for a guest that installs much."""
    dest = dest or image_dir()
    with rootfs.building(dest):
        return _build_image(dest, extra_packages, host_sources, root_size)


def _build_image(dest: Path, extra_packages: Sequence[str], host_sources: bool, root_size: str) -> Image:
    if (dest / "root.img").exists():
        return Image(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        root = rootfs.fresh_copy(work / "root")
        (root / "usr" / "sbin" / "policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no daemons in the chroot
        (root / "usr" / "sbin" / "policy-rc.d").chmod(0o755)
        env = "DEBIAN_FRONTEND=noninteractive"
        with _chroot_mounts(root):
            # with this machine's sources from the start, so that the kernel is the one the extra packages
            # (its headers, dkms) follow: one kernel in the image, not the root suite's and the updates' one
            if host_sources:
                _copy_host_sources(root)
            _run(["chroot", str(root), "apt-get", "update", "-qq"])
            _run(["chroot", str(root), "env", env, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                  *PACKAGES])
            if extra_packages:
                release = next((root / "boot").glob("vmlinuz-*")).name.removeprefix("vmlinuz-")
                _run(["chroot", str(root), "env", env, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                      *(name.replace("{kernel}", release) for name in extra_packages)])
            _run(["chroot", str(root), "apt-get", "clean"])
        (root / "usr" / "sbin" / "policy-rc.d").unlink()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dlsetup-vm", "-f", str(work / "id_ed25519")])
        _configure(root, (work / "id_ed25519.pub").read_text())
        shutil.copy(root / "etc" / "ssh" / "ssh_host_ed25519_key.pub", work / "ssh_host_ed25519_key.pub")
        boot = root / "boot"
        # the kernel the /vmlinuz link names (the one a boot loader starts), else the only one there is
        link = root / "vmlinuz"
        release = (link.readlink().name if link.is_symlink() else next(boot.glob("vmlinuz-*")).name)
        release = release.removeprefix("vmlinuz-")
        shutil.copy(boot / f"vmlinuz-{release}", work / "vmlinuz")
        shutil.copy(boot / f"initrd.img-{release}", work / "initrd.img")
        _run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(work / "root.img"), root_size])
        rootfs.remove_copy(root)
        work.rename(dest)
    except BaseException:
        for mount in ("dev", "sys", "proc"):
            subprocess.run(["umount", "-l", str(work / "root" / mount)], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Image(dest)


def _copy_host_sources(root: Path) -> None:
    """This machine's apt sources (sources.list and sources.list.d) replace the root's."""
    for name in ("sources.list", "sources.list.d"):
        target = root / "etc" / "apt" / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        host = Path("/etc/apt") / name
        if host.is_dir():
            shutil.copytree(host, target)
        elif host.exists():
            shutil.copy(host, target)
    (root / "etc" / "apt" / "sources.list.d").mkdir(exist_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VM:
    """A running VM; create it with :func:`boot`."""

    image: Image
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    disks: tuple[Path, ...] = field(default=())
    overlay: Path | None = None  #: the copy-on-write root disk this VM boots
    kernel: Path | None = None  #: kernel and initramfs booted; None: the image's
    initrd: Path | None = None
    cpu: str | None = None  #: qemu's -cpu model; None: qemu's default (x86-64 baseline, no SSE4.2 or AVX)
    #: no network but this machine's SSH forward: qemu's user network with restrict=on routes nothing out of
    #: the guest (neither this machine, 10.0.2.2, nor beyond); the forwarded SSH port still reaches the guest
    isolated: bool = False

    @property
    def by_id(self) -> tuple[str, ...]:
        """The data disks as the guest names them in /dev/disk/by-id."""
        return tuple(f"/dev/disk/by-id/virtio-{serial}" for serial in DISK_SERIALS)

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    def _options(self) -> list[str]:
        return [*_SSH_OPTIONS, "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def ssh_args(self) -> list[str]:
        return ["ssh", *self._options(), "-i", str(self.image.key), "-p", str(self.port), "root@127.0.0.1"]

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as root."""
        run = subprocess.run([*self.ssh_args(), command], capture_output=True, text=True, timeout=timeout)
        if check and run.returncode != 0:
            raise RuntimeError(f"{command!r} failed in the VM ({run.returncode}): {run.stderr.strip()}")
        return run

    def inventory(self, name: str = "vm") -> str:
        """An INI inventory line for Ansible."""
        ssh = " ".join(self._options())
        return (f"{name} ansible_host=127.0.0.1 ansible_port={self.port} ansible_user=root "
                f"ansible_ssh_private_key_file={self.image.key} ansible_python_interpreter=/usr/bin/python3 "
                f"ansible_ssh_common_args={shlex.quote(ssh)}\n")

    def boot_id(self) -> str | None:
        """The guest's boot id, or None while SSH does not answer."""
        try:
            run = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=15)
        except subprocess.TimeoutExpired:
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    def wait_ssh(self, timeout: float = BOOT_TIMEOUT, not_boot_id: str | None = None) -> str:
        """Wait until SSH answers (from a boot other than ``not_boot_id``); return the boot id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.process.returncode}); see {self.console_log}")
            boot = self.boot_id()
            if boot is not None and boot != not_boot_id:
                return boot
            time.sleep(2)
        raise TimeoutError(f"no SSH on port {self.port} after {timeout:.0f} s; see {self.console_log}")

    def reboot(self) -> str:
        """Reboot the guest (qemu keeps running) and wait for it; return the new boot id."""
        before = self.wait_ssh()
        self.ssh("systemctl reboot", check=False, timeout=15)
        return self.wait_ssh(not_boot_id=before)

    def boot_next(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Boot the kernel the guest's boot loader would start next and return the new boot id.

        qemu boots the kernel directly (-kernel, no boot loader), so a reboot would start the same kernel
        again: the targets of the guest's /vmlinuz and /initrd.img links (which Debian's kernel packages point
        at the kernel to boot next) are copied out, the guest is powered off, and qemu starts again on the same
        disks with them."""
        assert self.overlay is not None, "boot the VM with boot()"
        before = self.wait_ssh()
        for link, local in (("/vmlinuz", "next-vmlinuz"), ("/initrd.img", "next-initrd.img")):
            target = self.ssh(f"readlink -f {link}").stdout.strip()
            copy = subprocess.run([*self.ssh_args(), f"cat {shlex.quote(target)}"], capture_output=True, check=True,
                                  timeout=300)
            (self.workdir / local).write_bytes(copy.stdout)
        self.ssh("sync; systemctl poweroff", check=False, timeout=15)
        if self.process is not None:
            try:
                self.process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.stop()
        self.kernel, self.initrd = self.workdir / "next-vmlinuz", self.workdir / "next-initrd.img"
        self._start()
        return self.wait_ssh(timeout, not_boot_id=before)

    def _start(self) -> None:
        assert self.overlay is not None
        self.process = subprocess.Popen(_qemu_command(self, self.overlay), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=(self.workdir / "qemu.err").open("ab"))

    def stop(self) -> None:
        """Stop qemu by its pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _qemu_command(vm: VM, overlay: Path) -> list[str]:
    command = [
        "qemu-system-x86_64", "-nodefaults", "-accel", "tcg,thread=multi", "-m", "2048", "-smp", "2",
        "-display", "none", "-monitor", "none", "-serial", f"file:{vm.console_log}",
        *(["-cpu", vm.cpu] if vm.cpu else []),
        "-kernel", str(vm.kernel or vm.image.kernel), "-initrd", str(vm.initrd or vm.image.initrd),
        "-append", f"root=LABEL={ROOT_LABEL} rw console=ttyS0",
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-netdev", f"user,id=n0,{'restrict=on,' if vm.isolated else ''}hostfwd=tcp:127.0.0.1:{vm.port}-:22",
        "-device", "virtio-net-pci,netdev=n0,addr=0x3",  # PCI slot 3: the guest names it ens3
        "-device", "virtio-rng-pci",  # entropy for sshd early in the boot
    ]
    for disk, serial in zip(vm.disks, DISK_SERIALS, strict=False):
        command += ["-drive", f"file={disk},format=raw,if=none,id={serial}",
                    "-device", f"virtio-blk-pci,drive={serial},serial={serial}"]
    return command


@contextmanager
def boot(workdir: Path, image: Image | None = None, cpu: str | None = None, isolated: bool = False
         ) -> Iterator[VM]:
    """Boot a VM from a fresh overlay of the cached image and blank data disks; stop it on exit.

    ``cpu``: qemu's -cpu model, e.g. "max" (every instruction set extension the emulator has: numpy's and
    torch's wheels need x86-64-v2, which qemu's default model lacks). ``isolated``: no network out of the
    guest, only the SSH forward in (:attr:`VM.isolated`)."""
    image = image or build_image()
    overlay = workdir / "root.qcow2"
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "raw", str(overlay)])
    disks = tuple(workdir / f"{serial}.img" for serial in DISK_SERIALS)
    for disk in disks:
        _run(["truncate", "-s", DISK_SIZE, str(disk)])
    vm = VM(image=image, workdir=workdir, port=_free_port(), disks=disks, overlay=overlay, cpu=cpu,
            isolated=isolated)
    vm.known_hosts.write_text(f"[127.0.0.1]:{vm.port} {image.host_key.read_text()}")
    with ExitStack() as stack:
        vm._start()
        stack.callback(vm.stop)
        vm.wait_ssh()
        yield vm


def main(argv: list[str]) -> int:
    """``build``: print the cached image folder."""
    if argv != ["build"]:
        print(__doc__, file=sys.stderr)
        return 2
    print(build_image().path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
