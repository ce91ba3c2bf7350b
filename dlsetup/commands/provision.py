"""``dlsetup provision``: probe -> plan -> show -> confirm -> run ``playbooks/site.yml``, per host.

With an inventory every host is probed in parallel and planned on its own; hosts whose plans are the
same are shown as one group. Hosts that cannot be probed are left out of the run and reported with the
others: the summary (and ``--json``) has every host. The hosts that failed or were unreachable are
kept in a retry file per inventory, which ``--retry-failed`` runs again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple

import click

from dlsetup.commands.plan import plan as _plan_command
from dlsetup.errors import (EXIT_FAILED, EXIT_HOSTS_FAILED, EXIT_PRIVILEGES, EXIT_UNREACHABLE, DlsetupError,
                            UsageError)

if TYPE_CHECKING:
    from dlsetup.fleet import ProbeFailure
    from dlsetup.inventory import Inventory
    from dlsetup.plan import Plan, Request
    from dlsetup.runner import HostResult, RunResult

#: the request options of ``dlsetup plan`` (--config, --framework, --cuda, --pip-find-links, ...), shared
REQUEST_OPTIONS = [p for p in _plan_command.params if p.name not in ("from_bundle", "as_json", "emit_vars")]
REBOOT_TASK = "Read the dlsetup reboot-required marker"
#: the task a host that could not be probed or planned is reported under
PROBE_TASK = "dlsetup remote probe"


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

    from dlsetup.fleet import retry_file, retry_limit, save_retry
    from dlsetup.inventory import load_inventory, local_inventory
    from dlsetup.plan import load_request
    from dlsetup.runner import ansible_dir, cache_dir, check_extra_vars

    from dlsetup.runner.terminal import require_pty

    require_pty()  # before probing and asking: a host Ansible cannot run on is told so at once
    checked_vars = check_extra_vars(extra_vars)
    names = ("site.yml", "reboot.yml", "reboot_status.yml") if reboot else ("site.yml", "reboot_status.yml")
    playbooks = [ansible_dir() / "playbooks" / name for name in names]
    request = load_request(config, **options)
    if retry_failed:
        if inventory is None or limit is not None:
            raise UsageError("--retry-failed needs --inventory and takes no --limit")
        limit = retry_limit(retry_file([str(inventory)], cache_dir()))
    if inventory is not None:
        targets = load_inventory(inventory, limit)
    elif limit not in (None, "localhost", "all"):
        raise UsageError(f"--limit {limit!r} matches no host: without --inventory the only host is localhost")
    else:
        targets = local_inventory()

    console = Console(stderr=as_json)
    plans, roots, failures = _plan_hosts(targets, request)
    _show_plans(plans, failures, console)
    if plans and not (yes or check):
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on (standard input is not a terminal): "
                             "pass --yes to provision without asking, or --check to see what would change")
        click.confirm(f"Provision {len(plans)} host(s) as planned?", abort=True, err=True)

    from dlsetup.runner import RunOptions, RunResult, run_playbooks
    from dlsetup.runner.progress import print_summary

    result = RunResult((), 0)
    if plans:
        # the hosts that could not be probed are left out: limit the run to the planned ones
        run_options = RunOptions(check=check, diff=diff, tags=tags, skip_tags=skip_tags,
                                 limit=",".join(plans) if failures else limit, extra_vars=checked_vars,
                                 become=become)
        from dlsetup.mirror.workflow import cache_folder, choose, mirror_for_run

        mirror = choose(request, len(plans), no_cache, cache_folder(cache_dir(), targets.sources))
        host_vars = _host_vars(plans, roots, targets.connection_vars(), become, reboot)
        with mirror_for_run(mirror, plans, Console(stderr=True), targets.sources, host_vars) as add_mirror:
            # the mirror is checked before any change
            result = run_playbooks(playbooks, targets.sources, hosts=list(plans), host_vars=add_mirror(host_vars),
                                   options=run_options, reboot_task=REBOOT_TASK, console=Console(stderr=True),
                                   documents={"plans.json": {name: plan.to_dict() for name, plan in plans.items()}})
        if result.error:
            raise DlsetupError(f"ansible-playbook could not run: {result.error} (run record: {result.record})",
                               EXIT_FAILED)
    result = _with_failures(result, failures, targets.hosts)
    if not targets.local and not check:
        save_retry(retry_file(list(targets.sources), cache_dir()), result.hosts)
    print_summary(result, Console(stderr=True))
    if as_json:
        for host in result.hosts:
            plan = plans.get(host.host)
            roles = list(plan.roles) if plan is not None else []
            click.echo(json.dumps({**host.to_dict(), "check": check, "roles": roles}))
    _raise_for(result)


provision.params.extend(REQUEST_OPTIONS)


def _plan_hosts(targets: Inventory, request: Request
                ) -> Tuple[Dict[str, Plan], Dict[str, Optional[bool]], Tuple[ProbeFailure, ...]]:
    """Probe every target (locally, or remotely in parallel) and plan each that answered.

    Returns (plans, whether each planned host's connection user is root, the hosts without a plan)."""
    from dlsetup.fleet import ProbeFailure
    from dlsetup.plan import make_plan

    _live = _facts(request)  # what the package indexes publish, asked once (see dlsetup plan)
    if targets.local:
        from dlsetup.inventory import LOCALHOST
        from dlsetup.probe import probe

        plan = make_plan(probe(), request, *_live())
        return {LOCALHOST: plan}, {LOCALHOST: os.geteuid() == 0}, ()

    from dlsetup.remote import probe_hosts

    plans: Dict[str, Plan] = {}
    roots: Dict[str, Optional[bool]] = {}
    failures = []
    for name, host in probe_hosts(targets, distinct=True).items():
        if isinstance(host, ProbeFailure):
            failures.append(host)
            continue
        try:
            plans[name] = make_plan(host.profile, request, *_live())
        except UsageError as err:
            failures.append(ProbeFailure(name, "failed", f"no plan: {err}"))
            continue
        roots[name] = host.root
    return plans, roots, tuple(failures)


def _facts(request: Request) -> Any:
    """make_plan's live facts and today, asked of the package indexes once, when the first host needs them."""
    from datetime import date

    from dlsetup.commands.plan import live_facts

    asked: list = []

    def get() -> Tuple[Any, str]:
        if not asked:
            asked.append((live_facts(request), date.today().isoformat()))
        return asked[0]
    return get


def _show_plans(plans: Mapping[str, Plan], failures: Sequence[ProbeFailure], console: Any) -> None:
    """One host: its whole plan with the reasons; a fleet: the plans grouped, then the hosts without one."""
    if len(plans) == 1 and not failures:
        from dlsetup.plan.render import render_plan

        render_plan(next(iter(plans.values())), console)
        return
    from rich.markup import escape

    from dlsetup.fleet import group_plans, render_groups

    console.print(render_groups(group_plans(plans), failures))
    for host, plan in plans.items():
        for disk in plan.destroys:
            console.print(f"[bold red]DESTROY DATA[/bold red] on {escape(host)}: {escape(disk)}"
                          " - wiped by --destroy-data")


def _host_vars(plans: Mapping[str, Plan], roots: Mapping[str, Optional[bool]],
               connection: Mapping[str, Mapping[str, Any]], become: Optional[bool],
               reboot: bool = False) -> Dict[str, Dict[str, Any]]:
    """Each host's variables for the run: its plan, how to reach it, whether to escalate (where the
    connection user is not root; as the inventory says where that is not known) and to reboot."""
    host_vars = {}
    for name, plan in plans.items():
        variables = {**plan.variables, **connection.get(name, {})}
        if reboot:
            variables["dlsetup_reboot"] = True
        if roots[name] is False:
            if become is False:
                raise DlsetupError(f"{name}: the connection user is not root and --no-become was given",
                                   EXIT_PRIVILEGES)
            variables["ansible_become"] = True
        host_vars[name] = variables
    return host_vars


def _with_failures(result: RunResult, failures: Sequence[ProbeFailure], order: Sequence[str]) -> RunResult:
    """``result`` with a host result for each host that could not be probed or planned, in inventory order."""
    from dlsetup.runner import HostResult, RunResult, TaskFailure

    hosts: Dict[str, HostResult] = {h.host: h for h in result.hosts}
    for failure in failures:
        unreachable = failure.status == "unreachable"
        hosts[failure.host] = HostResult(failure.host, failed=int(not unreachable), unreachable=int(unreachable),
                                         failure=TaskFailure(PROBE_TASK, failure.message, unreachable))
    ranked = {name: index for index, name in enumerate(order)}
    return RunResult(tuple(sorted(hosts.values(), key=lambda h: ranked.get(h.host, len(ranked)))), result.rc,
                     record=result.record)


def _raise_for(result: RunResult) -> None:
    """Exit status from the per-host outcome: 4 unreachable, 5 missing privileges, 3 failed.

    The message names every host that failed or was unreachable."""
    unreachable = [h.host for h in result.hosts if h.status == "unreachable"]
    failed = [h for h in result.hosts if h.status == "failed"]
    parts = [f"{len(unreachable)} host(s) unreachable: {', '.join(unreachable)}"] if unreachable else []
    if failed:
        parts.append(f"{len(failed)} host(s) failed: " + "; ".join(_failed(h) for h in failed))
    if unreachable:
        raise DlsetupError("; ".join(parts), EXIT_UNREACHABLE)
    denied = [h for h in failed if h.failure is not None and h.failure.privileges]
    if denied:
        first = denied[0]
        assert first.failure is not None
        raise DlsetupError(f"missing privileges on {first.host}: {first.failure.message}", EXIT_PRIVILEGES)
    if failed:
        raise DlsetupError("; ".join(parts), EXIT_HOSTS_FAILED)


def _failed(host: HostResult) -> str:
    return f"{host.host} ({host.failure.task}: {host.failure.message})" if host.failure else host.host
