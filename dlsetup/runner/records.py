"""Run records: every Ansible run keeps what it did under the user's state folder.

A record is a folder ``$XDG_STATE_HOME/dlsetup/runs/<UTC time>-<command>-<random>`` (default
``~/.local/state``) holding the documents the command gave the run (its plan(s)), ansible-runner's own
artifacts (``artifacts/<id>/job_events``, ``stdout``: the full log of every task) and ``summary.json``.
Records are readable by their owner only (artifacts may hold secrets, ``-e`` values among them) and the
newest :data:`DEFAULT_KEEP` are kept (``DLSETUP_KEEP_RUNS``); older ones are removed when a new run starts.
Only folders named as records are ever removed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional

from dlsetup.errors import UsageError

#: how many run records are kept when ``DLSETUP_KEEP_RUNS`` is not set
DEFAULT_KEEP = 20
KEEP_ENV = "DLSETUP_KEEP_RUNS"
#: a record's folder name: UTC time, the command, 6 random hex digits
_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[a-z0-9_-]{1,40}-[0-9a-f]{6}$")
SUMMARY = "summary.json"


def runs_dir() -> Path:
    """The folder of run records: ``$XDG_STATE_HOME/dlsetup/runs`` (default ``~/.local/state/dlsetup/runs``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dlsetup" / "runs"


def keep_runs() -> int:
    """How many records to keep: ``DLSETUP_KEEP_RUNS`` (a positive whole number), else :data:`DEFAULT_KEEP`."""
    value = os.environ.get(KEEP_ENV, "").strip()
    if not value:
        return DEFAULT_KEEP
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{KEEP_ENV}={value!r}: expected a whole number of run records to keep, 1 or more")
    return int(value)


def records(directory: Optional[Path] = None) -> List[Path]:
    """The run records in ``directory`` (default :func:`runs_dir`), oldest first."""
    directory = directory or runs_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name) and p.is_dir() and not p.is_symlink())


def rotate(keep: int, directory: Optional[Path] = None) -> List[Path]:
    """Remove all but the newest ``keep`` records of ``directory``; returns the removed ones."""
    old = records(directory)
    old = old[:max(len(old) - keep, 0)]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def command_name(playbook: str) -> str:
    """The dlsetup command running (click's) and the ``playbook`` it runs, unless it is named alike
    (``provision-probe``, ``provision-site``, ``verify``): a short name safe in a folder name."""
    import click

    ctx = click.get_current_context(silent=True)
    command = ctx.info_name if ctx is not None and ctx.info_name else ""
    name = playbook if not command or command == playbook else f"{command}-{playbook}"
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:40] or "run"


def new_record(command: str, directory: Optional[Path] = None) -> Path:
    """Create a fresh record folder (0700) for ``command``, after removing the records beyond the
    number kept (this one counts)."""
    keep = keep_runs()
    directory = directory or runs_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        rotate(keep - 1, directory)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = directory / f"{stamp}-{command}-{secrets.token_hex(3)}"
        path.mkdir(mode=0o700)
        path.chmod(0o700)  # whatever the umask
    except OSError as err:
        raise UsageError(f"cannot keep the run record in {directory}: {err.strerror or err} "
                         f"(set XDG_STATE_HOME to a writable folder)") from err
    return path


def write_json(path: Path, document: Any) -> Path:
    """Write ``document`` as JSON to ``path``, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    return path


def scrub_artifacts(record: Path) -> None:
    """Drop the controller's environment from ansible-runner's ``command`` artifact: it records the
    whole environment of dlsetup (tokens a user exported among it); the command line stays."""
    for command in (record / "artifacts").glob("*/command"):
        try:
            data = json.loads(command.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "env" in data:
            data["env"] = sorted(data["env"]) if isinstance(data["env"], dict) else None  # names, not values
            write_json(command, data)
