"""``dlsetup check``: judge the host, or every host of an inventory, against the usual workstation advice."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any, Dict, Tuple

import click

from dlsetup.errors import EXIT_FAILED, UsageError
from dlsetup.model import HostProfile

STYLE = {"pass": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--from-bundle", type=click.Path(path_type=Path), help="Judge a saved bundle instead of this host.")
@click.option("--strict", is_flag=True, help="Exit 1 when any finding fails.")
@click.option("-i", "--inventory", type=click.Path(path_type=Path),
              help="Judge every host of this Ansible inventory, probed over its connection in parallel.")
@click.option("-l", "--limit", help="With --inventory: only the hosts this pattern selects.")
def check(as_json: bool, from_bundle: Path | None, strict: bool, inventory: Path | None, limit: str | None) -> None:
    """Judge the hardware against deep-learning workstation advice.

    With --inventory, --json prints {host: findings, or {host, status, message} when it could not be
    probed}; the exit status is 4 when a host was unreachable, 3 when its probe failed."""
    if inventory is not None:
        if from_bundle:
            raise UsageError("--inventory cannot be combined with --from-bundle")
        _check_inventory(inventory, limit, as_json, strict)
        return
    if limit is not None:
        raise UsageError("--limit needs --inventory")
    from dlsetup.probe import probe

    doc, table = _judge(probe(bundle=from_bundle))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print(table)
    if strict and doc["summary"]["fail"]:
        sys.exit(EXIT_FAILED)


def _judge(profile: HostProfile) -> Tuple[Dict[str, Any], Any]:
    """The findings for ``profile``: (JSON document, rich renderable: table and counts)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from dlsetup.advice import run_checks

    findings = run_checks(profile, today=date.today().isoformat())
    counts = {s: sum(f.severity == s for f in findings) for s in STYLE}
    doc = {"host": profile.hostname, "machine": profile.machine.key, "source": profile.source, "summary": counts,
           "findings": [f.to_dict() for f in findings]}
    table = Table(title=f"check: {escape(profile.hostname or '?')} ({escape(profile.source)})", title_justify="left")
    for col in ("", "Check", "Finding", "Hint"):
        table.add_column(col)
    for f in findings:
        table.add_row(f"[{STYLE[f.severity]}]{f.severity}[/]", f.id, escape(f.message), escape(f.hint))
    return doc, Group(table, "  ".join(f"[{STYLE[s]}]{n} {s}[/]" for s, n in counts.items()))


def _print(renderable: Any) -> None:
    from rich.console import Console

    Console().print(renderable)


def _check_inventory(inventory: Path, limit: str | None, as_json: bool, strict: bool) -> None:
    from rich.markup import escape

    from dlsetup.fleet import ProbeFailure, probe_fleet, raise_for_failures
    from dlsetup.inventory import load_inventory

    outcomes = probe_fleet(load_inventory(inventory, limit))
    docs: Dict[str, Dict[str, Any]] = {}
    for name, outcome in outcomes.items():
        if isinstance(outcome, ProbeFailure):
            docs[name] = outcome.to_dict()
            if not as_json:
                _print(f"[bold red]{escape(name)}: {outcome.status}[/] {escape(outcome.message)}")
            continue
        docs[name], table = _judge(outcome)
        if not as_json:
            _print(table)
    if as_json:
        click.echo(json.dumps(docs, indent=2))
    raise_for_failures(outcomes)
    if strict and any(doc.get("summary", {}).get("fail") for doc in docs.values()):
        sys.exit(EXIT_FAILED)
