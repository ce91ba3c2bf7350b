"""``dlsetup verify -i``: the shipped workload on every inventory host, one host's failure never stopping
the others, ``{host: document}`` that ``dlsetup report`` renders, exit codes as provision's.

The hosts are this machine (local connection) with stand-in venvs whose ``bin/python`` prints what the test
gives it, and one host whose SSH port is closed. dlsetup runs from a copy laid out as the wheel installs it
(roles and playbooks under ``dlsetup/ansible``), so the payload must be found there."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from dlsetup.errors import EXIT_HOSTS_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from dlsetup.runner import HostResult, RunResult, TaskFailure
from dlsetup.verify.fleet import collect, raise_for, result_file
from test_verify_playbook import DOC, _venv  # the verify document and the fake venv the playbook test uses

REPO = Path(__file__).resolve().parents[1]
FAILING = {**DOC, "host": "gpu-b", "checks": [{**DOC["checks"][0], "id": "devices", "status": "fail",
                                                 "message": "no GPU"}]}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dlsetup as the wheel lays it out (pyproject's force-include), without the source tree beside it."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(REPO / "dlsetup", site / "dlsetup", ignore=shutil.ignore_patterns("__pycache__"))
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    for source, target in wheel["force-include"].items():
        copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy2
        copy(REPO / source, site / target)
    return site


def dlsetup(site: Path, *args: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_STATE_HOME": str(state), "XDG_CACHE_HOME": str(state / "cache")}
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], cwd=site, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_host_is_verified_and_reported(installed: Path, tmp_path: Path) -> None:
    hosts = {
        "good": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "dlsetup_venv": str(_venv(tmp_path / "a", "warming up\n" + json.dumps(DOC) + "\n"))},
        "failing": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    "dlsetup_venv": str(_venv(tmp_path / "b", json.dumps(FAILING)))},
        "broken": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                   "dlsetup_venv": str(tmp_path / "no-venv")},
        "gone": {"ansible_host": "127.0.0.1", "ansible_port": _closed_port(), "ansible_connection": "ssh"},
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    state = tmp_path / "state"
    run = dlsetup(installed, "verify", "-i", str(inventory), "--json", "-v", state=state)
    assert run.returncode == EXIT_UNREACHABLE, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    documents = json.loads(run.stdout)
    assert list(documents) == ["good", "failing", "broken", "gone"]
    assert documents["good"] == {**DOC, "status": "pass"}
    assert documents["failing"]["status"] == "fail" and documents["failing"]["checks"] == FAILING["checks"]
    assert documents["gone"]["status"] == "unreachable" and "Connection refused" in documents["gone"]["message"]
    assert documents["broken"]["status"] == "failed"
    assert "printed no verify document" in documents["broken"]["message"]
    assert set(documents["broken"]) == {"host", "status", "message"}
    # the one error line names every host that did not pass
    [error] = [line for line in run.stderr.splitlines() if line.startswith("dlsetup: error: ")]
    assert error.startswith("dlsetup: error: 1 host(s) unreachable: gone; 2 host(s) failed: ")
    assert "failing (verify failed on failing: devices" in error and "broken (verify on broken printed" in error
    # the run record: where the failure says, holding the documents; -v said where it is first
    [record] = (state / "dlsetup" / "runs").iterdir()
    assert f"full log and run record: {record}\n" in run.stderr, run.stderr
    assert f"dlsetup: run record: {record}" in run.stderr
    assert "-verify-" in record.name
    assert json.loads((record / "verify.json").read_text()) == documents
    assert "UNREACHABLE" in run.stderr  # -v: Ansible's own output of the unreachable host
    # dlsetup report renders what verify -i printed
    saved = tmp_path / "verify.json"
    saved.write_text(run.stdout)
    html = tmp_path / "report.html"
    report = dlsetup(installed, "report", "-o", str(html), str(saved), state=state)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == f"wrote {html}: 4 hosts"
    page = html.read_text()
    for text in ("good", "failing", "broken", "gone", "no GPU", "torch 2.13.0"):
        assert text in page, text


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    node1: {}\n")
    for args, message in (
            (["--limit", "node1"], "--limit needs --inventory"),
            (["-i", str(inventory), "--data-dir", str(tmp_path)], "--data-dir cannot be combined with --inventory"),
            (["-i", str(tmp_path / "missing.yml")], "inventory not found")):
        run = subprocess.run([sys.executable, "-m", "dlsetup", "verify", *args], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == EXIT_USAGE and "Traceback" not in run.stderr
        assert run.stderr.startswith(f"dlsetup: error: {message}"), run.stderr


def test_collect_checks_the_saved_documents_again(tmp_path: Path) -> None:
    """A result file the playbook did not write as a verify document (tampered, truncated) is a failure."""
    (tmp_path / result_file("ok")).write_text(json.dumps(DOC))
    (tmp_path / result_file("../odd")).write_text(json.dumps({**DOC, "checks": "all good"}))
    (tmp_path / result_file("cut")).write_text(json.dumps(DOC)[:40])
    run = RunResult((HostResult("ok", ok=5), HostResult("../odd", ok=5), HostResult("cut", ok=5)), 0)
    documents = collect(tmp_path, ["ok", "../odd", "cut", "absent"], run)
    assert documents["ok"]["status"] == "pass"
    assert result_file("../odd").startswith("host-") and "/" not in result_file("../odd")
    assert documents["../odd"]["status"] == "failed" and "checks" in documents["../odd"]["message"]
    assert documents["cut"]["status"] == "failed" and "not JSON" in documents["cut"]["message"]
    assert documents["absent"] == {"host": "absent", "status": "failed", "message": "verify did not run on this host"}


def test_exit_status_as_provision() -> None:
    failed = HostResult("b", failed=1, failure=TaskFailure("Run", "verify failed on b: devices"))
    denied = HostResult("c", failed=1, failure=TaskFailure("Copy", "Permission denied"))
    gone = HostResult("d", unreachable=1, failure=TaskFailure("Copy", "Connection refused", unreachable=True))
    codes = []
    for hosts in ((failed,), (failed, denied), (failed, denied, gone)):
        with pytest.raises(Exception) as err:
            raise_for(RunResult(hosts, 2))
        codes.append(err.value.exit_code)
    assert codes == [EXIT_HOSTS_FAILED, 5, EXIT_UNREACHABLE]
    raise_for(RunResult((HostResult("a", ok=3),), 0))
