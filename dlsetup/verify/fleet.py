"""``dlsetup verify -i``: the workload on every host of an inventory, through ``playbooks/verify.yml``.

The payload is the one shipped in this package (:data:`dlsetup.verify.PAYLOAD`, in the source tree or the
installed wheel); the playbook runs it with each host's venv Python and saves each host's validated
document on the controller. Here they are read back (and checked again) into one ``{host: document}``
mapping, which ``dlsetup report`` reads: a host with no document (unreachable, no venv, a broken
interpreter) has a failure ``{host, status, message}`` instead. One host failing never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from dlsetup.documents import MAX_BYTES, DocumentError, decode, loads, problem, read_input
from dlsetup.errors import EXIT_FAILED, EXIT_HOSTS_FAILED, EXIT_PRIVILEGES, EXIT_UNREACHABLE, DlsetupError
from dlsetup.inventory import Inventory
from dlsetup.runner import HostResult, RunResult

PLAYBOOK = "verify.yml"
#: the record's file holding every host's document
RECORD_FILE = "verify.json"
#: inventory names the playbook names a result file after (any other name: host-<sha256>.json)
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


@dataclass(frozen=True)
class FleetVerify:
    """What ``verify -i`` found: each selected host's document, in inventory order, and the run."""

    documents: Dict[str, Dict[str, Any]]
    run: RunResult


def result_file(host: str) -> str:
    """The name playbooks/verify.yml saves ``host``'s document under."""
    return f"{host}.json" if _PLAIN.match(host) else f"host-{hashlib.sha256(host.encode()).hexdigest()}.json"


def verify_fleet(inventory: Inventory, *, venv: Optional[str] = None, quick: bool = False,
                 console: Any = None) -> FleetVerify:
    """Run verify on every host of ``inventory`` (``venv``: the venv on every host, default the
    inventory's ``dlsetup_venv`` or /opt/dlsetup/venv) and collect the documents. Raises
    :class:`DlsetupError` (exit 1) only when ansible-playbook itself cannot run."""
    from dlsetup.runner import RunOptions, ansible_dir, run_playbooks
    from dlsetup.runner.records import write_json
    from dlsetup.verify import PAYLOAD

    with tempfile.TemporaryDirectory(prefix="dlsetup-verify-") as tmp:
        results = Path(tmp) / "results"
        extra: Dict[str, Any] = {"dlsetup_verify_results": str(results), "dlsetup_verify_payload": str(PAYLOAD)}
        if venv is not None:
            extra["dlsetup_venv"] = venv
        if quick:
            extra["dlsetup_verify_quick"] = True
        run = run_playbooks([ansible_dir() / "playbooks" / PLAYBOOK], inventory.sources, hosts=inventory.hosts,
                            options=RunOptions(limit=inventory.limit, extra_vars=(json.dumps(extra),)),
                            console=console)
        if run.error:
            raise DlsetupError(f"ansible-playbook could not run: {run.error} (run record: {run.record})", EXIT_FAILED)
        documents = collect(results, inventory.hosts, run)
    if run.record is not None:
        write_json(run.record / RECORD_FILE, documents)
    return FleetVerify(documents, run)


def collect(results: Path, hosts: Sequence[str], run: RunResult) -> Dict[str, Dict[str, Any]]:
    """``{host: document}`` for ``hosts``: the verify document the playbook saved (read and checked
    again; its ``status`` the worst of its checks), else a failure saying why there is none."""
    from dlsetup.verify import overall_status

    by_name: Mapping[str, HostResult] = {h.host: h for h in run.hosts}
    documents: Dict[str, Dict[str, Any]] = {}
    for name in hosts:
        result = by_name.get(name)
        path = results / result_file(name)
        reason = None
        if path.is_file():
            try:
                document = loads(decode(read_input(path, MAX_BYTES), max_bytes=MAX_BYTES))
                reason = problem("verify", document)
            except (OSError, DocumentError) as err:
                reason = str(err)
            if reason is None:
                documents[name] = {**document, "status": overall_status(document["checks"])}
                continue
        if result is not None and result.failure is not None:
            status = "unreachable" if result.status == "unreachable" else "failed"
            message = f"{result.failure.task}: {result.failure.message}"
        else:
            status = "failed"
            message = f"no verify document ({reason})" if reason else "verify did not run on this host"
        documents[name] = {"host": name, "status": status, "message": message}
    return documents


def raise_for(run: RunResult) -> None:
    """Exit status as provision's: 4 when a host was unreachable, 5 when one lacked privileges, 3 when
    one failed (a failing check among them); the message names every such host."""
    unreachable = [h for h in run.hosts if h.status == "unreachable"]
    failed = [h for h in run.hosts if h.status == "failed"]
    parts = []
    if unreachable:
        parts.append(f"{len(unreachable)} host(s) unreachable: " + ", ".join(h.host for h in unreachable))
    if failed:
        parts.append(f"{len(failed)} host(s) failed: " + "; ".join(
            f"{h.host} ({h.failure.message})" if h.failure else h.host for h in failed))
    if unreachable:
        raise DlsetupError("; ".join(parts), EXIT_UNREACHABLE)
    denied = next((h for h in failed if h.failure is not None and h.failure.privileges), None)
    if denied is not None and denied.failure is not None:
        raise DlsetupError(f"missing privileges on {denied.host}: {denied.failure.message}", EXIT_PRIVILEGES)
    if failed:
        raise DlsetupError("; ".join(parts), EXIT_HOSTS_FAILED)
