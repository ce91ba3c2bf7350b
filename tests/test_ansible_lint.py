"""The roles and playbooks pass ansible-lint's production profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_roles_and_playbooks_pass_the_production_profile() -> None:
    lint = Path(sys.executable).with_name("ansible-lint")
    run = subprocess.run([str(lint), "--nocolor", "--profile", "production", "roles/", "playbooks/"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
