"""``dlsetup status``: each host compared with its plan, in one round trip per host.

What is compared (:func:`compare`, pure): the NVIDIA driver branch and whether its module is loaded, the
library/module agreement, the GPU module of the running and the next-boot kernel, the CUDA toolkit, the
container toolkit, ROCm, the packages the roles hold, the framework venv (each planned package installed
in its planned version, torch built for the planned accelerator), the md arrays (healthy, mounted) and a
pending reboot. Every drift names the command that fixes it.

The plan is the one the host would get now (:func:`dlsetup.plan.make_plan` with the same options as
``dlsetup provision``, ``-e`` overrides included): provision records no applied plan on the hosts, and
the roles are idempotent, so "what provision would change" is the drift. The host is read once: locally
(or from a bundle) by the probe plus :mod:`dlsetup.probe.installed`; on an inventory, by one task per
host running the probe zipapp with ``--status`` (``dlsetup/remote/status.yml``), never a role run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from dlsetup.model import HostProfile

if TYPE_CHECKING:
    from dlsetup.fleet import ProbeFailure
    from dlsetup.plan import Plan, Request

PLAYBOOK = Path(__file__).with_name("remote") / "status.yml"
BASIS = "the plan dlsetup provision would apply now (no applied plan is recorded on the hosts)"


@dataclass(frozen=True)
class Item:
    """One thing compared: what the plan wants, what the host has, and the command that fixes a drift."""

    topic: str  #: "driver", "kernel 6.8.0-90-generic (next boot)", "hold", "venv", "torch", "array /data", ...
    expected: str
    found: str
    ok: bool
    fix: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class HostStatus:
    host: str
    items: Tuple[Item, ...]
    basis: str = BASIS
    notes: Tuple[str, ...] = field(default=())

    @property
    def drift(self) -> Tuple[Item, ...]:
        return tuple(i for i in self.items if not i.ok)

    def to_dict(self) -> Dict[str, Any]:
        return {"host": self.host, "status": "drift" if self.drift else "in sync", "basis": self.basis,
                "drift": [i.to_dict() for i in self.drift], "items": [i.to_dict() for i in self.items],
                "notes": list(self.notes)}


# -- the comparison (pure) ------------------------------------------------------------------------------


def compare(profile: HostProfile, installed: Mapping[str, Any], plan: "Plan") -> Tuple[Item, ...]:
    """Every :class:`Item` of ``profile`` (+ ``installed``, see :func:`dlsetup.probe.installed.read_installed`)
    against ``plan``."""
    variables = plan.variables
    roles = tuple(variables.get("dlsetup_roles") or plan.roles)
    packages = installed.get("packages")
    items: List[Item] = []
    items += _driver(profile, plan, roles)
    items += _kernels(profile, plan, roles)
    items += _apt_packages(variables, roles, packages)
    items += _holds(variables, planned_driver_branch(plan) if profile.nvidia_gpus else None, packages)
    items += _rocm(profile, variables, roles)
    items += _venvs(variables, installed)
    items += _arrays(profile, variables)
    items += _reboot(profile, installed)
    return tuple(items)


def planned_driver_branch(plan: "Plan") -> Optional[str]:
    """The NVIDIA branch the plan installs or keeps, or None when it plans no NVIDIA driver."""
    branch = plan.variables.get("nvidia_driver_branch")
    if branch:
        return str(branch)
    for decision in plan.decisions:
        if decision.topic == "driver":
            match = re.search(r"\b(\d{3})(?:\.\d+)*\b", decision.choice)
            return match.group(1) if match else None
    return None


def _driver(p: HostProfile, plan: "Plan", roles: Tuple[str, ...]) -> List[Item]:
    branch = planned_driver_branch(plan)
    if branch is None or not p.nvidia_gpus:
        return []
    nv = p.nvidia
    loaded = nv.kernel_module_version if nv.kernel_module_loaded else None
    items = []
    if loaded is None:
        running = p.kernel.image(p.kernel.running)
        if running is not None and running.nvidia_module is None:
            from dlsetup.advice import kernel_module_fix

            fix = kernel_module_fix(p, "nvidia", running.version) + " && modprobe nvidia"
        elif nv.library_version:
            fix = "modprobe nvidia (or reboot)"
        else:
            fix = "dlsetup provision"
        if nv.library_version:  # installed and not loaded: the plan would start over; the installed one is due
            branch = nv.library_version.split(".")[0]
        items.append(Item("driver", f"NVIDIA {branch} loaded", "no NVIDIA module loaded", False, fix))
    else:
        ok = loaded.split(".")[0] == branch
        items.append(Item("driver", f"NVIDIA {branch}", f"NVIDIA {loaded}", ok, "" if ok else "dlsetup provision"))
    if nv.reboot_required:
        items.append(Item("driver library", "module and library agree",
                          f"module {nv.kernel_module_version or '?'}, library {nv.library_version or '?'}", False,
                          "reboot (the library was updated, the loaded module is older)"))
    elif loaded and nv.library_version:
        items.append(Item("driver library", "module and library agree", nv.library_version, True))
    return items


def _kernels(p: HostProfile, plan: "Plan", roles: Tuple[str, ...]) -> List[Item]:
    from dlsetup.advice import kernel_module_fix

    state = p.kernel
    if not state.kernels:
        return []
    modules = []
    if planned_driver_branch(plan) and p.nvidia_gpus:
        modules.append("nvidia")
    if "rocm" in roles:
        modules.append("amdgpu")
    items = []
    wanted = [(state.running, "running"), (state.next_boot, "next boot")]
    if state.running == state.next_boot:
        wanted = [(state.running, "running, next boot")]
    for module in modules:
        for release, role in wanted:
            image = state.image(release)
            if image is None or release is None:
                continue
            source = getattr(image, f"{module}_module")
            fix = "" if source else kernel_module_fix(p, module, release)
            found = source or ("missing" + (f": {image.dkms_failure}" if image.dkms_failure else ""))
            items.append(Item(f"kernel {release} ({role})", f"{module} module", found, bool(source), fix))
    return items


def _installed(packages: Optional[Mapping[str, Any]], name: str) -> Optional[bool]:
    if packages is None:
        return None
    status = (packages.get(name) or ["", ""])[0]
    return len(status) >= 2 and status[1] == "i"


def _apt_packages(variables: Mapping[str, Any], roles: Tuple[str, ...], packages) -> List[Item]:
    wanted = []
    if "cuda_toolkit" in roles and variables.get("cuda_toolkit_version"):
        version = str(variables["cuda_toolkit_version"])
        wanted.append(("CUDA toolkit", f"cuda-toolkit-{version.replace('.', '-')}", version))
    if "nvidia_container_toolkit" in roles:
        wanted.append(("container toolkit", "nvidia-container-toolkit", "installed"))
    items = []
    for topic, package, what in wanted:
        state = _installed(packages, package)
        if state is None:
            items.append(Item(topic, what, "unknown (dpkg could not be asked)", False, "dlsetup provision"))
            continue
        found = f"{package} {(packages.get(package) or ['', ''])[1]}".strip() if state else f"{package} not installed"
        items.append(Item(topic, what, found, state, "" if state else f"apt install {package} (or dlsetup provision)"))
    return items


def planned_holds(variables: Mapping[str, Any], branch: Optional[str]) -> Tuple[str, ...]:
    """The packages the roles hold: ``common_hold_packages``, and the NVIDIA driver's packages of the
    planned or kept ``branch`` (the nvidia_driver role holds nvidia-open-<branch> or cuda-drivers-<branch>,
    ``nvidia_driver_hold``, default on). Only those installed are checked (see :func:`_holds`)."""
    holds = [str(p) for p in variables.get("common_hold_packages") or ()]
    if branch and variables.get("nvidia_driver_hold", True):
        holds += [f"nvidia-open-{branch}", f"cuda-drivers-{branch}"]
    return tuple(dict.fromkeys(holds))


def _holds(variables: Mapping[str, Any], branch: Optional[str], packages) -> List[Item]:
    items = []
    for name in planned_holds(variables, branch):
        if packages is None or not _installed(packages, name):
            continue  # not installed: the role installs and holds it (the driver/toolkit rows say so)
        status = packages[name][0]
        held = status.startswith("h")
        items.append(Item(f"hold {name}", "held", "held" if held else "not held", held,
                          "" if held else f"apt-mark hold {name}"))
    return items


def _rocm(p: HostProfile, variables: Mapping[str, Any], roles: Tuple[str, ...]) -> List[Item]:
    if "rocm" not in roles or not variables.get("rocm_version"):
        return []
    want = str(variables["rocm_version"])
    have = p.amd.rocm_version
    ok = bool(have and (have == want or have.startswith(want + ".")))
    return [Item("ROCm", want, have or "not installed", ok, "" if ok else "dlsetup provision")]


def planned_accelerator(variables: Mapping[str, Any]) -> Optional[str]:
    """"cuda 13.0", "rocm 7.0" or "cpu" from the PyTorch wheel index the plan uses; None: not told."""
    vendor = [str(i.get("url") or "") for i in variables.get("frameworks_pip_vendor_indexes") or ()
              if isinstance(i, dict)]
    for url in vendor + list(variables.get("frameworks_pip_extra_index_urls") or ()) + [
            variables.get("frameworks_pip_index_url") or ""]:
        tail = str(url).rstrip("/").rsplit("/", 1)[-1]
        cuda = re.fullmatch(r"cu(\d+)(\d)", tail)
        if cuda:
            return f"cuda {cuda.group(1)}.{cuda.group(2)}"
        rocm = re.fullmatch(r"rocm(\d+(?:\.\d+)*)", tail)
        if rocm:
            return f"rocm {rocm.group(1)}"
        if tail == "cpu":
            return "cpu"
    return None


def _valid(spec: str) -> bool:
    try:
        Requirement(spec)
    except InvalidRequirement:
        return False
    return True


def _pip_fix(variables: Mapping[str, Any], venv: str, spec: str) -> str:
    args = [f"{venv.rstrip('/')}/bin/pip", "install", "--force-reinstall", f"'{spec}'"]
    name = canonicalize_name(Requirement(spec).name) if _valid(spec) else ""
    trusted = [f"--trusted-host {host}" for host in variables.get("frameworks_pip_trusted_hosts") or ()]
    for index in variables.get("frameworks_pip_vendor_indexes") or ():
        if isinstance(index, dict) and name in {canonicalize_name(str(x)) for x in index.get("projects") or ()}:
            return " ".join(args + ["--index-url", str(index.get("url"))] + trusted)  # the vendor's index alone
    if variables.get("frameworks_pip_index_url"):
        args += ["--index-url", str(variables["frameworks_pip_index_url"])]
    for url in variables.get("frameworks_pip_extra_index_urls") or ():
        args += ["--extra-index-url", str(url)]
    for links in variables.get("frameworks_pip_find_links") or ():
        args += ["--find-links", str(links)]
    if variables.get("frameworks_pip_offline"):
        args.append("--no-index")
    return " ".join(args + trusted)


def _venvs(variables: Mapping[str, Any], installed: Mapping[str, Any]) -> List[Item]:
    """Each planned venv (``frameworks_venvs``; else the one of ``frameworks_venv_path``) against what the
    host's venv at that path holds. With several venvs each item names its venv."""
    planned = [v for v in variables.get("frameworks_venvs") or () if isinstance(v, Mapping)]
    if not planned:
        return _venv(variables, installed.get("venv"))
    found = installed.get("venvs") or {}
    first = installed.get("venv")
    items = []
    for venv in planned:
        path = str(venv.get("path") or "")
        have = found.get(path) or (first if first and first.get("path") == path else None)
        own = _venv({**variables, "frameworks_packages": venv.get("packages") or [], "frameworks_venv_path": path},
                    have)
        if len(planned) > 1:
            own = [dataclasses.replace(i, topic=f"{i.topic} ({venv.get('name')})") for i in own]
        items += own
    return items


def _venv(variables: Mapping[str, Any], venv: Optional[Mapping[str, Any]]) -> List[Item]:
    specs = [str(s) for s in variables.get("frameworks_packages") or ()]
    path = str(variables.get("frameworks_venv_path") or "")
    if not specs or not path:
        return []
    if not venv or not venv.get("exists"):
        return [Item("venv", path, "missing", False, "dlsetup provision")]
    found = venv.get("packages")
    if found is None:
        return [Item("venv", path, "its python does not run", False, f"rm -rf {path} && dlsetup provision")]
    have = {canonicalize_name(k): v for k, v in found.items()}
    items = []
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            continue
        version = have.get(canonicalize_name(req.name))
        if version is None:
            items.append(Item(req.name, spec, "not installed", False, _pip_fix(variables, path, spec)))
            continue
        ok = req.specifier.contains(version.split("+")[0], prereleases=True)
        items.append(Item(req.name, spec, version, ok, "" if ok else _pip_fix(variables, path, spec)))
        if canonicalize_name(req.name) == "torch":
            items += _torch_build(variables, venv, path, spec)
    return items


def _torch_build(variables: Mapping[str, Any], venv: Mapping[str, Any], path: str, spec: str) -> List[Item]:
    want = planned_accelerator(variables)
    if want is None:
        return []
    cuda, hip = venv.get("torch_cuda"), venv.get("torch_hip")
    have = f"cuda {cuda}" if cuda else f"rocm {hip}" if hip else "cpu"
    kind = want.split()[0]
    ok = have.split()[0] == kind and (kind == "cpu" or have == want or have.startswith(want + "."))
    return [Item("torch build", want, have, ok, "" if ok else _pip_fix(variables, path, spec))]


def _arrays(p: HostProfile, variables: Mapping[str, Any]) -> List[Item]:
    from dlsetup.storage import missing_members

    items = []
    mounts = {m.mountpoint: m for m in p.storage.mounts}
    arrays = {a.name: a for a in p.storage.arrays}
    for planned in variables.get("storage_arrays") or ():
        mountpoint = str(planned.get("mountpoint"))
        mount = mounts.get(mountpoint)
        ok = mount is not None
        items.append(Item(f"array {mountpoint}", f"{planned.get('level')} mounted",
                          f"{mount.device} mounted" if mount else "not mounted", ok,
                          "" if ok else f"mount {mountpoint} (it is in /etc/fstab), else dlsetup provision"))
    for array in arrays.values():
        bad = array.degraded or array.state == "inactive" or any(m.state == "faulty" for m in array.members)
        faulty = [m.device for m in array.members if m.state == "faulty"]
        missing = missing_members(p, array) if array.degraded else ()  # dlsetup's record names them
        found = (array.state + (" degraded" if array.degraded else "")
                 + (f", faulty {', '.join(faulty)}" if faulty else "")
                 + (f", missing {', '.join(missing)}" if missing else ""))
        if array.sync_action:
            found += f", {array.sync_action} {array.sync_progress_pct or 0:.0f}%"
        fix = ""
        if bad:
            fix = (f"mdadm /dev/{array.name} --remove /dev/{faulty[0]} && mdadm /dev/{array.name} --add "
                   "/dev/disk/by-id/<new disk>" if faulty else
                   "mdadm --assemble --scan (array inactive)" if array.state == "inactive" else
                   "none: md is rebuilding the array onto its new member (watch /proc/mdstat)"
                   if array.sync_action == "recovery" else
                   f"mdadm /dev/{array.name} --add /dev/disk/by-id/<new disk>")
        items.append(Item(f"array {array.name}", "healthy", found, not bad, fix))
    return items


def _reboot(p: HostProfile, installed: Mapping[str, Any]) -> List[Item]:
    markers = list(installed.get("reboot") or ())
    if not markers:
        return [Item("reboot", "none pending", "none pending", True)]
    return [Item("reboot", "none pending", "pending (" + ", ".join(markers) + ")", False,
                 "reboot the host (dlsetup provision --reboot for inventory hosts)")]


# -- reading the hosts ------------------------------------------------------------------------------------


def read_local(bundle: Optional[Path], venv: str) -> Tuple[HostProfile, Dict[str, Any]]:
    """Probe this machine (or the bundle) and read what status needs, over one runner."""
    from dlsetup.errors import UsageError
    from dlsetup.probe import Host, probe_host
    from dlsetup.probe.installed import COMMANDS, read_installed

    if bundle is not None:
        if not Path(bundle).is_dir():
            raise UsageError(f"bundle directory not found: {bundle}")
        host = Host.bundle(Path(bundle))
    else:
        host = Host.live()
    try:
        if host.is_live:
            host.start(list(COMMANDS.items()))
        profile = probe_host(host)
        installed = read_installed(host, venv)
    finally:
        host.close()
    return profile, installed


Outcome = Union[Tuple[HostProfile, Dict[str, Any]], "ProbeFailure"]


#: the task of :data:`PLAYBOOK` that tells each host's saved bundle (:data:`~dlsetup.fleet.HOST_BUNDLE_VAR`)
HOST_TASK = "dlsetup status host"


def read_inventory(source: Path, limit: Optional[str], venv: str) -> Dict[str, Outcome]:
    """Every host ``source`` (and ``limit``) selects, read in one ansible-playbook run (one task per host):
    name -> (profile, installed) or why there is none. Hosts with a saved bundle
    (:data:`~dlsetup.fleet.HOST_BUNDLE_VAR`) are read from it on the controller.

    The run itself lists the hosts and their bundles (a controller-side ``set_fact``): no
    ``ansible-inventory`` run first, which costs a Python start-up and an inventory parse. Ansible caps
    its forks at the hosts it has, so the run is tuned for :data:`~dlsetup.runner.settings.MAX_FORKS`.
    Only when the run finds no host is the inventory listed, for its one-line error."""
    from dlsetup.errors import EXIT_HOSTS_FAILED, DlsetupError, UsageError
    from dlsetup.fleet import HOST_BUNDLE_VAR, ProbeFailure
    from dlsetup.inventory import load_inventory
    from dlsetup.remote import TASK, build_zipapp
    from dlsetup.runner import RunOptions, cache_dir, run_playbooks
    from dlsetup.runner.settings import MAX_FORKS

    if not source.exists():
        raise UsageError(f"inventory not found: {source}")
    zipapp = build_zipapp(cache_dir())
    extra = json.dumps({"dlsetup_probe_zipapp": str(zipapp), "dlsetup_status_venv": venv})
    result = run_playbooks([PLAYBOOK], [str(source)], hosts=[f"host{n}" for n in range(MAX_FORKS)],
                           options=RunOptions(limit=limit, extra_vars=(extra,)), capture=[HOST_TASK, TASK])
    if result.error:
        load_inventory(source, limit)  # a bad inventory or a limit without hosts: its one line, exit 2
        raise DlsetupError(f"cannot read the hosts: {result.error}", EXIT_HOSTS_FAILED)
    outcomes: Dict[str, Outcome] = {}
    for host in result.hosts:
        name = host.host
        bundle = (host.captured.get(HOST_TASK) or {}).get("ansible_facts", {}).get("dlsetup_status_bundle")
        if bundle:
            try:
                profile, installed = read_local(Path(str(bundle)), venv)
                outcomes[name] = (dataclasses.replace(profile, hostname=name), installed)
            except DlsetupError as err:
                outcomes[name] = ProbeFailure(name, "failed", f"{HOST_BUNDLE_VAR}: {err}")
        else:
            outcomes[name] = _remote(host, TASK)
    return outcomes


def _remote(host: Any, task: str) -> Outcome:
    from dlsetup.fleet import ProbeFailure
    from dlsetup.probe import enrich

    if host.status in ("failed", "unreachable"):
        return ProbeFailure(host.host, host.status,
                            host.failure.message if host.failure else f"the probe {host.status}")
    try:
        data = json.loads(str(host.captured[task]["stdout"]))
        profile = HostProfile.from_dict(data["profile"])
        installed = data["installed"]
    except (ValueError, KeyError, TypeError) as err:
        return ProbeFailure(host.host, "failed", f"the remote probe printed no status ({err})")
    profile = enrich(dataclasses.replace(profile, source=f"remote:{host.host}"))
    return profile, installed if isinstance(installed, dict) else {}


def status_of(name: str, profile: HostProfile, installed: Mapping[str, Any], request: "Request",
              extra_vars: Mapping[str, Any], live: Any = None, today: Optional[str] = None) -> HostStatus:
    """The :class:`HostStatus` of one read host: its plan (``extra_vars`` override the plan's variables,
    as ``-e`` does for provision) compared with what it has."""
    from dlsetup.plan import make_plan

    planned, notes = repaired_for_status(profile, request)
    plan = make_plan(planned, request, live, today=today)
    if extra_vars:
        plan = dataclasses.replace(plan, variables={**plan.variables, **extra_vars})
    return HostStatus(name, compare(profile, installed, plan), notes=tuple(plan.warnings) + notes)


def repaired_for_status(profile: HostProfile, request: "Request") -> Tuple[HostProfile, Tuple[str, ...]]:
    """The host status plans, and a note per array: ``profile`` with each degraded md array dlsetup made
    for the requested layout (:func:`dlsetup.storage.repairs`) as it is once repaired.

    The planner refuses such an array (provision never re-creates it, nor touches its disks); for status
    that refusal is drift: the array's item (:func:`_arrays`, on the real profile) names it degraded,
    its faulty and missing members and the repair, and every other item is still compared."""
    if request.storage is None:
        return profile, ()
    from dlsetup.storage import propose_layout, repaired, repairs

    fixes = repairs(profile, propose_layout(profile, request.storage))
    notes = tuple(f"storage: {f.md} (made by dlsetup for {f.mountpoint}) is degraded: compared with the plan "
                  "of the repaired host; provision refuses its disks until it is repaired" for f in fixes)
    return repaired(profile, fixes), notes


# -- output -------------------------------------------------------------------------------------------------


def render(results: Mapping[str, Any]) -> Any:
    """A rich renderable: one table per host (every item; a fleet shows only each host's drift), and for a
    fleet a summary table first, one row per host."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from dlsetup.fleet import ProbeFailure

    parts: List[Any] = []
    fleet = len(results) > 1
    if fleet:
        summary = Table(title="status", title_justify="left", header_style="bold")
        for column in ("host", "state", "drift"):
            summary.add_column(column)
        for name, r in results.items():
            if isinstance(r, ProbeFailure):
                summary.add_row(escape(name), f"[bold red]{r.status}[/]", escape(r.message))
            elif r.drift:
                summary.add_row(escape(name), f"[yellow]drift ({len(r.drift)})[/]",
                                escape("; ".join(i.topic for i in r.drift)))
            else:
                summary.add_row(escape(name), "[green]in sync[/]", "")
        parts.append(summary)
    for name, r in results.items():
        if isinstance(r, ProbeFailure):
            if not fleet:
                parts.append(f"[bold red]{escape(name)}: {r.status}[/] {escape(r.message)}")
            continue
        items = r.drift if fleet else r.items
        if fleet and not items:
            continue
        caption = "\n".join([f"compared with {r.basis}", *r.notes]) if not fleet else f"compared with {r.basis}"
        table = Table(title=f"{escape(name)}: {'drift' if r.drift else 'in sync'}", title_justify="left",
                      caption=escape(caption), caption_justify="left")
        for column in ("", "what", "planned", "found", "fix"):
            table.add_column(column)
        for item in items:
            mark = "[green]ok[/]" if item.ok else "[yellow]drift[/]"
            table.add_row(mark, escape(item.topic), escape(item.expected), escape(item.found), escape(item.fix))
        parts.append(table)
    return Group(*parts)
