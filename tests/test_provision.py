"""``dlsetup provision``: bad input ends in one line and a distinct exit code; the lab converges a chroot."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from dlsetup.errors import EXIT_HOSTS_FAILED, EXIT_PRIVILEGES, EXIT_UNREACHABLE, EXIT_USAGE, DlsetupError
from dlsetup.provisioning import PROBE_TASK
from dlsetup.provisioning import host_vars as _host_vars
from dlsetup.provisioning import raise_for as _raise_for
from dlsetup.runner import HostResult, RunResult, TaskFailure
from dlsetup.plan import Plan
from lab import rootfs
from lab.fixtures import lab_root, lab_wheels  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]


def dlsetup(*args: str, stdin: str = "", cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)} if cache else None
    return subprocess.run([sys.executable, "-m", "dlsetup", "provision", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=900, env=env)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("dlsetup: error: ")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_malformed_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[gpu\nnode1 ansible_host\n")
    run = dlsetup("-i", str(inventory), "--yes")
    assert run.returncode == EXIT_USAGE
    assert "is not valid" in one_line_error(run)


def test_unknown_limit(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    node1: {}\n")
    run = dlsetup("-i", str(inventory), "--limit", "node9", "--yes")
    assert run.returncode == EXIT_USAGE
    assert "--limit 'node9' matches no host" in one_line_error(run)


def test_unreachable_host_is_reported_and_retried(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  hosts:\n    gone: {{ansible_host: 127.0.0.1, ansible_port: {port}}}\n")
    cache = tmp_path / "cache"
    run = dlsetup("-i", str(inventory), "--retry-failed", "--yes", cache=cache)
    assert run.returncode == EXIT_USAGE
    assert "--retry-failed: no host failed in the last run" in one_line_error(run)

    run = dlsetup("-i", str(inventory), "--yes", "--json", cache=cache)
    assert run.returncode == EXIT_UNREACHABLE
    assert one_line_error(run) == "dlsetup: error: 1 host(s) unreachable: gone"
    [gone] = summaries(run)
    assert (gone["host"], gone["status"], gone["unreachable"], gone["roles"]) == ("gone", "unreachable", 1, [])
    assert gone["failure"]["task"] == PROBE_TASK
    assert f"127.0.0.1 port {port}: Connection refused" in gone["failure"]["message"]
    [retry] = (cache / "dlsetup" / "retry").iterdir()
    assert retry.read_text() == "gone\n"

    again = dlsetup("-i", str(inventory), "--retry-failed", "--yes", "--json", cache=cache)
    assert again.returncode == EXIT_UNREACHABLE and [h["host"] for h in summaries(again)] == ["gone"]
    run = dlsetup("-i", str(inventory), "--retry-failed", "--limit", "gone", cache=cache)
    assert run.returncode == EXIT_USAGE and "takes no --limit" in one_line_error(run)


def test_bad_extra_vars_and_no_confirmation() -> None:
    run = dlsetup("-e", "novalue", "--yes")
    assert run.returncode == EXIT_USAGE and "is not KEY=VALUE" in one_line_error(run)
    run = dlsetup("--pip-find-links", "/opt/wheels")  # stdin is no terminal and there is no --yes
    assert run.returncode == EXIT_USAGE and "pass --yes" in one_line_error(run)


def test_not_root_without_become_is_refused() -> None:
    plan = Plan("node1", ("common",), (), {"dlsetup_roles": ["common"]}, False, ())
    with pytest.raises(DlsetupError, match="not root and --no-become") as err:
        _host_vars({"node1": plan}, {"node1": False}, {}, become=False)
    assert err.value.exit_code == EXIT_PRIVILEGES
    assert _host_vars({"node1": plan}, {"node1": False}, {}, become=None)["node1"] == {
        "dlsetup_roles": ["common"], "ansible_become": True}
    assert "ansible_become" not in _host_vars({"node1": plan}, {"node1": True}, {}, become=None)["node1"]
    # a host planned from a saved bundle: whether its user is root is not known, the inventory decides
    assert "ansible_become" not in _host_vars({"node1": plan}, {"node1": None}, {}, become=None)["node1"]


def test_exit_status_names_every_failed_and_unreachable_host() -> None:
    ok = HostResult("a", ok=3)
    failed = HostResult("b", ok=1, failed=1, failure=TaskFailure("Install the base packages", "No package x"))
    gone = HostResult("c", unreachable=1, failure=TaskFailure(PROBE_TASK, "Connection refused", unreachable=True))
    with pytest.raises(DlsetupError) as err:
        _raise_for(RunResult((ok, failed, gone), 4))
    assert err.value.exit_code == EXIT_UNREACHABLE
    assert str(err.value) == ("1 host(s) unreachable: c; "
                              "1 host(s) failed: b (Install the base packages: No package x)")
    with pytest.raises(DlsetupError) as err:
        _raise_for(RunResult((ok, failed), 2))
    assert err.value.exit_code == EXIT_HOSTS_FAILED
    assert str(err.value) == "1 host(s) failed: b (Install the base packages: No package x)"
    _raise_for(RunResult((ok,), 0))


# -- the lab: a fresh Debian 12 chroot ----------------------------------------------------------


def summaries(run: subprocess.CompletedProcess) -> List[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def chroot(lab_root: Path, lab_wheels: Path, tmp_path: Path):
    root = rootfs.fresh_copy(tmp_path / "target")
    shutil.copytree(lab_wheels, root / "opt" / "wheels")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"{root} ansible_connection=community.general.chroot "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    yield root, inventory
    rootfs.remove_copy(root)


PLAN = ("--pip-find-links", "/opt/wheels", "--pip-offline")


@pytest.mark.lab
def test_converges_then_changes_nothing(chroot) -> None:
    root, inventory = chroot
    first = dlsetup("-i", str(inventory), "--yes", "--json", *PLAN)
    assert first.returncode == 0, first.stderr[-3000:]
    [host] = summaries(first)
    assert host["host"] == str(root) and host["roles"] == ["common", "frameworks"]
    assert host["changed"] > 0 and host["failed"] == 0 and host["reboot_required"] is False
    # one venv per framework by default: the pytorch one
    torch = subprocess.run(["chroot", str(root), "/opt/dlsetup/venvs/pytorch/bin/python", "-c",
                            "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert torch.stdout.strip() == "2.13.0+cpu", torch.stderr
    second = dlsetup("-i", str(inventory), "--yes", "--json", *PLAN)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [h["changed"] for h in summaries(second)] == [0]


@pytest.mark.lab
def test_check_reports_changes_and_changes_nothing(chroot) -> None:
    root, inventory = chroot
    run = dlsetup("-i", str(inventory), "--check", "--json", *PLAN)  # no --yes: check asks nothing
    assert run.returncode == 0, run.stderr[-3000:]
    [host] = summaries(run)
    assert host["check"] is True and host["changed"] > 0 and host["failed"] == 0
    assert not (root / "opt" / "dlsetup" / "venvs").exists() and not (root / "opt" / "dlsetup" / "venv").exists()


@pytest.mark.lab
def test_failed_escalation_is_missing_privileges(chroot, tmp_path: Path) -> None:
    _, inventory = chroot
    run = dlsetup("-i", str(inventory), "--yes", "-e", "ansible_become_user=nobody",
                  "-e", f"ansible_become_exe={tmp_path / 'no-sudo'}", "--become", *PLAN)
    assert run.returncode == EXIT_PRIVILEGES, run.stderr[-3000:]
    assert "missing privileges on " in one_line_error(run)


@pytest.mark.lab
def test_apt_lock_held_elsewhere_waits_dlsetup_apt_lock_timeout(chroot) -> None:
    """The playbook's apt lock timeout reaches the apt tasks: with it set to 1 s, a dpkg lock held elsewhere
    fails the run at once (Ansible's own 60 s would have waited past the release at 45 s and succeeded)."""
    root, inventory = chroot
    with open(root / "var/lib/dpkg/lock-frontend", "a+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)  # the kind of lock apt and dpkg take
        release = threading.Timer(45, fcntl.lockf, (lock, fcntl.LOCK_UN))
        release.start()
        try:
            run = dlsetup("-i", str(inventory), "--yes", "--json", "--tags", "common",
                          "-e", "dlsetup_apt_lock_timeout=1", *PLAN)
        finally:
            release.cancel()
    assert run.returncode == EXIT_HOSTS_FAILED, run.stderr[-3000:]
    [host] = summaries(run)
    assert host["failure"]["task"] == "Install the base packages, and dkms with the kernel headers when asked"
    assert "lock" in host["failure"]["message"], host["failure"]
