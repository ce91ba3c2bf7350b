"""``dlsetup provision``: probe -> plan -> show -> confirm -> run ``playbooks/site.yml``, per host.

Thin: the workflow is :mod:`dlsetup.provisioning`, the plans on the terminal :mod:`dlsetup.ui.plans`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Tuple

import click

from dlsetup.commands.plan import plan as _plan_command
from dlsetup.errors import UsageError

#: the request options of ``dlsetup plan`` (--config, --framework, --cuda, --pip-find-links, ...), shared
REQUEST_OPTIONS = [p for p in _plan_command.params if p.name not in ("from_bundle", "as_json", "emit_vars")]


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path),
              help="Ansible inventory (file or folder); without it, this machine is provisioned.")
@click.option("-l", "--limit", help="Only the inventory hosts this pattern selects.")
@click.option("--retry-failed", is_flag=True,
              help="Only the hosts that failed or were unreachable in the last run of this inventory.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before changing the hosts.")
@click.option("-C", "--check", is_flag=True, help="Report what would change; change nothing.")
@click.option("-D", "--diff", is_flag=True, help="Show the changes made to files.")
@click.option("-t", "--tags", multiple=True, help="Run only the roles with these tags (repeatable).")
@click.option("--skip-tags", multiple=True, help="Skip the roles with these tags (repeatable).")
@click.option("-e", "--extra-vars", multiple=True, help="KEY=VALUE or @file, as ansible-playbook -e (repeatable).")
@click.option("--become/--no-become", default=None,
              help="Escalate privileges on every host (default: where the connection user is not root).")
@click.option("--reboot", is_flag=True,
              help="Reboot the remote hosts that need it and go on; never the machine running dlsetup.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON summary per host.")
@click.option("--mirror", help="Take every package and wheel from this dlsetup mirror (a folder or an http(s) URL).")
@click.option("--mirror-fingerprint", help="The mirror key's fingerprint (default: this machine's mirror key, "
                                           "else the one the mirror folder records).")
@click.option("--no-cache", is_flag=True,
              help="A fleet run without --mirror: each host downloads for itself (no controller-side cache).")
def provision(inventory: Optional[Path], limit: Optional[str], retry_failed: bool, yes: bool, check: bool,
              diff: bool, tags: Tuple[str, ...], skip_tags: Tuple[str, ...], extra_vars: Tuple[str, ...],
              become: Optional[bool], reboot: bool, as_json: bool, config: Optional[Path], no_cache: bool,
              **options: Any) -> None:
    """Install the planned driver / CUDA or ROCm / framework stack, on this machine or a fleet.

    Host keys are checked: accept a new host's key deliberately first (ssh-keyscan HOST >> ~/.ssh/known_hosts
    after checking its fingerprint), or set ANSIBLE_HOST_KEY_CHECKING=False for a run you trust.

    Nothing is rebooted unless --reboot is given, and the machine running dlsetup never is: the summary
    says which hosts need a reboot."""
    from rich.console import Console

    from dlsetup import provisioning
    from dlsetup.plan import load_request
    from dlsetup.runner import RunOptions, check_extra_vars
    from dlsetup.runner.progress import print_summary
    from dlsetup.runner.terminal import require_pty
    from dlsetup.ui.plans import show_plans

    require_pty()  # before probing and asking: a host Ansible cannot run on is told so at once
    checked_vars = check_extra_vars(extra_vars)
    playbooks = provisioning.playbooks(reboot)
    request = load_request(config, **options)
    targets, limit = provisioning.select_targets(inventory, limit, retry_failed)
    request = provisioning.with_jupyter_user(request, targets.local)

    plans, roots, failures = provisioning.plan_hosts(targets, request)
    show_plans(plans, failures, Console(stderr=as_json))
    if plans and not (yes or check):
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on (standard input is not a terminal): "
                             "pass --yes to provision without asking, or --check to see what would change")
        click.confirm(f"Provision {len(plans)} host(s) as planned?", abort=True, err=True)

    run_options = RunOptions(check=check, diff=diff, tags=tags, skip_tags=skip_tags, limit=limit,
                             extra_vars=checked_vars, become=become)
    mirror = provisioning.choose_mirror(request, targets, len(plans), no_cache, checked_vars, Console(stderr=True))
    result = provisioning.run(playbooks, targets, plans, roots, failures, run_options, reboot, Console(stderr=True),
                              mirror)
    print_summary(result, Console(stderr=True))
    for access in provisioning.jupyter_access(result, plans, targets.local, check):
        click.echo(access, err=True)
    if as_json:
        for line in provisioning.json_lines(result, plans, check):
            click.echo(json.dumps(line))
    provisioning.raise_for(result)


provision.params.extend(REQUEST_OPTIONS)
