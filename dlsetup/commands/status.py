"""``dlsetup status``: is each host still what its plan says? Thin: the work is in :mod:`dlsetup.status`."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from dlsetup.commands.plan import plan as _plan_command
from dlsetup.errors import EXIT_FAILED, EXIT_HOSTS_FAILED, EXIT_UNREACHABLE, UsageError

#: the request options of ``dlsetup plan`` / ``provision`` (--config, --framework, --cuda, --venv, ...)
REQUEST_OPTIONS = [p for p in _plan_command.params if p.name not in ("from_bundle", "as_json", "emit_vars")]


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path),
              help="Ansible inventory: every host is read over its connection, one task per host, in parallel.")
@click.option("-l", "--limit", help="With --inventory: only the hosts this pattern selects.")
@click.option("--from-bundle", type=click.Path(path_type=Path), help="Compare a saved bundle instead of this host.")
@click.option("-e", "--extra-vars", multiple=True,
              help="Plan variables overridden as for dlsetup provision -e (KEY=VALUE or a JSON mapping; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print {host: status} as JSON (dlsetup report reads it).")
def status(inventory: Optional[Path], limit: Optional[str], from_bundle: Optional[Path], extra_vars: Tuple[str, ...],
           as_json: bool, config: Optional[Path], **options: Any) -> None:
    """Compare each host with its plan: driver and kernel modules, CUDA, holds, framework venv, arrays, reboot.

    Takes the plan options of dlsetup provision, so the comparison is with the plan provision would
    apply. Exit 0 when every host is in sync, 1 on drift (each drift names the command that fixes it),
    3 when a host could not be read, 4 when a host was unreachable."""
    from dlsetup.fleet import ProbeFailure
    from dlsetup.plan import load_request
    from dlsetup.plan.live import live_facts
    from dlsetup.runner import read_extra_vars
    from dlsetup.status import HostStatus, read_inventory, read_local, status_of

    request = load_request(config, **options)
    extra = read_extra_vars(extra_vars)
    from dlsetup.plan.request import venv_paths

    # every framework venv, joined by ":" (which no venv path may hold): one read of the host for all
    venv = str(extra.get("frameworks_venv_path") or ":".join(venv_paths(request)))
    if inventory is not None:
        if from_bundle is not None:
            raise UsageError("--inventory cannot be combined with --from-bundle")
        outcomes = read_inventory(inventory, limit, venv)
    else:
        if limit is not None:
            raise UsageError("--limit needs --inventory")
        profile, installed = read_local(from_bundle, venv)
        outcomes = {profile.hostname or "localhost": (profile, installed)}
    live = live_facts(request)
    today = date.today().isoformat()
    results: Dict[str, Any] = {}
    for name, outcome in outcomes.items():
        if isinstance(outcome, ProbeFailure):
            results[name] = outcome
            continue
        try:
            results[name] = status_of(name, outcome[0], outcome[1], request, extra, live, today)
        except UsageError as err:
            results[name] = ProbeFailure(name, "failed", f"no plan: {err}")
    if as_json:
        click.echo(json.dumps({name: r.to_dict() for name, r in results.items()}, indent=2))
    else:
        _print(results)
    failures = [r for r in results.values() if isinstance(r, ProbeFailure)]
    if any(f.status == "unreachable" for f in failures):
        sys.exit(EXIT_UNREACHABLE)
    if failures:
        sys.exit(EXIT_HOSTS_FAILED)
    if any(isinstance(r, HostStatus) and r.drift for r in results.values()):
        sys.exit(EXIT_FAILED)


status.params.extend(REQUEST_OPTIONS)


def _print(results: Dict[str, Any]) -> None:
    from rich.console import Console

    from dlsetup.status import render

    Console().print(render(results))
