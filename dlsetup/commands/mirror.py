"""``dlsetup mirror``: fetch once, on this machine, everything the plans of a fleet install, into one
self-contained folder signed with a key of its own (see :mod:`dlsetup.mirror`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import click

from dlsetup.commands.plan import plan as _plan_command
from dlsetup.errors import EXIT_HOSTS_FAILED, DlsetupError, UsageError

#: the request options of ``dlsetup plan``, shared
REQUEST_OPTIONS = [p for p in _plan_command.params if p.name not in ("from_bundle", "as_json", "emit_vars")]


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path), help="Plan every host of this inventory.")
@click.option("-l", "--limit", help="Only the inventory hosts this pattern selects.")
@click.option("--from-bundle", "bundles", multiple=True, type=click.Path(path_type=Path),
              help="Plan for a saved bundle (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The mirror folder (made, or brought up to date).")
def mirror(inventory: Optional[Path], limit: Optional[str], bundles: Tuple[Path, ...], output: Path,
           config: Optional[Path], **options: Any) -> None:
    """Fetch the packages and wheels the plans install, once, into a signed mirror folder.

    Plans every host as provision would (an inventory, saved bundles, or this machine), then downloads on this
    machine the .deb packages with their dependencies for each OS release and architecture (the
    distribution's from this machine's apt sources, the vendors' from the plan's repositories, their keys
    checked against the pinned fingerprints) and the wheels for each host's Python and platform. Writes an
    apt repository per release signed with the mirror's own key, a PEP 503 index and a signed manifest. A
    re-run fetches only what changed. Use it with: dlsetup provision --mirror DIR."""
    from rich.console import Console

    from dlsetup.ui.plans import render_groups
    from dlsetup.mirror.workflow import build_mirror, plan_targets, render_summary
    from dlsetup.plan import load_request

    request = load_request(config, **options)
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output} exists and is not a folder")
    plans, failures = plan_targets(inventory, limit, bundles, request)
    console = Console(stderr=True)
    if not plans:
        raise DlsetupError("no host could be planned: " + "; ".join(f"{f.host}: {f.message}" for f in failures),
                           EXIT_HOSTS_FAILED)
    if failures or len(plans) > 1:
        from dlsetup.fleet import group_plans

        console.print(render_groups(group_plans(plans), failures))
    manifest = build_mirror(output, plans, console)
    render_summary(manifest, output, console)
    if failures:
        raise DlsetupError(f"{len(failures)} host(s) could not be planned and are not in the mirror: "
                           + ", ".join(f.host for f in failures), EXIT_HOSTS_FAILED)


mirror.params.extend(REQUEST_OPTIONS)
