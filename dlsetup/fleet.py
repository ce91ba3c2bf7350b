"""Fleet-level helpers: a fault-tolerant parallel probe, plans grouped, retry files.

The Ansible settings tuned for a fleet are in :mod:`dlsetup.runner.settings`.

A fleet is every host of an inventory. The probe runs on all of them at once (one ansible-playbook run,
see :mod:`dlsetup.remote`) and keeps going when some fail: each host gets its profile or the reason it
has none. Hosts whose plans are the same run the same roles with the same variables, so they are shown
as one group (:func:`dlsetup.ui.plans.render_groups`). After a run, the hosts that failed or were
unreachable are written to a retry file, one name a line, which Ansible reads natively as
``--limit @FILE``: ``--retry-failed`` re-runs only them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from dlsetup.errors import UsageError
from dlsetup.inventory import Inventory
from dlsetup.model import HostProfile

__all__ = ["HOST_BUNDLE_VAR", "PlanGroup", "ProbeFailure", "aliases", "drop_stale_facts", "group_plans",
           "probe_fleet", "raise_for_failures", "refuse_aliases", "retry_file", "retry_limit", "save_retry"]

#: an inventory host variable: plan this host from a saved probe bundle on the controller instead of
#: probing it (what-if planning for hardware not yet racked, and the tests' heterogeneous fleet)
HOST_BUNDLE_VAR = "dlsetup_probe_bundle"

#: cached fact -> how the probed machine says it: a cached fact that disagrees is dropped
_FACT_CHECKS = {"ansible_kernel": lambda host: host.profile.os.kernel,
                "ansible_machine_id": lambda host: host.identity.get("machine_id")}


def drop_stale_facts(directory: Path, hosts: Sequence[Any]) -> Tuple[str, ...]:
    """Remove the cached facts of the probed ``hosts`` (:class:`~dlsetup.remote.RemoteHost`) that do not
    describe the machine the probe found under that name now (another kernel, another machine id): the
    next run gathers them again. Returns the hosts whose facts were dropped."""
    if not directory.is_dir():
        return ()
    from ansible.plugins.loader import cache_loader

    cache = cache_loader.get("jsonfile", _uri=str(directory), _timeout=0)
    dropped = []
    for host in hosts:
        name = host.name
        if "/" in name or name in (".", "..") or not cache.contains(name):
            continue
        facts = cache.get(name) or {}
        for fact, probed in _FACT_CHECKS.items():
            value = probed(host)
            if value and facts.get(fact) not in (None, value):
                cache.delete(name)
                dropped.append(name)
                break
    return tuple(dropped)


# -- one machine under two names ------------------------------------------------------------------

#: what makes two probed hosts the same machine: the kernel that runs (its boot id, random per boot),
#: the root filesystem it sees (device and inode of ``/``: a chroot or container of that kernel has its
#: own), both needed, and /etc/machine-id (empty on a minimal system). Cloned images share a machine id,
#: not a boot id; hosts in chroots or containers of one kernel share a boot id, not a root.
IDENTITY_KEYS = ("boot_id", "root", "machine_id")


def aliases(hosts: Sequence[Any]) -> Tuple[Tuple[str, ...], ...]:
    """Groups of two or more inventory names (of :class:`~dlsetup.remote.RemoteHost` ``hosts``) that
    reach the same machine; hosts whose boot id or root the probe could not read are in none."""
    machines: Dict[Tuple[str, ...], List[str]] = {}
    for host in hosts:
        key = tuple(str(host.identity.get(k) or "") for k in IDENTITY_KEYS)
        if all(key[:2]):  # a kernel and a root; a minimal system may have no machine id
            machines.setdefault(key, []).append(host.name)
    return tuple(tuple(names) for names in machines.values() if len(names) > 1)


def refuse_aliases(hosts: Sequence[Any]) -> None:
    """A :class:`~dlsetup.errors.UsageError` (exit 2) naming the inventory names that reach one machine:
    provisioning it twice in parallel would run two package managers, and two storage runs, against the
    same system and disks. Keep one name per machine in the inventory (or pick one with --limit)."""
    found = aliases(hosts)
    if found:
        groups = "; ".join(" = ".join(names) for names in found)
        raise UsageError(f"these inventory names reach the same machine: {groups}. Keep one name per machine "
                         "in the inventory, or select one with --limit; nothing was changed")


# -- probe ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeFailure:
    """Why a host has no profile."""

    host: str
    status: str  #: "unreachable" or "failed"
    message: str

    def to_dict(self) -> Dict[str, str]:
        return dataclasses.asdict(self)


ProbeOutcome = Union[HostProfile, ProbeFailure]


def probe_fleet(inventory: Inventory) -> Dict[str, ProbeOutcome]:
    """Probe every selected host of ``inventory`` in one parallel run: name -> profile or failure.

    Hosts with :data:`HOST_BUNDLE_VAR` are read from that bundle on the controller instead. A host that
    fails or cannot be reached does not stop the others; every host of the inventory is in the result
    (see :func:`dlsetup.remote.probe_hosts`)."""
    from dlsetup.remote import probe_hosts

    return {name: host if isinstance(host, ProbeFailure) else host.profile
            for name, host in probe_hosts(inventory).items()}


def raise_for_failures(outcomes: Mapping[str, ProbeOutcome]) -> None:
    """After the output: exit 4 naming the unreachable hosts if any, else 3 naming the failed ones."""
    from dlsetup.errors import EXIT_HOSTS_FAILED, EXIT_UNREACHABLE, DlsetupError

    failures = [o for o in outcomes.values() if isinstance(o, ProbeFailure)]
    for status, code in (("unreachable", EXIT_UNREACHABLE), ("failed", EXIT_HOSTS_FAILED)):
        bad = [f for f in failures if f.status == status]
        if bad:
            raise DlsetupError(f"{len(bad)} host(s) {status} while probing: "
                               + "; ".join(f"{f.host} ({f.message})" for f in bad), code)


# -- plans ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanGroup:
    """Hosts whose plans are the same: same roles, same variables, so the same run."""

    hosts: Tuple[str, ...]
    roles: Tuple[str, ...]
    choices: Tuple[Tuple[str, str], ...]  #: (topic, choice) of the plan's decisions, e.g. ("driver", "580")
    variables: Mapping[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        return {"hosts": list(self.hosts), "roles": list(self.roles),
                "choices": dict(self.choices), "variables": dict(self.variables)}


def group_plans(plans: Mapping[str, Any]) -> Tuple[PlanGroup, ...]:
    """Group the plans (host -> :class:`~dlsetup.plan.Plan`) that are the same; largest group first."""
    groups: Dict[str, List[str]] = {}
    for host, plan in plans.items():
        key = json.dumps([list(plan.roles), plan.variables], sort_keys=True, default=str)
        groups.setdefault(key, []).append(host)
    result = []
    for hosts in groups.values():
        plan = plans[hosts[0]]
        choices = tuple((d.topic, d.choice) for d in plan.decisions)
        result.append(PlanGroup(tuple(hosts), tuple(plan.roles), choices, dict(plan.variables)))
    return tuple(sorted(result, key=lambda g: -len(g.hosts)))


# -- retry ----------------------------------------------------------------------------------------


def retry_file(sources: Sequence[str], cache: Path) -> Path:
    """Where the hosts to retry for the inventory ``sources`` are kept, under ``cache``."""
    resolved = "\0".join(str(Path(source).resolve()) for source in sources)
    return cache / "retry" / f"{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.retry"


def save_retry(path: Path, results: Sequence[Any]) -> Tuple[str, ...]:
    """Write the hosts of ``results`` (:class:`~dlsetup.runner.HostResult`) that failed or were
    unreachable to ``path``, one a line; remove it when there are none. Returns those hosts."""
    hosts = tuple(r.host for r in results if r.status in ("failed", "unreachable"))
    if hosts:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{host}\n" for host in hosts), encoding="utf-8")
    else:
        path.unlink(missing_ok=True)
    return hosts


def retry_limit(path: Path) -> str:
    """The ``--limit`` that selects only the hosts in the retry file ``path`` (Ansible's ``@FILE``)."""
    try:
        hosts = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        hosts = []
    if not hosts:
        raise UsageError("--retry-failed: no host failed in the last run of this inventory")
    return f"@{path}"
