"""``install.sh``, the README's first line: the command the lab test runs, and its choices per system.

The systems this machine cannot run (Ubuntu) are checked by running install.sh in its dry-run mode
against a fake root (an ``etc/os-release`` and a stand-in ``python3`` answering its version) and
comparing what it would install with the facts recorded from the distributions' package pages in
``tests/fixtures/distros.toml``. ``tests/test_install_lab.py`` runs the same line for real in a fresh
Debian 12 chroot.
"""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.sh"
FACTS = tomllib.loads((REPO / "tests" / "fixtures" / "distros.toml").read_text(encoding="utf-8"))
RELEASES = {f"{r['id']}-{r['version_id']}": r for r in FACTS["release"]}
VENV = "/opt/dlsetup/controller"


def readme_first_line() -> str:
    """The first line of the README's first shell block: the command a newcomer pastes."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```sh\n(.*?)^```", text, re.S | re.M)
    assert block, "the README has no ```sh block"
    return block.group(1).splitlines()[0].strip()


def fake_root(tmp_path: Path, os_release: Dict[str, str], python: Optional[str], venv_module: bool,
              name: str = "python3") -> Path:
    """A folder with etc/os-release and usr/bin/NAME answering ``python``'s version (and whether it has
    ensurepip), plus usr/bin/apt-get and usr/local/bin, as install.sh reads them under DLSETUP_INSTALL_ROOT."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(
        "".join(f'{key}="{value}"\n' for key, value in os_release.items()), encoding="utf-8")
    apt = root / "usr" / "bin" / "apt-get"
    apt.write_text("#!/bin/sh\nexit 1\n")
    apt.chmod(0o755)
    if python is not None:
        script = root / "usr" / "bin" / name
        script.write_text("#!/bin/sh\ncase \"$*\" in *ensurepip*) exit %d;; esac\necho %s\n"
                          % (0 if venv_module else 1, python))
        script.chmod(0o755)
    return root


def dry_run(root: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/bin:/bin", "DLSETUP_INSTALL_ROOT": str(root), "DLSETUP_INSTALL_DRY_RUN": "1",
                   **(env or {})}
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, env=environment, timeout=60)


def commands(run: subprocess.CompletedProcess) -> List[List[str]]:
    """The commands a dry run printed (lines "+ COMMAND"), split as the shell would."""
    return [shlex.split(line[2:]) for line in run.stdout.splitlines() if line.startswith("+ ")]


def installed_packages(run: subprocess.CompletedProcess) -> List[str]:
    found = [cmd for cmd in commands(run) if cmd[:2] == ["apt-get", "install"]]
    assert len(found) <= 1, run.stdout
    return [word for word in found[0][2:] if not word.startswith("-")] if found else []


def os_release(release: dict) -> Dict[str, str]:
    return {"ID": release["id"], "VERSION_ID": release["version_id"], "PRETTY_NAME": release["pretty_name"]}


def test_readme_first_line_is_install_sh_then_provision() -> None:
    """The README's first line runs this repository's install.sh (no download piped into a shell) and
    ends with ``provision``, so the options a user (or the lab test) appends reach ``dlsetup provision``."""
    words = shlex.split(readme_first_line())
    assert words == ["./install.sh", "provision"], readme_first_line()
    # a fresh clone must be able to run it as written: the file is committed executable
    mode = subprocess.run(["git", "ls-files", "--stage", "install.sh"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.split()
    assert mode and mode[0] == "100755", f"install.sh is not committed executable: {mode}"
    assert INSTALL.stat().st_mode & stat.S_IXUSR


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_each_release_installs_the_recorded_packages_and_runs_on_a_supported_python(name: str,
                                                                                    tmp_path: Path) -> None:
    release = RELEASES[name]
    root = fake_root(tmp_path, os_release(release), release["python3"], venv_module=False)
    run = dry_run(root, "provision", "--yes")
    assert run.returncode == 0, run.stderr
    assert installed_packages(run) == release["install"]
    [venv] = [cmd for cmd in commands(run) if cmd[1:3] == ["-m", "venv"]]
    assert venv == [release["controller"], "-m", "venv", "--clear", VENV]
    assert commands(run)[-1] == [f"{VENV}/bin/dlsetup", "provision", "--yes"]

    # the Python dlsetup runs on satisfies pyproject.toml and is a controller Python of an ansible-core
    # release: the default python3 where it can, the one named in the facts where it cannot
    controller = release["python3"] if release["controller"] == "/usr/bin/python3" else \
        re.fullmatch(r"/usr/bin/python(3\.\d+)", release["controller"]).group(1)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    assert f"{controller}.0" in requires, (name, controller, requires)
    assert any(controller in core["controller_python"] for core in FACTS["ansible_core"])
    if release["python3"] != controller:  # a second Python only where the default cannot run dlsetup
        assert f"{release['python3']}.0" not in requires


def test_ubuntu_2204_uses_its_python311_when_it_is_already_there(tmp_path: Path) -> None:
    release = RELEASES["ubuntu-22.04"]
    root = fake_root(tmp_path, os_release(release), "3.11", venv_module=True, name="python3.11")
    run = dry_run(root)
    assert run.returncode == 0, run.stderr
    assert installed_packages(run) == [] and not any(cmd[0] == "apt-get" for cmd in commands(run))
    assert [release["controller"], "-m", "venv", "--clear", VENV] in commands(run)


def test_nothing_to_install_when_python_has_venv_and_arguments_pass_through(tmp_path: Path) -> None:
    root = fake_root(tmp_path, os_release(RELEASES["debian-12"]), "3.11", venv_module=True)
    run = dry_run(root, "provision", "--yes", "--pip-find-links", "/srv/my wheels", "-e", "a='b c'")
    assert run.returncode == 0, run.stderr
    assert not any(cmd[0] == "apt-get" for cmd in commands(run))
    assert commands(run)[-1] == [f"{VENV}/bin/dlsetup", "provision", "--yes", "--pip-find-links",
                                 "/srv/my wheels", "-e", "a='b c'"]
    assert ["ln", "-sfn", f"{VENV}/bin/dlsetup", str(root / "usr/local/bin/dlsetup")] in commands(run)
    assert [f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", "--upgrade", str(REPO)] in commands(run)


def test_a_missing_python3_is_installed_with_its_venv_module(tmp_path: Path) -> None:
    root = fake_root(tmp_path, os_release(RELEASES["debian-13"]), None, venv_module=False)
    run = dry_run(root)
    assert run.returncode == 0, run.stderr
    assert installed_packages(run) == ["python3", "python3-venv"]


def test_too_old_python_on_an_untested_system_is_refused_before_any_change(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"ID": "ubuntu", "VERSION_ID": "20.04", "PRETTY_NAME": "Ubuntu 20.04.6 LTS"},
                     "3.8", venv_module=False)
    run = dry_run(root, "provision")
    assert run.returncode == 2
    assert commands(run) == []
    errors = [line for line in run.stderr.splitlines() if line.startswith("install.sh: error: ")]
    assert errors == [
        "install.sh: error: /usr/bin/python3 on Ubuntu 20.04.6 LTS is Python 3.8; dlsetup needs 3.11 or newer. "
        "Install one with its venv module and run: DLSETUP_PYTHON=/path/to/python3.X ./install.sh "
        "(README, \"Supported systems\")"]
    assert "not one of the tested systems" in run.stderr


def test_untested_system_with_a_recent_python_goes_on(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"ID": "linuxmint", "VERSION_ID": "22", "PRETTY_NAME": "Linux Mint 22"},
                     "3.12", venv_module=False)
    run = dry_run(root)
    assert run.returncode == 0, run.stderr
    assert "warning: Linux Mint 22 is not one of the tested systems" in run.stderr
    assert installed_packages(run) == ["python3.12-venv"]


def test_no_apt_and_no_venv_module_names_the_way_out(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"ID": "fedora", "VERSION_ID": "42", "PRETTY_NAME": "Fedora Linux 42"},
                     "3.13", venv_module=False)
    (root / "usr" / "bin" / "apt-get").unlink()
    run = dry_run(root)
    assert run.returncode == 2 and commands(run) == []
    assert "has no apt-get to install python3.13-venv" in run.stderr
    # with a Python of the user's choosing that has venv, it goes on
    run = dry_run(root, env={"DLSETUP_PYTHON": "/usr/bin/python3"})
    assert run.returncode == 2  # still no venv module: the same refusal, not a half install
    root_ok = fake_root(tmp_path / "ok", {"ID": "fedora", "VERSION_ID": "42"}, "3.13", venv_module=True,
                        name="python3.13")
    run = dry_run(root_ok, env={"DLSETUP_PYTHON": "/usr/bin/python3.13"})
    assert run.returncode == 0, run.stderr
    assert ["/usr/bin/python3.13", "-m", "venv", "--clear", VENV] in commands(run)


def test_no_os_release_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    run = dry_run(root)
    assert run.returncode == 2 and commands(run) == []
    assert "install.sh: error: cannot tell which system this is" in run.stderr


def as_nobody(*args: str, sudo: bool) -> subprocess.CompletedProcess:
    """Run install.sh (for real, not a dry run) as user nobody, with a stand-in sudo that only prints
    what it was asked to run: the way in for a user who is not root."""
    bin_dir = Path(tempfile.mkdtemp(prefix="dlsetup-sudo-"))  # pytest's tmp_path is root's alone
    bin_dir.chmod(0o755)
    for tool in ("id", "dirname"):  # all install.sh needs before it turns to sudo; a sudo only if asked
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if sudo:
        fake = bin_dir / "sudo"
        fake.write_text('#!/bin/sh\nprintf "sudo"; printf " [%s]" "$@"; echo\n')
        fake.chmod(0o755)
    try:
        return subprocess.run([shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup",
                               "--clear-groups", str(INSTALL), *args],
                              capture_output=True, text=True, env={"PATH": str(bin_dir)}, timeout=60)
    finally:
        shutil.rmtree(bin_dir)


def test_a_user_who_is_not_root_goes_through_sudo() -> None:
    run = as_nobody("provision", "--pip-find-links", "/srv/my wheels", sudo=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"sudo [--] [{INSTALL}] [provision] [--pip-find-links] [/srv/my wheels]"
    assert "running again with sudo" in run.stderr


def test_a_user_who_is_not_root_and_has_no_sudo_is_told_so() -> None:
    run = as_nobody("provision", sudo=False)
    assert run.returncode == 5 and run.stdout == ""
    assert run.stderr.strip() == "install.sh: error: run this as root: it installs packages (sudo is not installed)"
