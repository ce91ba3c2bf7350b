"""``dlsetup probe``: what is this machine, or every host of an inventory?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dlsetup.errors import UsageError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the host profile as JSON (the documented schema).")
@click.option("--from-bundle", type=click.Path(path_type=Path), help="Read a saved bundle instead of this host.")
@click.option("--save-bundle", type=click.Path(path_type=Path), help="Also save everything read as a bundle.")
@click.option("-i", "--inventory", type=click.Path(path_type=Path),
              help="Probe every host of this Ansible inventory over its connection, in parallel.")
@click.option("-l", "--limit", help="With --inventory: only the hosts this pattern selects.")
def probe(as_json: bool, from_bundle: Path | None, save_bundle: Path | None, inventory: Path | None,
          limit: str | None) -> None:
    """Read the hardware: CPU, memory, disks, GPUs, drivers, OS.

    With --inventory, --json prints {host: profile, or {host, status, message} when it has none}; the
    exit status is 4 when a host was unreachable, 3 when its probe failed."""
    if inventory is not None:
        if from_bundle or save_bundle:
            raise UsageError("--inventory cannot be combined with --from-bundle or --save-bundle")
        _probe_inventory(inventory, limit, as_json)
        return
    if limit is not None:
        raise UsageError("--limit needs --inventory")
    from dlsetup.probe import probe as run_probe

    profile = run_probe(bundle=from_bundle, save_bundle=save_bundle)
    if as_json:
        click.echo(json.dumps(profile.to_dict(), indent=2))
        return
    from rich.console import Console

    from dlsetup.ui.probe_view import render_profile

    render_profile(profile, Console())


def _probe_inventory(inventory: Path, limit: str | None, as_json: bool) -> None:
    from dlsetup.fleet import ProbeFailure, probe_fleet, raise_for_failures
    from dlsetup.inventory import load_inventory

    outcomes = probe_fleet(load_inventory(inventory, limit))
    if as_json:
        click.echo(json.dumps({name: o.to_dict() for name, o in outcomes.items()}, indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape

        from dlsetup.ui.probe_view import render_profile

        console = Console()
        for name, outcome in outcomes.items():
            if isinstance(outcome, ProbeFailure):
                console.print(f"[bold red]{escape(name)}: {outcome.status}[/] {escape(outcome.message)}")
            else:
                render_profile(outcome, console)
    raise_for_failures(outcomes)
