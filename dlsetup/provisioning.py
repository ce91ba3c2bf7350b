"""Provisioning, the workflow of ``dlsetup provision``: targets -> probe -> a plan per host -> run
``playbooks/site.yml`` (and the reboot playbooks) -> one result per host.

With an inventory every host is probed in parallel and planned on its own. Hosts that cannot be probed or
planned are left out of the run and reported with the others: the result has every host, in inventory
order. The hosts that failed or were unreachable are kept in a retry file per inventory, which
``--retry-failed`` runs again. Showing the plans, asking and printing are the command's
(:mod:`dlsetup.commands.provision`, :mod:`dlsetup.ui.plans`); nothing here prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from dlsetup.errors import (EXIT_FAILED, EXIT_HOSTS_FAILED, EXIT_PRIVILEGES, EXIT_UNREACHABLE, DlsetupError,
                            UsageError)

if TYPE_CHECKING:
    from rich.console import Console

    from dlsetup.fleet import ProbeFailure
    from dlsetup.inventory import Inventory
    from dlsetup.mirror.workflow import MirrorRun
    from dlsetup.plan import Plan, Request
    from dlsetup.runner import HostResult, RunOptions, RunResult

__all__ = ["PROBE_TASK", "REBOOT_TASK", "choose_mirror", "host_vars", "json_lines", "jupyter_access", "plan_hosts",
           "playbooks", "raise_for", "run", "select_targets", "with_failures", "with_jupyter_user"]

#: the task of playbooks/reboot_status.yml whose ``stat`` tells that a host needs a reboot
REBOOT_TASK = "Read the dlsetup reboot-required marker"
#: the task a host that could not be probed or planned is reported under
PROBE_TASK = "dlsetup remote probe"


def playbooks(reboot: bool) -> List[Path]:
    """The playbooks of a provisioning run, in order: the roles, with ``reboot`` the reboots, the markers."""
    from dlsetup.runner import ansible_dir

    names = ("site.yml", "reboot.yml", "reboot_status.yml") if reboot else ("site.yml", "reboot_status.yml")
    return [ansible_dir() / "playbooks" / name for name in names]


def select_targets(inventory: Optional[Path], limit: Optional[str], retry_failed: bool
                   ) -> Tuple[Inventory, Optional[str]]:
    """The hosts to provision and the ``--limit`` of the run: the inventory's hosts ``limit`` selects, with
    ``retry_failed`` those that failed or were unreachable last time, without an inventory this machine."""
    from dlsetup.fleet import retry_file, retry_limit
    from dlsetup.inventory import load_inventory, local_inventory
    from dlsetup.runner import cache_dir

    if retry_failed:
        if inventory is None or limit is not None:
            raise UsageError("--retry-failed needs --inventory and takes no --limit")
        limit = retry_limit(retry_file([str(inventory)], cache_dir()))
    if inventory is not None:
        return load_inventory(inventory, limit), limit
    if limit not in (None, "localhost", "all"):
        raise UsageError(f"--limit {limit!r} matches no host: without --inventory the only host is localhost")
    return local_inventory(), limit


def plan_hosts(targets: Inventory, request: Request
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


def _facts(request: Request) -> Callable[[], Tuple[Any, str]]:
    """make_plan's live facts and today, asked of the package indexes once, when the first host needs them."""
    from datetime import date

    from dlsetup.plan.live import live_facts

    asked: list = []

    def get() -> Tuple[Any, str]:
        if not asked:
            asked.append((live_facts(request), date.today().isoformat()))
        return asked[0]
    return get


def host_vars(plans: Mapping[str, Plan], roots: Mapping[str, Optional[bool]],
              connection: Mapping[str, Mapping[str, Any]], become: Optional[bool],
              reboot: bool = False) -> Dict[str, Dict[str, Any]]:
    """Each host's variables for the run: its plan, how to reach it, whether to escalate (where the
    connection user is not root; as the inventory says where that is not known) and to reboot."""
    variables_of = {}
    for name, plan in plans.items():
        variables = {**plan.variables, **connection.get(name, {})}
        if reboot:
            variables["dlsetup_reboot"] = True
        if roots[name] is False:
            if become is False:
                raise DlsetupError(f"{name}: the connection user is not root and --no-become was given",
                                   EXIT_PRIVILEGES)
            variables["ansible_become"] = True
        variables_of[name] = variables
    return variables_of


def choose_mirror(request: Request, targets: Inventory, hosts: int, no_cache: bool, extra_vars: Sequence[str] = (),
                  console: Optional[Console] = None) -> MirrorRun:
    """The mirror a run takes its packages from: ``--mirror``, else the controller's cache for a fleet of two or
    more hosts (unless ``no_cache``), else none (:func:`dlsetup.mirror.workflow.choose`); ``extra_vars`` the
    run's ``-e`` values, which must leave the mirror's variables alone."""
    from dlsetup.mirror.workflow import cache_folder, choose
    from dlsetup.runner import cache_dir, read_extra_vars

    def warn(line: str) -> None:
        if console is not None:
            console.print(f"[yellow]warning:[/] {line}")

    return choose(request, hosts, no_cache, cache_folder(cache_dir(), targets.sources),
                  list(read_extra_vars(extra_vars)), warn)


def run(books: Sequence[Path], targets: Inventory, plans: Mapping[str, Plan], roots: Mapping[str, Optional[bool]],
        failures: Sequence[ProbeFailure], options: RunOptions, reboot: bool, console: Console,
        mirror: Optional[MirrorRun] = None) -> RunResult:
    """Run the playbooks ``books`` on the planned hosts (none: no run), then add a result for each host that
    could not be probed or planned, and keep the failed and unreachable hosts for ``--retry-failed``.

    ``options`` are the run's; its limit becomes the planned hosts when some hosts could not be planned.
    With ``mirror`` the mirror is checked (or the cache built) before any change and served during the run.
    A run that could not start at all raises :class:`DlsetupError` (exit 1) naming its record."""
    from dataclasses import replace

    from dlsetup.fleet import retry_file, save_retry
    from dlsetup.mirror.workflow import MirrorRun, mirror_for_run, run_roles
    from dlsetup.runner import RunResult, cache_dir, run_playbooks

    result = RunResult((), 0)
    if plans:
        # the hosts that could not be probed are left out: limit the run to the planned ones
        options = replace(options, limit=",".join(plans) if failures else options.limit)
        variables = host_vars(plans, roots, targets.connection_vars(), options.become, reboot)
        # the mirror holds what the roles this run applies install (--tags/--skip-tags select roles)
        applied = {name: replace(plan, roles=run_roles(plan.roles, options.tags, options.skip_tags))
                   for name, plan in plans.items()}
        with mirror_for_run(mirror or MirrorRun(None), applied, console, targets.sources, variables) as add_mirror:
            # the mirror is checked before any change
            result = run_playbooks(books, targets.sources, hosts=list(plans), host_vars=add_mirror(variables),
                                   options=options, reboot_task=REBOOT_TASK, console=console,
                                   documents={"plans.json": {name: plan.to_dict() for name, plan in plans.items()}})
        if result.error:
            raise DlsetupError(f"ansible-playbook could not run: {result.error} (run record: {result.record})",
                               EXIT_FAILED)
    result = with_failures(result, failures, targets.hosts)
    if not targets.local and not options.check:
        save_retry(retry_file(list(targets.sources), cache_dir()), result.hosts)
    return result


def with_failures(result: RunResult, failures: Sequence[ProbeFailure], order: Sequence[str]) -> RunResult:
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


def json_lines(result: RunResult, plans: Mapping[str, Plan], check: bool) -> List[Dict[str, Any]]:
    """``provision --json``: one document per host, its outcome with the roles it was planned."""
    lines = []
    for host in result.hosts:
        plan = plans.get(host.host)
        roles = list(plan.roles) if plan is not None else []
        lines.append({**host.to_dict(), "check": check, "roles": roles})
    return lines


def raise_for(result: RunResult) -> None:
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


def with_jupyter_user(request: Request, local: bool) -> Request:
    """On this machine, --jupyter without --jupyter-user runs JupyterLab as whoever ran dlsetup (sudo's user);
    never as root. A fleet's hosts keep the request as it is (the role asks for the user there)."""
    if not (request.jupyter and not request.jupyter_user and local):
        return request
    from dataclasses import replace

    from dlsetup.jupyter import invoking_user

    user = invoking_user()
    if user is None:
        raise UsageError("--jupyter: JupyterLab never runs as root and dlsetup was run by root itself: "
                         "pass --jupyter-user NAME")
    return replace(request, jupyter_user=user)


def jupyter_access(result: RunResult, plans: Mapping[str, Plan], local: bool, check: bool) -> List[str]:
    """The URL and the ``ssh -L`` line of each host that got JupyterLab (never its token)."""
    if check:
        return []
    from dlsetup.jupyter import access_lines

    ok = {h.host for h in result.hosts if h.status not in ("failed", "unreachable")}
    return [line for host, plan in plans.items() if host in ok
            for line in access_lines(plan.variables, plan.host if local else host, local)]
