"""The README's first line, verbatim, in a fresh Debian 12 chroot: debootstrap minbase with python3 and
nothing else, as a new user's minimal install. Only ``--yes`` (no terminal here) and the local wheel folder
are appended. It must end with torch importable in the framework venv.

The clone is the working tree's files; pip inside the root reaches the package index with this machine's
CA bundle (a host behind the same TLS-inspecting proxy has it) and pip's environment settings, apt uses
the root's own Debian sources. ``/proc``, ``/sys``, ``/dev`` and ``/dev/pts`` are bind-mounted: dlsetup probes the
hardware and Ansible runs on a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from conftest import missing_tool
from lab import rootfs, wheels
from lab.fixtures import lab_wheels  # noqa: F401 - pytest fixture
from test_install import readme_first_line

REPO = Path(__file__).resolve().parents[1]
#: the torch release of the local wheel, so the test does not depend on the planner's default
TORCH = ".".join(wheels.TORCH_WHEEL.name.split("-")[1].split("+")[0].split(".")[:2])
CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
ROOT_CA_BUNDLE = Path("/etc/ssl/host-ca-bundle.crt")
MOUNTS = ("proc", "sys", "dev", "dev/pts")


def minimal_root(suite: str) -> Path:
    """A cached debootstrap minbase root of ``suite`` with python3 only (not the lab root, which adds
    python3-apt & co.)."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        missing_tool("the lab tier needs root and debootstrap (apt-get install debootstrap)")
    return rootfs.build_root(rootfs.cache_dir().parent / f"{suite}-python3", suite, ("python3",))


def mounted_under(root: Path) -> List[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


@pytest.fixture
def fresh_debian(request: pytest.FixtureRequest, tmp_path: Path,
                 lab_wheels: Path) -> Iterator[Path]:  # noqa: F811 - the fixture
    """A fresh copy of the minimal root of the suite the test names (default bookworm), with the clone in
    /root/dlsetup, the wheel folder in /opt/wheels and the mounts dlsetup needs, on a tmpfs of its own."""
    root = tmp_path / "debian"
    suite = getattr(request, "param", "bookworm")
    root.mkdir()
    # the root lives in memory: what provisioning writes (a torch venv) goes with one umount at the end
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6g,mode=0755", "dlsetup-lab", str(root)], check=True)
    done = [root]
    try:
        subprocess.run(["cp", "-a", f"{minimal_root(suite)}/.", str(root)], check=True)
        _lay_out(root)
        binds = [(lab_wheels, root / "opt" / "wheels")]
        for point in MOUNTS:
            subprocess.run(["mount", "--bind", f"/{point}", str(root / point)], check=True)
            done.append(root / point)
        for source, target in binds:
            target.mkdir(parents=True)
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            done.append(target)
        yield root
    finally:
        for target in reversed(done):
            subprocess.run(["umount", str(target)], check=False)
        if mounted_under(root):  # never remove a tree that still reaches into the host's /dev
            pytest.fail(f"left mounted, not removed: {mounted_under(root)}")
        root.rmdir()


def _lay_out(root: Path) -> None:
    """The clone in /root/dlsetup and the CA bundle with pip's setting for it."""
    # the clone: the working tree's files (committed or not), as `git clone` would lay them out
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    clone = root / "root" / "dlsetup"
    for name in filter(None, files):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            (clone / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / os.fsdecode(name))
    if CA_BUNDLE.is_file():  # at a path of its own: installing ca-certificates rewrites the usual one
        (root / ROOT_CA_BUNDLE.parent.relative_to("/")).mkdir(parents=True, exist_ok=True)
        shutil.copy2(CA_BUNDLE, root / ROOT_CA_BUNDLE.relative_to("/"))
        (root / "etc" / "pip.conf").write_text(f"[global]\ncert = {ROOT_CA_BUNDLE}\n", encoding="utf-8")


def in_root(root: Path, command: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``sh -c COMMAND`` in the root, as root there, with a clean environment plus pip's settings."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "TERM": "dumb"}
    env.update({k: v for k, v in os.environ.items()
                if k.startswith("PIP_") and k not in ("PIP_FIND_LINKS", "PIP_CERT")})
    return subprocess.run(["chroot", str(root), "sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.lab
def test_readme_first_line_provisions_a_fresh_debian_12(fresh_debian: Path) -> None:
    root = fresh_debian
    before = in_root(root, "python3 -m venv /tmp/probe-venv")
    assert before.returncode != 0 and "ensurepip is not" in before.stdout + before.stderr, \
        "the root is not fresh: its python3 can already make a venv"

    line = readme_first_line()
    run = in_root(root, f"cd /root/dlsetup && {line} --yes --pip-find-links /opt/wheels --pip-offline "
                        f"--torch {TORCH}")
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    assert "Traceback" not in run.stderr

    torch = in_root(root, "/opt/dlsetup/venvs/pytorch/bin/python -c 'import torch; print(torch.__version__)'")
    assert torch.returncode == 0, torch.stderr
    assert torch.stdout.strip() == wheels.TORCH_WHEEL.name.split("-")[1]
    # and dlsetup stays at hand for what comes next
    assert (root / "usr/local/bin/dlsetup").is_symlink()
    again = in_root(root, "dlsetup --help")
    assert again.returncode == 0 and "provision" in again.stdout

    # the same root with no /dev/pts, as a chroot made by hand often is: one line, not ansible-runner's
    # traceback ("out of pty devices")
    subprocess.run(["umount", str(root / "dev" / "pts")], check=True)
    no_pty = in_root(root, "dlsetup provision --check --pip-find-links /opt/wheels --pip-offline")
    assert no_pty.returncode == 1 and "Traceback" not in no_pty.stderr, no_pty.stderr[-3000:]
    assert no_pty.stderr.startswith("dlsetup: error: cannot open a pseudo-terminal"), no_pty.stderr[-3000:]


@pytest.mark.lab
@pytest.mark.parametrize("fresh_debian", ["trixie"], indirect=True)
def test_install_sh_on_a_fresh_debian_13(fresh_debian: Path) -> None:
    """Debian 13 (Python 3.13): the same script installs python3.13-venv and a controller that runs.
    (The local torch wheel is for Python 3.11, so this stops short of provisioning.)"""
    root = fresh_debian
    command = shlex.split(readme_first_line())[0]
    run = in_root(root, f"cd /root/dlsetup && {command}")
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    assert "installing python3.13-venv" in run.stderr
    probe = in_root(root, "dlsetup probe --json")
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout)["os"]["version_id"] == "13"
    ansible = in_root(root, "/opt/dlsetup/controller/bin/ansible-playbook --version")
    assert ansible.returncode == 0 and "python version = 3.13" in ansible.stdout, ansible.stdout
