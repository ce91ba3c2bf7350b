"""What the README's first line meets after installing: ``dlsetup provision``'s question on a terminal, its
refusal without one, and a host with no pseudo-terminal for Ansible.

The probe, the plan and the Ansible run are replaced in a small driver (a child process, so a real
terminal can be given to it), which records in a file whether the run was started: a test never
provisions this machine.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pexpect
import pytest

from dlsetup.errors import EXIT_FAILED, EXIT_USAGE, DlsetupError
from dlsetup.runner import terminal

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # the driver imports this tree's dlsetup

DRIVER = textwrap.dedent("""\
    import os, sys
    import dlsetup.provisioning as provision
    import dlsetup.runner as runner
    from dlsetup.cli import main
    from dlsetup.inventory import LOCALHOST
    from dlsetup.plan import Plan

    marker, no_pty, args = sys.argv[1], sys.argv[2] == "no-pty", sys.argv[3:]

    def plan_hosts(targets, request):
        plan = Plan(LOCALHOST, ("common",), (), {"dlsetup_roles": ["common"]}, False, ())
        return {LOCALHOST: plan}, {LOCALHOST: True}, ()

    provision.plan_hosts = plan_hosts
    if no_pty:  # as in a chroot without /dev/pts: every way to a pseudo-terminal fails
        def out_of_ptys(*_):
            raise OSError("out of pty devices")
        os.openpty = os.forkpty = out_of_ptys
        real_run = runner.run_playbooks
        def run_playbooks(*a, **k):
            open(marker, "w").write("started")
            return real_run(*a, **k)  # the real one: without the check, ansible-runner meets no pty
    else:
        def run_playbooks(*a, **k):
            open(marker, "w").write("started")
            return runner.RunResult((runner.HostResult(LOCALHOST, ok=1),), 0)
    runner.run_playbooks = run_playbooks
    main(["provision", *args])
""")


@pytest.fixture
def driver(tmp_path: Path) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(DRIVER, encoding="utf-8")
    return path


def test_no_terminal_and_no_yes_refuses_before_any_change(driver: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run = subprocess.run([sys.executable, str(driver), str(marker), "pty", "--pip-find-links", "/opt/wheels"],
                         cwd=REPO, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_USAGE, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("dlsetup: error: ")]
    assert errors == ["dlsetup: error: no terminal to confirm on (standard input is not a terminal): pass --yes "
                      "to provision without asking, or --check to see what would change"]
    assert not marker.exists()


@pytest.mark.parametrize("answer, status, started", [("n", 1, False), ("y", 0, True)])
def test_the_question_on_a_terminal(driver: Path, tmp_path: Path, answer: str, status: int, started: bool) -> None:
    marker = tmp_path / "ran"
    child = pexpect.spawn(sys.executable, [str(driver), str(marker), "pty"], cwd=str(REPO), env=ENV, timeout=120,
                          encoding="utf-8", dimensions=(50, 200))
    child.expect_exact(r"Provision 1 host(s) as planned? [y/N]:")
    assert not marker.exists()  # asked before anything ran
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == status, child.before
    assert marker.exists() is started
    if not started:
        assert "dlsetup: aborted" in child.before


def test_no_pseudo_terminal_is_one_line_before_anything_runs(driver: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run = subprocess.run([sys.executable, str(driver), str(marker), "no-pty", "--check"], cwd=REPO, env=ENV,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == EXIT_FAILED, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("dlsetup: error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "dlsetup: error: cannot open a pseudo-terminal (out of pty devices), which Ansible runs on: mount devpts"
    ), run.stderr[-3000:]
    assert not marker.exists()


def test_require_pty(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal.require_pty()  # this machine has pseudo-terminals

    def missing() -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(terminal.os, "openpty", missing)
    with pytest.raises(DlsetupError, match=r"^cannot open a pseudo-terminal \(No such file or directory\)") as err:
        terminal.require_pty()
    assert err.value.exit_code == EXIT_FAILED
