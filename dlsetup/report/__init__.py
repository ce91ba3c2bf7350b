"""``dlsetup report``: one self-contained HTML page from the JSON of probe, check, plan and verify.

Each input is recognised by its keys, grouped per host name, and rendered with jinja2 (autoescaped) into
a page with inline CSS and SVG only: no scripts, no external assets, so it can be mailed or archived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import jinja2

from dlsetup.errors import UsageError

KINDS = ("probe", "check", "plan", "verify")


def kind_of(document: Any) -> Optional[str]:
    """Which command wrote ``document``: "probe", "check", "plan", "verify", or None."""
    if not isinstance(document, dict):
        return None
    if document.get("kind") == "verify" and isinstance(document.get("checks"), list):
        return "verify"
    if isinstance(document.get("findings"), list):
        return "check"
    if "roles" in document and "decisions" in document:
        return "plan"
    if "schema_version" in document and "gpus" in document:
        return "probe"
    return None


@dataclass
class HostReport:
    """Everything the inputs say about one host."""

    host: str
    documents: Dict[str, Dict[str, Any]] = field(default_factory=dict)  #: kind -> document

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
        return ("planned, not verified", "info") if "plan" in self.documents else ("not verified", "info")


def read_inputs(paths: Iterable[Path]) -> List[HostReport]:
    """Read and group the JSON files; a usage error names a file that is unreadable or not recognised."""
    hosts: Dict[str, HostReport] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise UsageError(f"cannot read {path}: {err.strerror or err}") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UsageError(f"{path} is not JSON: {err}") from err
        for document in data if isinstance(data, list) else [data]:
            kind = kind_of(document)
            if kind is None:
                raise UsageError(f"{path}: not the JSON of dlsetup probe, check, plan or verify")
            name = document.get("hostname" if kind == "probe" else "host") or "(unnamed host)"
            report = hosts.setdefault(name, HostReport(name))
            if kind in report.documents:
                raise UsageError(f"{path}: a second {kind} result for host {name}")
            report.documents[kind] = document
    return sorted(hosts.values(), key=lambda r: r.host)


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
