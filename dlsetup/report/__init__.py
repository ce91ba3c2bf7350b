"""``dlsetup report``: one self-contained HTML page from the JSON of probe, check, plan and verify.

Each input is recognised by its keys, checked against the shape of its kind (:mod:`dlsetup.documents`:
a wrong type is one line naming the file and the field, never a traceback mid-render), grouped per
host name (a ``{host: document}`` mapping's key names its hosts), and rendered with jinja2 (autoescaped) into
a page with inline CSS and SVG only: no scripts, no external assets, so it can be mailed or archived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import jinja2

from dlsetup.documents import MAX_BYTES, DocumentError, decode, loads, problem, read_input
from dlsetup.errors import UsageError
from dlsetup.paths import quote

KINDS = ("probe", "check", "plan", "verify", "provision")

#: What an input file may hold: one document, a list of them, ``{host: document}`` (probe -i, check -i),
#: or one document per line (provision --json).
_FAILURE_KEYS = {"host", "status", "message"}


def kind_of(document: Any) -> Optional[str]:
    """Which command wrote ``document``: "probe", "check", "plan", "verify", "provision" (one line of
    ``provision --json``), "status" (``status --json``), "failure" (a host ``probe -i``/``check -i`` could not
    probe), or None."""
    if not isinstance(document, dict):
        return None
    if document.get("kind") == "verify":
        return "verify"
    if "findings" in document:
        return "check"
    if "roles" in document and "decisions" in document:
        return "plan"
    if "schema_version" in document and "gpus" in document:
        return "probe"
    if "roles" in document and "changed" in document and "status" in document:
        return "provision"
    if "drift" in document and "items" in document and "status" in document:
        return "status"
    if set(document) == _FAILURE_KEYS:
        return "failure"
    return None


@dataclass
class HostReport:
    """Everything the inputs say about one machine."""

    host: str
    machine: Optional[str] = None  #: machine id (probe's ``machine``), None when no input says
    documents: Dict[str, Dict[str, Any]] = field(default_factory=dict)  #: kind -> document
    #: set by :func:`read_inputs` when another machine has the same host name: the name and a short id
    label: str = ""

    @property
    def readiness(self) -> Tuple[str, str]:
        """(label, badge class): verified results first, then blocking findings, then what is known."""
        verify = self.documents.get("verify")
        if verify is not None:
            statuses = {c["status"] for c in verify["checks"]}
            if "fail" in statuses:
                return "not ready", "fail"
            return ("ready, with warnings", "warn") if "warn" in statuses else ("ready", "pass")
        check = self.documents.get("check")
        if check is not None and any(f["severity"] == "fail" for f in check["findings"]):
            return "blocked", "fail"
        provision = self.documents.get("provision")
        if provision is not None and provision["status"] in ("failed", "unreachable"):
            return f"provision {provision['status']}", "fail"
        failure = self.documents.get("failure")
        if failure is not None and not self.documents.keys() - {"failure"}:
            return failure["status"], "fail"
        if provision is not None:
            return "provisioned, not verified", "info"
        return ("planned, not verified", "info") if "plan" in self.documents else ("not verified", "info")


def _documents(path: Path, text: str) -> Iterable[Tuple[Optional[str], Any]]:
    """(host name from a ``{host: document}`` mapping or None, document) for each document in ``text``."""
    try:
        data = loads(text)
    except DocumentError as err:
        lines = [line for line in text.splitlines() if line.strip()]
        if not (str(err).startswith("not JSON: Extra data") and len(lines) > 1):
            raise
        return ((None, loads(line)) for line in lines)  # JSON lines (provision --json), lazily
    if isinstance(data, list):
        return ((None, d) for d in data)  # lazily: the first stranger stops it
    if isinstance(data, dict) and kind_of(data) is None and data and all(isinstance(v, dict) for v in data.values()):
        return data.items()  # {host: document}
    return [(None, data)]


def _name(kind: str, document: Dict[str, Any], key: Optional[str]) -> str:
    if key is not None:  # the inventory's name for the host, as the mapping keys it
        return key
    return document.get("hostname" if kind == "probe" else "host") or "(unnamed host)"


def _machine(kind: str, document: Dict[str, Any]) -> Optional[str]:
    """The machine id a document carries: a probe's ``machine`` identity, the others' ``machine`` string."""
    machine = document.get("machine")
    if kind == "probe" and isinstance(machine, dict):
        return machine.get("machine_id") or machine.get("product_uuid") or None
    return machine if isinstance(machine, str) and machine else None


def _shown(name: str) -> str:
    """A host name for a message: as it is when short and printable, else quoted and cut."""
    return name if len(name) <= 60 and name.isprintable() and name.strip() == name and name else quote(name, 60)


Key = Tuple[str, Optional[str]]  #: (host name, machine id or None)


def _newer(kind: str, new: Dict[str, Any], old: Dict[str, Any]) -> bool:
    """Whether ``new`` replaces ``old`` for the same machine: the later probe by its ``probed_at``; else the
    input read last (files in the order given, documents in file order)."""
    if kind == "probe" and new.get("probed_at") and old.get("probed_at"):
        return str(new["probed_at"]) >= str(old["probed_at"])
    return True


def _read_file(path: Path, hosts: Dict[Key, HostReport]) -> None:
    for key, document in _documents(path, decode(read_input(path, MAX_BYTES), max_bytes=MAX_BYTES)):
        kind = kind_of(document)
        where = f"{path}" if key is None else f"{path}: host {_shown(key)}"
        if kind is None:
            raise UsageError(f"{where}: not the JSON of dlsetup probe, check, plan, verify or provision")
        wrong = problem(kind, document)
        if wrong is not None:
            raise UsageError(f"{where}: {kind} document: {wrong}")
        name, machine = _name(kind, document, key), _machine(kind, document)
        report = hosts.setdefault((name, machine), HostReport(name, machine))
        old = report.documents.get(kind)
        if old is None or (kind != "failure" and _newer(kind, document, old)):
            report.documents[kind] = document


def _merge_unidentified(hosts: Dict[Key, HostReport]) -> List[HostReport]:
    """Documents that name a host but no machine (provision lines, older inputs) join the one machine of
    that name; with several machines of one name they stay apart, as "machine unknown"."""
    machines: Dict[str, List[HostReport]] = {}
    for (name, machine), report in hosts.items():
        if machine is not None:
            machines.setdefault(name, []).append(report)
    merged: List[HostReport] = []
    for (name, machine), report in hosts.items():
        same_name = machines.get(name, [])
        if machine is None and len(same_name) == 1:
            for kind, document in report.documents.items():
                same_name[0].documents.setdefault(kind, document)
        else:
            merged.append(report)
    return merged


def read_inputs(paths: Iterable[Path]) -> List[HostReport]:
    """Read, check and group the JSON files by machine (host name and machine id): two machines with one
    host name are two hosts, labelled with a short id; the same machine twice keeps its newest result. A
    usage error names the file (and the field) that is unreadable, not recognised or of the wrong shape."""
    hosts: Dict[Key, HostReport] = {}
    for path in paths:
        try:
            _read_file(path, hosts)
        except OSError as err:
            raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
        except DocumentError as err:
            raise UsageError(f"{path}: {err}") from None
    reports = _merge_unidentified(hosts)
    names = [r.host for r in reports]
    for report in reports:
        if names.count(report.host) > 1:
            report.label = f"{report.host} ({(report.machine or '').replace('-', '')[:8] or 'machine unknown'})"
        else:
            report.label = report.host
    return sorted(reports, key=lambda r: (r.host, r.machine or ""))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("dlsetup.report"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    env.filters["gib"] = lambda n: "unknown" if n is None else f"{n / 2**30:.0f} GiB"
    env.filters["figure"] = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    return env


def render(hosts: List[HostReport], generated: Optional[datetime] = None) -> str:
    """The HTML page for ``hosts``."""
    generated = generated or datetime.now(timezone.utc)
    template = _environment().get_template("report.html.j2")
    return template.render(hosts=hosts, generated=generated.strftime("%Y-%m-%d %H:%M UTC"))
