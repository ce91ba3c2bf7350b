"""``dlsetup verify``: prove the workstation trains, on every GPU, and how fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from dlsetup.errors import EXIT_FAILED, UsageError

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


@click.command()
@click.option("--venv", type=click.Path(path_type=Path), help="Environment to verify [default: $VIRTUAL_ENV].")
@click.option("--quick", is_flag=True, help="Fewer steps and smaller buffers (under 30 s).")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Directory whose filesystem throughput to measure [default: the venv's].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def verify(venv: Path | None, quick: bool, data_dir: Path | None, as_json: bool) -> None:
    """Train LeNet-5, an RNN and an LSTM on every GPU, measure matmul, memory, all-reduce and disk
    throughput against the card's datasheet peak. Exit 1 when any check fails."""
    from dlsetup.gpudb import by_name
    from dlsetup.probe import probe
    from dlsetup.verify import verify as run_verify

    if venv is None:
        if "VIRTUAL_ENV" not in os.environ:
            raise UsageError("no environment to verify: pass --venv PATH or activate one")
        venv = Path(os.environ["VIRTUAL_ENV"])
    document = run_verify(venv, probe(), quick=quick, data_dir=data_dir, lookup=by_name)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"verify: {document['host']} ({venv})", title_justify="left")
        for column in ("", "Check", "Device", "Result"):
            table.add_column(column)
        for item in document["checks"]:
            table.add_row(f"[{STYLE[item['status']]}]{item['status']}[/]", item["id"], item["device"] or "",
                          escape(item["message"]))
        Console().print(table)
    if document["status"] == "fail":
        sys.exit(EXIT_FAILED)
