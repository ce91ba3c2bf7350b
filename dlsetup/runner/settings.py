"""Ansible settings tuned for a run over a fleet, and where its facts are cached.

Kept apart from :mod:`dlsetup.fleet` (which reads inventories, and so the runner) so that the runner
imports nothing that imports it back.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["CONNECT_TIMEOUT", "GATHER_SUBSET", "MAX_FORKS", "MITOGEN_ANSIBLE_CORE", "fact_cache_dir",
           "mitogen_strategy_plugins", "tuned_ansible_env"]

#: ansible-core releases (major, minor) mitogen's strategy plugins support: mitogen's own floor
#: (``ansible_mitogen.loaders.ANSIBLE_VERSION_MIN``) to 2.20 (mitogen-hq/mitogen#1364, fixed by #1367).
MITOGEN_ANSIBLE_CORE = ((2, 10), (2, 20))
#: most parallel connections, whatever the fleet size (each fork is a controller process)
MAX_FORKS = 64
#: the fact collectors the roles read (distribution*, architecture, kernel, service_mgr): a seventh of
#: ``min``'s facts, and the controller copies and cleans every host's facts for every task
GATHER_SUBSET = "!all,!min,distribution,platform,service_mgr"
#: seconds to set up a connection: with mitogen that includes starting its interpreter on the host,
#: which Ansible's default of 10 s does not leave when many hosts start at once on a loaded controller
CONNECT_TIMEOUT = 30


def _release(package: str) -> Optional[Tuple[int, int]]:
    try:
        major, minor = metadata.version(package).split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def mitogen_strategy_plugins() -> Optional[Path]:
    """The folder of mitogen's strategy plugins when mitogen is installed and supports this ansible-core."""
    core = _release("ansible-core")
    if core is None or not MITOGEN_ANSIBLE_CORE[0] <= core <= MITOGEN_ANSIBLE_CORE[1]:
        return None
    try:
        files = metadata.files("mitogen") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix().endswith("ansible_mitogen/plugins/strategy/mitogen_linear.py"):
            return Path(str(file.locate())).parent
    return None


def tuned_ansible_env(hosts: int, cache: Path, mitogen: bool = False) -> Dict[str, str]:
    """Ansible settings for a run over ``hosts`` hosts, as ``ANSIBLE_*`` environment variables.

    One fork per host (at most :data:`MAX_FORKS`), pipelining, long-lived SSH master connections
    without compression (fleets are on a LAN), only the facts the roles read (:data:`GATHER_SUBSET`)
    gathered once and cached as JSON in ``cache``, host key checking on, Ansible's linear strategy.
    With ``mitogen`` (opt-in: ``DLSETUP_MITOGEN=1``) and a mitogen that supports the installed
    ansible-core, mitogen's linear strategy instead; otherwise the settings above, the fallback.
    benchmarks/fleet.py measures both: on our roles' no-op converge, where the hosts run almost nothing,
    the linear strategy with these settings was the faster one (1.7x less wall time than stock at 8 and
    16 hosts; mitogen 0.7x, its per-run bootstrap of every host is not paid back)."""
    env = {
        "ANSIBLE_FORKS": str(max(1, min(hosts, MAX_FORKS))),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=15",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_TIMEOUT": str(CONNECT_TIMEOUT),
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_GATHER_SUBSET": GATHER_SUBSET,
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "600",
    }
    plugins = mitogen_strategy_plugins() if mitogen else None
    if plugins is not None:
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(plugins)
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
    return env


def _source_key(sources: Sequence[str]) -> str:
    """One key per list of inventory sources: their resolved paths (a source that is no path, e.g.
    ``host1,host2,``, as written)."""
    return "\0".join(str(Path(s).resolve()) if Path(s).exists() else s for s in sources)


def fact_cache_dir(sources: Sequence[str], cache: Path) -> Path:
    """Where facts are cached for a run over the inventory ``sources``: a folder per inventory.

    Ansible's JSON fact cache names a file after the inventory host name only, so a ``gpu01`` of one
    inventory would read the facts (the kernel the headers are installed for, among them) that a
    ``gpu01`` of another left there. Without an inventory (this machine, ``localhost``) the folder is
    ``local``. Within an inventory, :func:`drop_stale_facts` checks cached facts against the probe."""
    if not sources:
        return cache / "facts" / "local"
    return cache / "facts" / hashlib.sha256(_source_key(sources).encode()).hexdigest()[:16]
