"""``dlsetup check``: judge the host against the usual workstation advice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dlsetup.errors import EXIT_FAILED

STYLE = {"pass": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--from-bundle", type=click.Path(path_type=Path), help="Judge a saved bundle instead of this host.")
@click.option("--strict", is_flag=True, help="Exit 1 when any finding fails.")
def check(as_json: bool, from_bundle: Path | None, strict: bool) -> None:
    """Judge the hardware against deep-learning workstation advice."""
    from dlsetup.advice import run_checks
    from dlsetup.probe import probe

    profile = probe(bundle=from_bundle)
    findings = run_checks(profile)
    counts = {s: sum(f.severity == s for f in findings) for s in STYLE}
    if as_json:
        doc = {"host": profile.hostname, "source": profile.source, "summary": counts,
               "findings": [f.to_dict() for f in findings]}
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"check: {profile.hostname or '?'} ({profile.source})", title_justify="left")
        for col in ("", "Check", "Finding", "Hint"):
            table.add_column(col)
        for f in findings:
            table.add_row(f"[{STYLE[f.severity]}]{f.severity}[/]", f.id, f.message, f.hint)
        console = Console()
        console.print(table)
        console.print("  ".join(f"[{STYLE[s]}]{n} {s}[/]" for s, n in counts.items()))
    if strict and counts["fail"]:
        sys.exit(EXIT_FAILED)
