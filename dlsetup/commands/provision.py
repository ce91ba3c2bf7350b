"""``dlsetup provision``: probe -> plan -> show -> confirm -> run ``playbooks/site.yml``, per host."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import click

from dlsetup.commands.plan import plan as _plan_command
from dlsetup.errors import (EXIT_FAILED, EXIT_HOSTS_FAILED, EXIT_PRIVILEGES, EXIT_UNREACHABLE, DlsetupError,
                            UsageError)

if TYPE_CHECKING:
    from dlsetup.inventory import Inventory
    from dlsetup.plan import Plan, Request
    from dlsetup.runner import RunResult

#: the request options of ``dlsetup plan`` (--config, --framework, --cuda, --pip-find-links, ...), shared
REQUEST_OPTIONS = [p for p in _plan_command.params if p.name not in ("from_bundle", "as_json", "emit_vars")]
REBOOT_TASK = "Read the dlsetup reboot-required marker"


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path),
              help="Ansible inventory (file or folder); without it, this machine is provisioned.")
@click.option("-l", "--limit", help="Only the inventory hosts this pattern selects.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before changing the hosts.")
@click.option("-C", "--check", is_flag=True, help="Report what would change; change nothing.")
@click.option("-D", "--diff", is_flag=True, help="Show the changes made to files.")
@click.option("-t", "--tags", multiple=True, help="Run only the roles with these tags (repeatable).")
@click.option("--skip-tags", multiple=True, help="Skip the roles with these tags (repeatable).")
@click.option("-e", "--extra-vars", multiple=True, help="KEY=VALUE or @file, as ansible-playbook -e (repeatable).")
@click.option("--become/--no-become", default=None,
              help="Escalate privileges on every host (default: where the connection user is not root).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON summary per host.")
def provision(inventory: Optional[Path], limit: Optional[str], yes: bool, check: bool, diff: bool,
              tags: Tuple[str, ...], skip_tags: Tuple[str, ...], extra_vars: Tuple[str, ...],
              become: Optional[bool], as_json: bool, config: Optional[Path], **options: Any) -> None:
    """Install the planned driver / CUDA or ROCm / framework stack, on this machine or a fleet."""
    from rich.console import Console

    from dlsetup.inventory import load_inventory, local_inventory
    from dlsetup.plan import load_request
    from dlsetup.runner import RunOptions, ansible_dir, check_extra_vars

    run_options = RunOptions(check=check, diff=diff, tags=tags, skip_tags=skip_tags, limit=limit,
                             extra_vars=check_extra_vars(extra_vars), become=become)
    playbooks = [ansible_dir() / "playbooks" / name for name in ("site.yml", "reboot_status.yml")]
    request = load_request(config, **options)
    if inventory is not None:
        targets = load_inventory(inventory, limit)
    elif limit not in (None, "localhost", "all"):
        raise UsageError(f"--limit {limit!r} matches no host: without --inventory the only host is localhost")
    else:
        targets = local_inventory()
    from dlsetup.plan.render import render_plan

    console = Console(stderr=as_json)
    plans, roots = _plan_hosts(targets, request)
    for plan in plans.values():
        render_plan(plan, console)
    host_vars = _host_vars(plans, roots, targets.connection_vars(), become)
    if not (yes or check):
        if not sys.stdin.isatty():
            raise UsageError("refusing to change hosts without confirmation: pass --yes")
        click.confirm(f"Provision {len(plans)} host(s) as planned?", abort=True, err=True)

    from dlsetup.runner import run_playbooks
    from dlsetup.runner.progress import summary

    result = run_playbooks(playbooks, targets.sources, hosts=targets.hosts, host_vars=host_vars, options=run_options,
                           reboot_task=REBOOT_TASK, console=Console(stderr=True))
    if result.error:
        raise DlsetupError(f"ansible-playbook could not run: {result.error}", EXIT_FAILED)
    Console(stderr=True).print(summary(result))
    if as_json:
        for host in result.hosts:
            plan = plans.get(host.host)
            roles = list(plan.roles) if plan is not None else []
            click.echo(json.dumps({**host.to_dict(), "check": check, "roles": roles}))
    _raise_for(result)


provision.params.extend(REQUEST_OPTIONS)


def _plan_hosts(targets: Inventory, request: Request) -> Tuple[Dict[str, Plan], Dict[str, bool]]:
    """Probe every target (locally, or remotely per host) and plan each: (plans, connection user is root)."""
    from dlsetup.plan import make_plan

    if targets.local:
        from dlsetup.inventory import LOCALHOST
        from dlsetup.probe import probe

        profiles = {LOCALHOST: probe()}
        roots = {LOCALHOST: os.geteuid() == 0}
    else:
        from dlsetup.remote import probe_hosts

        remote = probe_hosts(targets)
        profiles = {name: host.profile for name, host in remote.items()}
        roots = {name: host.root for name, host in remote.items()}
    plans = {}
    for name, profile in profiles.items():
        try:
            plans[name] = make_plan(profile, request)
        except UsageError as err:
            raise type(err)(f"{name}: {err}") from None
    return plans, roots


def _host_vars(plans: Mapping[str, Plan], roots: Mapping[str, bool], connection: Mapping[str, Mapping[str, Any]],
               become: Optional[bool]) -> Dict[str, Dict[str, Any]]:
    """Each host's variables for the run: its plan, how to reach it, and whether to escalate."""
    host_vars = {}
    for name, plan in plans.items():
        variables = {**plan.variables, **connection.get(name, {})}
        if not roots[name]:
            if become is False:
                raise DlsetupError(f"{name}: the connection user is not root and --no-become was given",
                                   EXIT_PRIVILEGES)
            variables["ansible_become"] = True
        host_vars[name] = variables
    return host_vars


def _raise_for(result: RunResult) -> None:
    """Exit status from the per-host outcome: 4 unreachable, 5 missing privileges, 3 failed."""
    unreachable = [h.host for h in result.hosts if h.status == "unreachable"]
    failed = [h for h in result.hosts if h.status == "failed"]
    if unreachable:
        raise DlsetupError(f"{len(unreachable)} host(s) unreachable: {', '.join(unreachable)}", EXIT_UNREACHABLE)
    denied = [h for h in failed if h.failure is not None and h.failure.privileges]
    if denied:
        first = denied[0]
        raise DlsetupError(f"missing privileges on {first.host}: {first.failure.message}", EXIT_PRIVILEGES)
    if failed:
        first = failed[0]
        where = f" ({first.failure.task}: {first.failure.message})" if first.failure else ""
        raise DlsetupError(f"{len(failed)} host(s) failed, first {first.host}{where}", EXIT_HOSTS_FAILED)
