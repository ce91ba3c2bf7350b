"""Load and check an Ansible inventory before anything runs.

The inventory is read by ``ansible-inventory --list`` (through :mod:`dlsetup.runner`), so every
format and plugin Ansible takes is accepted. A file that does not parse, or a ``--limit`` that
selects no host, is a one-line :class:`~dlsetup.errors.UsageError` (exit 2) and nothing runs.
Without an inventory the target is this machine, reached with the local connection.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dlsetup.errors import UsageError

LOCALHOST = "localhost"
#: the interpreter for the local target: the system one (its python3-apt is what the apt module needs)
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Inventory:
    """The hosts a run targets."""

    sources: Tuple[str, ...]  #: inventory sources for ``-i`` (empty: this machine only)
    hosts: Tuple[str, ...]  #: the selected hosts, group by group in the source's own order, each once
    limit: Optional[str] = None  #: the ``--limit`` pattern that selected them

    @property
    def local(self) -> bool:
        """The target is this machine (no inventory given)."""
        return not self.sources

    def connection_vars(self) -> Dict[str, Dict[str, Any]]:
        """Host variables the run adds: how to reach this machine when there is no inventory."""
        if not self.local:
            return {}
        python = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else "auto_silent"
        return {LOCALHOST: {"ansible_connection": "local", "ansible_python_interpreter": python}}


def local_inventory() -> Inventory:
    """This machine as the only target."""
    return Inventory(sources=(), hosts=(LOCALHOST,))


def load_inventory(source: Path, limit: Optional[str] = None) -> Inventory:
    """Read the inventory ``source`` (file or folder) and select the hosts ``limit`` names."""
    from dlsetup.runner import list_inventory

    if not source.exists():
        raise UsageError(f"inventory not found: {source}")
    rc, data, stderr = list_inventory([str(source)], limit)
    if rc != 0:
        raise UsageError(f"inventory {source} is not valid: {_reason(stderr)}")
    hosts = _hosts(data)
    if not hosts:
        what = f"--limit {limit!r} matches no host" if limit else "it has no hosts"
        raise UsageError(f"inventory {source}: {what}")
    return Inventory(sources=(str(source),), hosts=tuple(hosts), limit=limit)


def _hosts(data: Mapping[str, Any]) -> List[str]:
    """Every host of an ``ansible-inventory --list`` document, each once: ansible-core lists the groups and
    each group's hosts in the order the source gives them (it sorts nothing), so this keeps file order."""
    hosts: Dict[str, None] = {}
    for name, group in data.items():
        if name != "_meta" and isinstance(group, dict):
            hosts.update(dict.fromkeys(group.get("hosts", ())))
    return list(hosts)


def _reason(stderr: str) -> str:
    """The line of ansible-inventory's errors that says what is wrong with the source."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for pattern in (r"Failed to parse .*?: (.+)", r"\[ERROR\]:? (.+)", r"ERROR!? (.+)"):
        for line in lines:
            match = re.search(pattern, line)
            if match:
                return match.group(1).rstrip(".")[:300]
    return lines[-1][:300] if lines else "ansible-inventory failed"
