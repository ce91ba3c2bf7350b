"""A fleet of real SSH hosts on this machine: network namespaces, each with its own Debian root and sshd.

Recipe: the test lab's namespace hosts. Per host: a network namespace ``dls<pid><letter>h<N>`` on a bridge
``dls<pid><letter>br`` (a letter per fleet of the process) with a private /24 that no route of this machine
uses yet; a mount namespace holding an overlayfs of the cached fleet root (the Debian root plus
openssh-server and the common role's packages) with ``/proc``, ``/sys`` and ``/dev`` bound in (``fake_gpu``:
one PCI device's ids replaced by a GPU's, in that namespace only); its own hostname (``unshare --uts``) and
its own ed25519 host key. The controller reaches the hosts over real SSH with a key made per fleet and a
known_hosts file written here, so host key checking stays on. A host started ``reachable=False`` has an
address and no sshd.

Mounts live only in each host's private mount namespace: they go away with its processes. Teardown
kills exactly the processes in the namespaces this fleet made, then deletes those namespaces and links.
Traffic only ever goes to addresses of namespaces made here.

Command line::

    cd tests && python -m lab.fleet build   # print the cached fleet root, building it if needed
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import rootfs

#: What the fleet root adds to the cached root: sshd, and the packages the common and frameworks roles
#: install, so a converge of the site playbook with the CPU role set needs no network on the hosts.
PACKAGES = ("openssh-server", "build-essential", "pciutils", "python3-venv", "gpg", "python3-debian",
            "ca-certificates", "python3-packaging")
SSHD = "/usr/sbin/sshd"
#: the PCI device files a fake GPU replaces, in the order of ``Fleet(fake_gpu=...)``
FAKE_GPU_FILES = ("vendor", "device", "class")
#: the apt module skips ``update_cache`` while this stamp is newer than ``cache_valid_time``
APT_STAMP = "var/lib/apt/periodic/update-success-stamp"


_SERIAL = itertools.count()


def fleet_root() -> Path:
    """The cached fleet root (next to the cached Debian root, named after :data:`PACKAGES`), built on first use."""
    digest = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:8]
    dest = rootfs.cache_dir().with_name(f"{rootfs.cache_dir().name}-fleet-{digest}")
    with rootfs.building(dest):
        return _fleet_root(dest)


def _fleet_root(dest: Path) -> Path:
    if (dest / SSHD.lstrip("/")).exists():
        return dest
    base = rootfs.build_root()
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(work)], check=True)
        policy = work / "usr/sbin/policy-rc.d"  # install services without starting them
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                        ["apt-get", "clean"]):
            subprocess.run(["chroot", str(work), *command], check=True, env=env, stdout=subprocess.DEVNULL)
        for key in (work / "etc/ssh").glob("ssh_host_*"):  # each host gets its own
            key.unlink()
        policy.unlink()
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


@dataclass(frozen=True)
class FleetHost:
    """One namespace host."""

    name: str  #: inventory name and hostname, "h1" ...
    address: str
    netns: str
    dir: Path  #: holds ``upper/`` (what the host changed), ``work/``, ``root/``
    reachable: bool

    @property
    def upper(self) -> Path:
        """The host's own layer: every file it wrote (read it, never write it while the host runs)."""
        return self.dir / "upper"


class Fleet:
    """``count`` namespace hosts; use as a context manager (or :func:`fleet`)."""

    def __init__(self, workdir: Path, count: int, unreachable: Collection[int] = (),
                 files: Mapping[str, Mapping[str, str]] | None = None,
                 fake_gpu: tuple[str, str, str] | None = None):
        self.workdir = workdir
        self.files = files or {}  #: host name -> {path in its root: content}, written before it starts
        #: (vendor, device, class) of the PCI device each host shows in place of one of this machine's, e.g.
        #: ("0x10de", "0x1eb8", "0x030200"), a Tesla T4: the probe finds that GPU and the planner plans for it.
        #: Bound over the device's files in each host's own mount namespace only; this machine's /sys is unchanged.
        self.fake_gpu = fake_gpu
        # a letter per fleet of this process: two fleets may run at once (a module's fleet and a test's own)
        self.tag = f"dls{os.getpid() % 100000}{chr(ord('a') + next(_SERIAL) % 26)}"
        self.bridge = f"{self.tag}br"
        self.network = _free_network()
        addresses = list(self.network.hosts())
        self.gateway = str(addresses[0])
        self.hosts = tuple(
            FleetHost(f"h{n}", str(addresses[n + 1]), f"{self.tag}h{n}", workdir / f"h{n}", n not in unreachable)
            for n in range(1, count + 1))
        self.key = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> "Fleet":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def inventory(self, path: Path, host_vars: Mapping[str, Mapping[str, Any]] | None = None,
                  hosts: Collection[str] | None = None) -> Path:
        """Write an Ansible inventory of the fleet (or of ``hosts``) to ``path``, with per-host variables."""
        common = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o IdentitiesOnly=yes "
                                       "-o ConnectTimeout=5",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        entries = {h.name: {"ansible_host": h.address, **(host_vars or {}).get(h.name, {})}
                   for h in self.hosts if hosts is None or h.name in hosts}
        path.write_text(yaml.safe_dump({"all": {"vars": common, "hosts": entries}}, sort_keys=False))
        return path

    # -- setup and teardown ------------------------------------------------------------------------
    def _start(self) -> None:
        root = fleet_root()
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.tag, "-f", str(self.key)],
                       check=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        known = []
        for host in self.hosts:
            self._network(host)
            host_key = self._layer(host)
            if host.reachable:
                known.append(f"{host.address} {host_key}")
                self._procs.append(self._sshd(host, root))
        self.known_hosts.write_text("".join(line + "\n" for line in known))
        for host in self.hosts:
            if host.reachable:
                _wait_port(host)

    def _network(self, host: FleetHost) -> None:
        peer = f"{host.netns}v"
        _ip("netns", "add", host.netns)
        _ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("link", "set", peer, "master", self.bridge, "up")
        for args in (["addr", "add", f"{host.address}/{self.network.prefixlen}", "dev", "eth0"],
                     ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
            _ip("-n", host.netns, *args)

    def _layer(self, host: FleetHost) -> str:
        """Write the host's own files into its upper layer; return its public host key line."""
        for sub, mode in (("upper", 0o755), ("work", 0o755), ("root", 0o755), ("upper/root", 0o700),
                          ("upper/root/.ssh", 0o700), ("upper/etc", 0o755), ("upper/etc/ssh", 0o755),
                          ("upper/run", 0o755), ("upper/run/sshd", 0o755)):
            (host.dir / sub).mkdir(mode=mode, parents=True, exist_ok=True)
            (host.dir / sub).chmod(mode)
        (host.upper / "root/.ssh/authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        (host.upper / "etc/hostname").write_text(host.name + "\n")
        # the hosts have no route to a mirror: their apt cache counts as fresh (written before the mount:
        # overlayfs forbids changing an upper layer while it is mounted)
        stamp = host.upper / APT_STAMP
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
        for name, content in self.files.get(host.name, {}).items():
            path = host.upper / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        if self.fake_gpu is not None:  # outside the overlay: bound over /sys files by _sshd
            (host.dir / "fake-gpu").mkdir(exist_ok=True)
            for name, value in zip(FAKE_GPU_FILES, self.fake_gpu, strict=True):
                (host.dir / "fake-gpu" / name).write_text(value + "\n")
        key = host.upper / "etc/ssh/ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)], check=True)
        return " ".join(key.with_suffix(".pub").read_text().split()[:2])

    def _sshd(self, host: FleetHost, root: Path) -> subprocess.Popen[bytes]:
        merged = host.dir / "root"
        script = (
            f"mount -t overlay overlay -o lowerdir={root},upperdir={host.upper},workdir={host.dir / 'work'} {merged}"
            f" && mount --rbind /dev {merged}/dev && mount -t proc proc {merged}/proc"
            f" && mount --rbind /sys {merged}/sys{self._fake_gpu_mounts(host, merged)} && hostname {host.name}"
            f" && exec chroot {merged} {SSHD} -D -e -o ListenAddress={host.address}"
            " -o HostKey=/etc/ssh/ssh_host_ed25519_key -o UsePAM=no -o MaxStartups=100"
        )
        log = (host.dir / "sshd.log").open("wb")
        return subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount", "--propagation", "private",
             "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _fake_gpu_mounts(self, host: FleetHost, merged: Path) -> str:
        """Shell: bind the host's fake GPU files over those of the last PCI device that is not a bridge (class
        0x06....) under the host's own /sys; run in its private mount namespace, so only the host sees them."""
        if self.fake_gpu is None:
            return ""
        return (f" && dev= && for d in {merged}/sys/bus/pci/devices/*; do case $(cat $d/class) in 0x06*) ;;"
                f" *) dev=$d ;; esac; done && test -n \"$dev\" && for f in {' '.join(FAKE_GPU_FILES)}; do"
                f" mount --bind {host.dir}/fake-gpu/$f \"$dev/$f\" || exit 1; done")

    def close(self) -> None:
        """Stop every process in this fleet's namespaces and remove the namespaces and the bridge."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for host in self.hosts:
            _kill_netns_pids(host.netns)
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for host in self.hosts:
            for command in (["link", "del", f"{host.netns}v"], ["netns", "del", host.netns]):
                subprocess.run(["ip", *command], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", self.bridge], stderr=subprocess.DEVNULL)


@contextmanager
def fleet(workdir: Path, count: int, unreachable: Collection[int] = (),
          files: Mapping[str, Mapping[str, str]] | None = None,
          fake_gpu: tuple[str, str, str] | None = None) -> Iterator[Fleet]:
    """``count`` running namespace hosts, torn down on exit."""
    with Fleet(workdir, count, unreachable, files, fake_gpu) as started:
        yield started


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def _free_network() -> ipaddress.IPv4Network:
    """A /24 in 10.201.0.0/16 that no route or address of this machine overlaps."""
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "table", "all"], check=True,
                                       capture_output=True, text=True).stdout or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst[0].isdigit():
            used.append(ipaddress.ip_network(dst, strict=False))
    for third in [os.getpid() % 250, *range(250)]:
        candidate = ipaddress.ip_network(f"10.201.{third}.0/24")
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return candidate
    raise RuntimeError("no free /24 in 10.201.0.0/16 for the fleet")


def _kill_netns_pids(netns: str) -> None:
    run = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    for pid in run.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_port(host: FleetHost, timeout: float = 20.0) -> None:
    """Wait until the host's sshd accepts connections on port 22."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.address, 22), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                log = (host.dir / "sshd.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"sshd on {host.name} did not start: {log}") from None
            time.sleep(0.1)


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(fleet_root())
