"""The mirror's workflows: plan the hosts and build a mirror (``dlsetup mirror``), and use one in a provision
run (``--mirror``, or the controller-side cache a fleet run builds on the fly)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from dlsetup.errors import UsageError

#: the fewest hosts for which a provision run without --mirror fetches through the controller's cache
CACHE_MIN_HOSTS = 2


def contents_for(plans: Mapping[str, Any]) -> Dict[str, Any]:
    """Each host's :class:`~dlsetup.mirror.contents.Contents` (one line for a plan a mirror cannot carry)."""
    from dlsetup.mirror.contents import NotCovered, contents_of
    from dlsetup.mirror.roles import role_data

    data: Dict[Tuple[str, str], Any] = {}
    out = {}
    for host, plan in plans.items():
        key = (plan.target["os"], plan.target["version"])
        if key not in data:
            data[key] = role_data(*key)
        try:
            out[host] = contents_of(host, plan, data[key])
        except NotCovered as err:
            raise UsageError(f"{host}: {err}") from None
    return out


def plan_targets(inventory: Optional[Path], limit: Optional[str], bundles: Sequence[Path], request: Any
                 ) -> Tuple[Dict[str, Any], List[Any]]:
    """Plan every host as provision would: an inventory's hosts (probed in parallel), saved bundles, or
    this machine. Returns (plans by host, the hosts that have none, as :class:`dlsetup.fleet.ProbeFailure`)."""
    from datetime import date

    from dlsetup.plan.live import live_facts
    from dlsetup.fleet import ProbeFailure
    from dlsetup.plan import make_plan
    from dlsetup.probe import probe

    live = live_facts(request)
    today = date.today().isoformat()
    plans: Dict[str, Any] = {}
    failures: List[Any] = []
    for bundle in bundles:
        if not bundle.is_dir():
            raise UsageError(f"bundle directory not found: {bundle}")
        profile = probe(bundle=bundle)
        plans[str(bundle)] = make_plan(profile, request, live, today)
    if inventory is not None:
        from dlsetup.inventory import load_inventory
        from dlsetup.remote import probe_hosts

        for name, host in probe_hosts(load_inventory(inventory, limit)).items():
            if isinstance(host, ProbeFailure):
                failures.append(host)
                continue
            try:
                plans[name] = make_plan(host.profile, request, live, today)
            except UsageError as err:
                failures.append(ProbeFailure(name, "failed", f"no plan: {err}"))
    if not bundles and inventory is None:
        from dlsetup.inventory import LOCALHOST

        plans[LOCALHOST] = make_plan(probe(), request, live, today)
    return plans, failures


def progress_bar(console: Any) -> Any:
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)


def build_mirror(dest: Path, plans: Mapping[str, Any], console: Any) -> Dict[str, Any]:
    """Build (or bring up to date) the mirror of ``plans`` in ``dest``; returns its manifest."""
    from dlsetup.mirror.build import build

    contents = contents_for(plans)
    with progress_bar(console) as progress:
        return build(dest, list(contents.values()), progress)


def render_summary(manifest: Mapping[str, Any], dest: Path, console: Any) -> None:
    from rich.table import Table

    from dlsetup.mirror.build import sizes

    table = Table(title=f"mirror {dest}", title_justify="left", header_style="bold")
    for column in ("part", "files", "size"):
        table.add_column(column, justify="left" if column == "part" else "right")
    total = 0
    for part, (count, size) in sorted(sizes(manifest).items()):
        table.add_row(part, str(count), _human(size))
        total += size
    table.add_row("[bold]total[/]", str(len(manifest.get("files", {}))), f"[bold]{_human(total)}[/]")
    console.print(table)
    console.print(f"mirror key fingerprint: [bold]{manifest['fingerprint']}[/] (pin it with --mirror-fingerprint)")


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@dataclass
class MirrorRun:
    """How a provision run uses a mirror: ``source`` a folder or URL; None: no mirror (as today)."""

    source: Optional[str]
    fingerprint: Optional[str] = None
    cached: bool = False  #: the mirror is the controller's cache, built for this run


def choose(request: Any, hosts: int, no_cache: bool, cache: Path, extra_vars: Sequence[str] = (),
           warn: Callable[[str], None] = lambda line: None) -> MirrorRun:
    """The mirror a provision run uses: the one asked for, else the controller's cache for a fleet.

    ``extra_vars`` (the run's ``-e`` names) must not set what the mirror sets: Ansible's extra vars win over the
    mirror's variables and would send the hosts past it. With ``--mirror`` that is refused (an air-gapped host
    would fail mid-run); the cache is left out instead, with a line to ``warn``."""
    from dlsetup.mirror.use import MIRROR_VARIABLES

    clash = sorted(set(extra_vars) & MIRROR_VARIABLES)
    if request.mirror:
        if clash:
            raise UsageError(f"-e {clash[0]} conflicts with --mirror: the mirror sets it, so that the hosts take "
                             "every package and wheel from the mirror (drop the -e, or the --mirror)")
        return MirrorRun(request.mirror, request.mirror_fingerprint)
    if hosts >= CACHE_MIN_HOSTS and not no_cache:
        if clash:
            warn(f"no controller-side cache: -e {clash[0]} sets where the hosts download from, so each host "
                 "downloads for itself")
            return MirrorRun(None)
        return MirrorRun(str(cache), None, cached=True)
    return MirrorRun(None)


def run_roles(roles: Sequence[str], tags: Sequence[str] = (), skip_tags: Sequence[str] = ()) -> Tuple[str, ...]:
    """The planned ``roles`` a run with ``--tags``/``--skip-tags`` applies (playbooks/site.yml tags each role
    with its name): a mirror for the run needs only theirs. A tag that names no role (a task's own) may select
    tasks of any role: then every role stays, as far as ``tags`` go."""
    from dlsetup.plan.planner import ROLE_ORDER

    def names(values: Sequence[str]) -> set:
        return {t.strip() for value in values for t in value.split(",") if t.strip()}

    wanted, skipped = names(tags), names(skip_tags)
    narrow = bool(wanted) and wanted <= set(ROLE_ORDER)
    return tuple(r for r in roles if (not narrow or r in wanted) and r not in skipped)


def _cache_covers(root: Path, contents: Mapping[str, Any]) -> bool:
    """Whether the controller's cache holds everything the plans install already (nothing to fetch)."""
    from dlsetup.mirror.verify import MirrorRefused, check_covers, verify

    if not (root / "manifest.json").is_file():
        return False
    try:
        check_covers(verify(root), list(contents.values()))
    except MirrorRefused:
        return False
    return True


def cache_folder(cache_dir: Path, sources: Sequence[str]) -> Path:
    """The controller's mirror cache of one inventory."""
    key = hashlib.sha256("\0".join(str(Path(s).absolute()) for s in sources).encode()).hexdigest()[:16]
    return cache_dir / "mirror" / key


#: adds the mirror's variables to the hosts' variables
AddMirror = Callable[[Dict[str, Dict[str, Any]]], Dict[str, Dict[str, Any]]]
#: the task of installed.yml whose output says which packages a host has
INSTALLED_TASK = "dlsetup mirror installed packages"


def lacking_only(contents: Mapping[str, Any], sources: Sequence[str], host_vars: Mapping[str, Mapping[str, Any]]
                 ) -> Dict[str, Any]:
    """``contents`` with only the apt packages each host lacks (asked of the hosts in one read-only run):
    the cache fetches no distribution package a host has already. A host that could not be asked keeps
    all of its packages."""
    import dataclasses

    from dlsetup.runner import RunOptions, run_playbooks

    wanted = {host: {**host_vars.get(host, {}), "dlsetup_mirror_wanted": list(item.all_packages())}
              for host, item in contents.items()}
    result = run_playbooks([Path(__file__).with_name("installed.yml")], sources, host_vars=wanted,
                           hosts=list(wanted), options=RunOptions(limit=",".join(wanted)), capture=[INSTALLED_TASK],
                           command="provision-mirror-installed")
    out = {}
    for host, item in contents.items():
        captured = next((h.captured.get(INSTALLED_TASK) for h in result.hosts if h.host == host), None)
        if not captured or "stdout" not in captured:
            out[host] = item
            continue
        have = {line.split()[-1] for line in str(captured["stdout"]).splitlines()
                if len(line.split()) >= 2 and line.split()[0][1:2] == "i"}
        alternatives = () if any(all(p in have for p in option) for option in item.alternatives) \
            else item.alternatives
        out[host] = dataclasses.replace(item, packages=tuple(p for p in item.packages if p not in have),
                                        alternatives=alternatives)
    return out


@contextlib.contextmanager
def mirror_for_run(run: MirrorRun, plans: Mapping[str, Any], console: Any, sources: Sequence[str] = (),
                   host_vars: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Iterator[AddMirror]:
    """Check (or, for the cache, build) the mirror, serve a folder on 127.0.0.1 while the block runs, and
    yield the function that adds the mirror's variables to the hosts' variables. Without a mirror the
    function returns them as they are. A mirror that is tampered with or lacks a host's packages raises
    :class:`~dlsetup.errors.UsageError` (exit 2) before anything runs."""
    if run.source is None or not plans:
        yield lambda host_vars: host_vars
        return
    from dlsetup.mirror import use
    from dlsetup.mirror.build import build

    contents = contents_for(plans)
    if run.cached:  # a fleet that may have the distribution's packages already: only what hosts lack
        contents = lacking_only(contents, sources, host_vars or {})
    if run.cached and not _cache_covers(Path(str(run.source)), contents):
        console.print(f"fleet of {len(plans)} hosts: fetching each package and wheel once, into {run.source} "
                      "(--no-cache: each host downloads for itself)")
        try:
            with progress_bar(console) as progress:
                build(Path(str(run.source)), list(contents.values()), progress)
        except UsageError as err:
            console.print(f"[yellow]warning:[/] no controller-side cache, each host downloads for itself: {err}")
            yield lambda host_vars: host_vars
            return
    with progress_bar(console) as progress:
        mirror, local = use.prepare(run.source, run.fingerprint, list(contents.values()), progress)
    if not local:
        yield lambda host_vars: use.with_mirror(host_vars, mirror, str(run.source), contents, None)
        return
    port = use.port()
    inventory_vars = _inventory_hostvars(sources)
    with use.serve(mirror.root, port) as url:
        yield lambda host_vars: use.with_mirror(host_vars, mirror, url, contents, port, inventory_vars)


def _inventory_hostvars(sources: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
    """The inventory's own variables per host (``ansible-inventory --list``), so that the reverse forward is
    added to a host's ``ansible_ssh_extra_args`` (a jump host, say) instead of replacing them."""
    if not sources:
        return {}
    from dlsetup.runner import list_inventory

    _, data, _ = list_inventory(list(sources))
    hostvars = data.get("_meta", {}).get("hostvars", {})
    return hostvars if isinstance(hostvars, dict) else {}
