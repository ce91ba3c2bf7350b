"""``dlsetup verify``: prove the workstation trains, on every GPU, and how fast; with ``-i``, on every
host of an inventory (:mod:`dlsetup.verify.fleet`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from dlsetup.errors import EXIT_FAILED, UsageError

#: where dlsetup puts the framework venvs (dlsetup.plan.request's defaults; not imported: it loads yaml)
DEFAULT_VENV_ROOT = "/opt/dlsetup/venvs"
DEFAULT_VENV = "/opt/dlsetup/venv"

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path),
              help="Verify every host of this Ansible inventory, with the workload shipped in dlsetup.")
@click.option("-l", "--limit", help="With --inventory: only the hosts this pattern selects.")
@click.option("--venv", type=click.Path(path_type=Path),
              help="Environment to verify [default: $VIRTUAL_ENV, else every venv with torch under "
                   "/opt/dlsetup/venvs; with --inventory, each host's dlsetup_venv, else its pytorch venv].")
@click.option("--quick", is_flag=True, help="Fewer steps and smaller buffers (under 30 s).")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Directory whose filesystem throughput to measure [default: the venv's].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def verify(inventory: Path | None, limit: str | None, venv: Path | None, quick: bool, data_dir: Path | None,
           as_json: bool) -> None:
    """Train LeNet-5, an RNN and an LSTM on every GPU, measure matmul, memory, all-reduce and disk
    throughput against the card's datasheet peak. Exit 1 when any check fails.

    With --inventory, --json prints {host: verify document, or {host, status, message} when it has none},
    which dlsetup report renders; exit 4 when a host was unreachable, 3 when one failed."""
    if inventory is not None:
        _verify_inventory(inventory, limit, venv, quick, data_dir, as_json)
        return
    if limit is not None:
        raise UsageError("--limit needs --inventory")
    from dlsetup.gpudb import by_name
    from dlsetup.probe import probe
    from dlsetup.verify import verify as run_verify

    venvs = [venv] if venv is not None else [Path(os.environ["VIRTUAL_ENV"])] if "VIRTUAL_ENV" in os.environ \
        else installed_venvs()
    if not venvs:
        raise UsageError("no environment to verify: pass --venv PATH or activate one (none with torch under "
                         f"{DEFAULT_VENV_ROOT} or at {DEFAULT_VENV})")
    profile = probe()
    documents = {str(v): run_verify(v, profile, quick=quick, data_dir=data_dir, lookup=by_name) for v in venvs}
    if as_json:
        # one venv: its document, as always; several: {venv: document}, which dlsetup report reads like a fleet's
        click.echo(json.dumps(next(iter(documents.values())) if len(documents) == 1 else documents, indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape

        for path, document in documents.items():
            Console().print(_table(document, f"verify: {escape(str(document['host']))} ({escape(path)})"))
    if any(document["status"] == "fail" for document in documents.values()):
        sys.exit(EXIT_FAILED)


def installed_venvs(root: Path = Path(DEFAULT_VENV_ROOT), legacy: Path = Path(DEFAULT_VENV)) -> list[Path]:
    """The framework venvs dlsetup made on this machine that the workload can run in (those with torch: the
    pytorch venv, Keras on torch, a shared venv), in name order, the shared venv last."""
    found = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    return [p for p in found + [legacy] if (p / "bin" / "python").is_file()
            and any(p.glob("lib/python3*/site-packages/torch/__init__.py"))]


def _table(document: dict, title: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("", "Check", "Device", "Result"):
        table.add_column(column)
    for item in document["checks"]:
        table.add_row(f"[{STYLE[item['status']]}]{item['status']}[/]", escape(item["id"]),
                      escape(str(item.get("device") or "")), escape(str(item.get("message") or "")))
    return table


def _verify_inventory(inventory: Path, limit: str | None, venv: Path | None, quick: bool, data_dir: Path | None,
                      as_json: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    from dlsetup.inventory import load_inventory
    from dlsetup.runner.progress import print_summary
    from dlsetup.verify.fleet import raise_for, verify_fleet

    if data_dir is not None:
        raise UsageError("--data-dir cannot be combined with --inventory (each host measures its venv's filesystem)")
    found = verify_fleet(load_inventory(inventory, limit), venv=None if venv is None else str(venv), quick=quick,
                         console=Console(stderr=True))
    if as_json:
        click.echo(json.dumps(found.documents, indent=2))
    else:
        for host, document in found.documents.items():
            if "checks" in document:
                Console().print(_table(document, f"verify: {escape(host)}"))
    print_summary(found.run, Console(stderr=True), title="verify summary", reboot=False)
    raise_for(found.run)
