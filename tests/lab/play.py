"""One role of the collection run on a chroot with plain ``ansible-playbook``, as someone who uses the roles
without dlsetup runs them: the collection linked from this checkout, the variables as an ``-e @file``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dlsetup.runner import link_collection

#: the PLAY RECAP line of one host
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass(frozen=True)
class Recap:
    """A finished run: its exit status, the host's recap counts (-1: no recap) and its output."""

    rc: int
    ok: int
    changed: int
    unreachable: int
    failed: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """The tail of both streams, for an assertion's message."""
        return self.stdout[-5000:] + self.stderr[-2000:]


def run_role(target: Path, work: Path, role: str, variables: Mapping[str, Any]) -> Recap:
    """Run ``dlsetup.workstation.<role>`` on the chroot ``target`` with ``variables`` (files go in ``work``)."""
    play = work / "play.yml"
    play.write_text(f"- hosts: all\n  gather_facts: false\n  roles:\n    - role: dlsetup.workstation.{role}\n")
    extra = work / "vars.json"
    extra.write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(link_collection(work / "collections")),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "True"}
    run = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", f"{target},",
                          "-c", "community.general.chroot", "-e", "ansible_python_interpreter=/usr/bin/python3",
                          "-e", f"@{extra}", str(play)], env=env, capture_output=True, text=True)
    recap = RECAP.search(run.stdout)
    counts = [int(v) for v in recap.groups()] if recap else [-1, -1, -1, -1]
    return Recap(run.returncode, *counts, run.stdout, run.stderr)
