"""A Debian 12 (bookworm) minbase root, built once and cached, and fresh copies of it per target.

The cache lives in ``$DLSETUP_LAB_CACHE`` (default ``~/.cache/dlsetup-lab/bookworm``). It is built in a
temporary directory next to it and renamed into place, so an interrupted build never leaves a half root.

Command line (used by the molecule scenarios' create/destroy playbooks)::

    python -m tests.lab.rootfs build            # print the cached root, building it if needed
    python -m tests.lab.rootfs copy DEST        # fresh copy of the cached root at DEST
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

def host_debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's own apt uses: the first ``.../debian`` URI of its sources (deb822
    ``*.sources`` or one-line ``*.list``), so the lab never names a mirror of its own."""
    files = sorted((sources / "sources.list.d").glob("*.sources")) + [sources / "sources.list"] + sorted(
        (sources / "sources.list.d").glob("*.list"))
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            uris = words[1:] if words[:1] == ["URIs:"] else [w for w in words[1:] if "://" in w][:1] \
                if words[:1] == ["deb"] else []
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    raise RuntimeError("no Debian archive in this machine's apt sources: set DLSETUP_LAB_DEBIAN_MIRROR")


#: Debian mirror used by debootstrap and by apt inside the root; unset: the host's own (host_debian_mirror)
DEBIAN_MIRROR = os.environ.get("DLSETUP_LAB_DEBIAN_MIRROR")
#: What Ansible needs on a target: python3 and python3-apt (apt module), python3-debian
#: (deb822_repository), gpg (key fingerprint checks), ca-certificates (https repositories).
PACKAGES = ("python3", "python3-apt", "python3-debian", "gpg", "ca-certificates")


def cache_dir() -> Path:
    """Where the cached root lives."""
    default = Path.home() / ".cache" / "dlsetup-lab" / "bookworm"
    return Path(os.environ.get("DLSETUP_LAB_CACHE", default))


@contextmanager
def building(dest: Path) -> Iterator[None]:
    """Hold the lock of the cache entry ``dest`` while checking for it and building it: test processes that run
    at once (``.ci/run`` runs the VM tier beside the others) wait for one build instead of racing theirs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_root(dest: Path | None = None, suite: str = "bookworm", packages: tuple[str, ...] = PACKAGES) -> Path:
    """Return the cached root at ``dest`` (default: the Debian 12 lab root), building it first with
    debootstrap minbase of ``suite`` plus ``packages`` if it does not exist."""
    dest = dest or cache_dir()
    with building(dest):
        return _build_root(dest, suite, packages)


def _build_root(dest: Path, suite: str, packages: tuple[str, ...]) -> Path:
    if (dest / "usr" / "bin" / "python3").exists():
        return dest
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
             suite, str(work), DEBIAN_MIRROR or host_debian_mirror()],
            check=True, stdout=subprocess.DEVNULL,
        )
        (work / "var" / "cache" / "apt" / "archives").mkdir(parents=True, exist_ok=True)
        subprocess.run(["chroot", str(work), "apt-get", "clean"], check=True)
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def fresh_copy(dest: Path) -> Path:
    """Make ``dest`` a fresh copy of the cached root (reflinks where the filesystem has them)."""
    root = build_root()
    if dest.exists():
        remove_copy(dest)
    subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(dest)], check=True)
    return dest


def remove_copy(dest: Path) -> None:
    """Remove a copy made by :func:`fresh_copy`."""
    if dest.resolve() == cache_dir().resolve():
        raise ValueError("refusing to remove the cached root")
    shutil.rmtree(dest)


def main(argv: list[str]) -> int:
    """``build`` | ``copy DEST`` | ``remove DEST``."""
    match argv:
        case ["build"]:
            print(build_root())
        case ["copy", dest]:
            print(fresh_copy(Path(dest)))
        case ["remove", dest]:
            remove_copy(Path(dest))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
