"""Roles run on this machine in check mode, so that nothing is installed: the verdicts of their gates and the
arguments of the tasks that would change something. The frameworks role goes through dlsetup's runner for
stand-in hosts on the local connection; the jupyter role through plain ansible-playbook with the roles path,
as people who never run dlsetup use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import yaml

from conftest import REPO
from dlsetup.runner import HostResult, RunOptions, run_playbooks


def frameworks(tmp: Path, hosts: Mapping[str, Mapping[str, Any]], capture: Sequence[str]) -> Dict[str, HostResult]:
    """roles/frameworks for each of ``hosts`` (name -> role variables), each with a venv path under ``tmp`` and the
    OS package step emptied; ``capture``: the tasks whose results are kept. No venv is made (checked)."""
    play = tmp / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "frameworks", "hosts": "all", "gather_facts": False,
                                     "roles": [{"role": "dlsetup.workstation.frameworks"}]}]))
    host_vars = {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                        "frameworks_venv_path": str(tmp / name / "venv"), **variables}
                 for name, variables in hosts.items()}
    result = run_playbooks([play], [], host_vars=host_vars, capture=list(capture),
                           options=RunOptions(check=True, extra_vars=(json.dumps({"__frameworks_packages": []}),)))
    assert not list(tmp.glob("*/venv"))
    return {host.host: host for host in result.hosts}


def jupyter(tmp: Path, variables: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    """roles/jupyter on localhost with ``variables``, from plain ansible-playbook."""
    play = tmp / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "gate", "hosts": "localhost", "gather_facts": False,
                                     "roles": [{"role": "jupyter"}]}]))
    extra = tmp / "vars.json"
    extra.write_text(json.dumps({**variables, "ansible_python_interpreter": sys.executable}))
    ansible = Path(sys.executable).with_name("ansible-playbook")
    return subprocess.run([str(ansible), "-c", "local", "-i", "localhost,", "--check", str(play), "-e", f"@{extra}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp,
                          env={"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "PATH": "/usr/bin:/bin", "HOME": str(tmp),
                               "ANSIBLE_NOCOLOR": "1"})


def last_task(stdout: str) -> str:
    """The header line of the last task a run started (the one that failed, for a failed run)."""
    return [line for line in stdout.splitlines() if line.startswith("TASK [")][-1]
