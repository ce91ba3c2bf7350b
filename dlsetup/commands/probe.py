"""``dlsetup probe``: what is this machine?"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the host profile as JSON (the documented schema).")
@click.option("--from-bundle", type=click.Path(path_type=Path), help="Read a saved bundle instead of this host.")
@click.option("--save-bundle", type=click.Path(path_type=Path), help="Also save everything read as a bundle.")
def probe(as_json: bool, from_bundle: Path | None, save_bundle: Path | None) -> None:
    """Read the hardware: CPU, memory, disks, GPUs, drivers, OS."""
    from dlsetup.probe import probe as run_probe

    profile = run_probe(bundle=from_bundle, save_bundle=save_bundle)
    if as_json:
        click.echo(json.dumps(profile.to_dict(), indent=2))
        return
    from rich.console import Console

    from dlsetup.ui.probe_view import render_profile

    render_profile(profile, Console())
