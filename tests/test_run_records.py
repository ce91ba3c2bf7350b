"""Failures explain themselves: the failing tool's own last error lines in the summary, the whole run kept
as a record under the user's state folder (rotated), its path printed; ``-v``/``-vv`` on every command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlsetup.errors import UsageError
from dlsetup.runner import RunOptions, run_playbooks
from dlsetup.runner import records
from dlsetup.runner.results import DETAIL_LINES, LINE_CHARS, HostResult, RunResult, Tally, \
    failure_detail, failure_message

from conftest import FIXTURES

REPO = Path(__file__).resolve().parents[1]
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
#: a real runner_on_failed event: ansible.builtin.pip installing a package no --find-links folder has
PIP_EVENT = FIXTURES / "runner" / "pip-no-matching-distribution.json"


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(records.KEEP_ENV, raising=False)
    return tmp_path / "state"


def _rendered(renderable: Any) -> str:
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_pip_failure_shows_pips_own_error() -> None:
    """pip's module folds stdout and stderr into its message, stdout first: the summary shows pip's
    errors, not 'stdout: Looking in links'."""
    from dlsetup.runner.progress import summary

    event = json.loads(PIP_EVENT.read_text())
    tally = Tally()
    tally.handle(event)
    failure = tally.result(2).host("here").failure
    assert failure is not None
    assert failure.message == "ERROR: No matching distribution found for filelock-nonexistent-zz"
    assert failure.detail == (
        "ERROR: Could not find a version that satisfies the requirement filelock-nonexistent-zz (from versions: none)",
        "ERROR: No matching distribution found for filelock-nonexistent-zz")
    text = _rendered(summary(tally.result(2)))
    assert "here: pip: ERROR: No matching distribution found for filelock-nonexistent-zz" in text
    assert "    ERROR: Could not find a version that satisfies" in text
    assert "Looking in links" not in text


def test_detail_is_bounded_and_prefers_stderr() -> None:
    stderr = "\n".join([f"line {n}" for n in range(8)] + ["", "x" * 300, "E: Unable to locate package nope"])
    res = {"msg": "non-zero return code", "stderr": stderr, "stdout": "Reading package lists..."}
    detail = failure_detail(res)
    assert len(detail) == DETAIL_LINES and detail[-1] == "E: Unable to locate package nope"
    assert detail[-2] == "x" * LINE_CHARS and detail[0] == "line 5"
    assert failure_message(res) == "non-zero return code: E: Unable to locate package nope"
    # stderr_lines as Ansible gives them
    assert failure_detail({"stderr_lines": ["mdadm: cannot open /dev/sdz: No such file or directory"]}) == (
        "mdadm: cannot open /dev/sdz: No such file or directory",)
    # a tool that wrote its error to stdout only (the end of it is the reason)
    assert failure_detail({"msg": "non-zero return code", "stdout": "a\nb\nfatal: bad config"})[-1] == \
        "fatal: bad config"
    # a crashed module: the end of its traceback
    crash = {"msg": "MODULE FAILURE", "module_stderr": "Traceback (most recent call last):\n  f\nOSError: boom"}
    assert failure_detail(crash)[-1] == "OSError: boom" and failure_message(crash) == "MODULE FAILURE: OSError: boom"
    # fact gathering: the module that failed
    assert failure_detail({"failed_modules": {"setup": {"stderr": "dpkg: error: lock"}}}) == ("dpkg: error: lock",)
    assert failure_detail({"msg": "one line"}) == ()


def test_run_keeps_its_record(state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlsetup.runner.progress import print_summary
    from rich.console import Console

    monkeypatch.setenv("DLSETUP_TEST_TOKEN", "tok-3141")  # the controller's environment stays out of it
    play = tmp_path / "fail.yml"
    play.write_text(yaml.safe_dump([{"name": "f", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "tool", "ansible.builtin.shell": "for n in $(seq 1 30); do echo \"err $n\" >&2; done; exit 1"}]}]))
    result = run_playbooks([play], [], host_vars={"a": LOCAL}, options=RunOptions(extra_vars=("pw=s3cr3t",)),
                           documents={"plans.json": {"a": {"roles": ["common"]}}}, command="provision")
    record = result.record
    assert record is not None and record.parent == state / "dlsetup" / "runs"
    assert record.name.split("-")[1] == "provision"
    assert record.stat().st_mode & 0o777 == 0o700
    failure = result.host("a").failure
    assert failure is not None and failure.detail == tuple(f"err {n}" for n in range(26, 31))
    # the summary holds what the command printed; the full log every line
    summary = json.loads((record / records.SUMMARY).read_text())
    assert summary["hosts"][0]["failure"]["detail"] == list(failure.detail) and summary["rc"] == 2
    assert summary["record"] == str(record)
    assert json.loads((record / "plans.json").read_text()) == {"a": {"roles": ["common"]}}
    [artifacts] = (record / "artifacts").iterdir()
    assert "err 1\\n" in (artifacts / "stdout").read_text() or "err 1\n" in (artifacts / "stdout").read_text()
    assert list((artifacts / "job_events").glob("*.json"))
    assert "tok-3141" not in (artifacts / "command").read_text()
    assert "DLSETUP_TEST_TOKEN" in json.loads((artifacts / "command").read_text())["env"]  # names only
    for path in [record / records.SUMMARY, record / "plans.json", record / "dlsetup-hosts.yml",
                 *(record / "env" / "vars").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    # a failure prints where the record is, on one line
    console = Console(record=True, width=40, file=io.StringIO())
    print_summary(result, console)
    assert f"full log and run record: {record}\n" in console.export_text()
    ok = Console(record=True, width=40, file=io.StringIO())
    print_summary(RunResult((HostResult("a", ok=1),), 0, record=record), ok)
    assert "run record" not in ok.export_text()


def test_old_records_are_rotated(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = state / "dlsetup" / "runs"
    runs.mkdir(parents=True)
    (runs / "notes").mkdir()  # not a record: never removed
    (runs / "README").write_text("mine\n")
    monkeypatch.setenv(records.KEEP_ENV, "3")
    made = [records.new_record("verify") for _ in range(5)]
    assert records.records() == made[-3:]
    assert (runs / "notes").is_dir() and (runs / "README").is_file()
    monkeypatch.setenv(records.KEEP_ENV, "1")
    newest = records.new_record("probe")
    assert records.records() == [newest]
    for bad in ("0", "x", "-2"):
        monkeypatch.setenv(records.KEEP_ENV, bad)
        with pytest.raises(UsageError, match=records.KEEP_ENV):
            records.new_record("verify")
    assert records.records() == [newest]


def test_unwritable_state_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    with pytest.raises(UsageError, match="cannot keep the run record in .*XDG_STATE_HOME"):
        records.new_record("provision")


def _cli(*args: str, state: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "XDG_STATE_HOME": str(state), **env})


def test_verbose_on_every_command(state: Path, tmp_path: Path) -> None:
    from dlsetup.cli import COMMANDS

    from click.testing import CliRunner

    from dlsetup.cli import cli

    for name in [*COMMANDS, None]:
        run = CliRunner().invoke(cli, [name, "--help"] if name else ["--help"])
        assert run.exit_code == 0 and "-v, --verbose" in run.output, name
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"here": {**LOCAL, "dlsetup_venv": str(tmp_path)}}}}))
    quiet = _cli("verify", "-i", str(inventory), "--json", state=state)
    assert quiet.returncode == 3 and "run record:" in quiet.stderr and "dlsetup: run record:" not in quiet.stderr
    assert "FAILED!" not in quiet.stderr
    # -v: where the record is, and Ansible's output of the failed task
    run = _cli("verify", "-v", "-i", str(inventory), "--json", state=state)
    assert run.returncode == 3 and "dlsetup: run record: " in run.stderr and "FAILED!" in run.stderr
    assert "TASK [" not in run.stderr
    # -vv (before the command's name too): all of Ansible's output, at Ansible's -vv
    run = _cli("-vv", "verify", "-i", str(inventory), "--json", state=state)
    assert run.returncode == 3 and "TASK [Make a work directory]" in run.stderr
    assert "task path: " in run.stderr  # what ansible-playbook -vv adds
    bad = _cli("verify", "-i", str(inventory), state=state, DLSETUP_KEEP_RUNS="many")
    assert bad.returncode == 2 and bad.stderr.startswith("dlsetup: error: DLSETUP_KEEP_RUNS='many'"), bad.stderr
    assert "Traceback" not in bad.stderr
