"""Probe inventory hosts remotely: the probe itself, shipped as a zipapp and run with the host's python3.

The probe code (:mod:`dlsetup.model`, :mod:`dlsetup.probe`, :mod:`dlsetup.parsers`) is standard-library
Python 3.9+. It is packed with a ``__main__`` (:mod:`dlsetup.remote.entry`) and the pure-Python NVML
binding ``pynvml`` into one ``.pyz``, built once per dlsetup version and source digest into the cache.

It runs through ``ansible.builtin.script`` with the host's python3 as ``executable``, rather than as a
binary module: the script action copies the file and runs it over any connection (ssh, chroot, local)
with no module protocol or argument file to speak, it needs no shebang that hard-codes an interpreter
path, and the JSON it prints comes back as the task's ``stdout``. The host needs nothing but python3.
The controller then adds the GPU table's facts (:func:`dlsetup.probe.enrich`), so a remote host gets
the same :class:`~dlsetup.model.HostProfile` as a local probe, with ``source`` ``remote:<name>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Mapping, Optional, Tuple, Union

from dlsetup import __version__
from dlsetup.errors import EXIT_HOSTS_FAILED, DlsetupError, UsageError
from dlsetup.fleet import HOST_BUNDLE_VAR, ProbeFailure
from dlsetup.inventory import Inventory
from dlsetup.model import HostProfile

if TYPE_CHECKING:
    from dlsetup.runner import HostResult

__all__ = ["RemoteHost", "build_zipapp", "probe_hosts"]

PLAYBOOK = Path(__file__).with_name("probe.yml")
TASK = "dlsetup remote probe"
_PACKAGE = Path(__file__).resolve().parents[1]
#: the modules the probe needs, relative to the dlsetup package
_MODULES = ("__init__.py", "errors.py", "model.py", "probe/*.py", "parsers/*.py")


@dataclass(frozen=True)
class RemoteHost:
    """A probed inventory host."""

    name: str  #: the inventory name
    profile: HostProfile
    root: Optional[bool]  #: the connection user is root (no escalation needed); None: not known (a bundle)
    #: what tells the machine from another (:data:`dlsetup.fleet.IDENTITY_KEYS`); empty for a bundle
    identity: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _sources() -> Iterator[Tuple[str, Path]]:
    """(name in the archive, file) for everything the zipapp holds, in a stable order."""
    for pattern in _MODULES:
        for path in sorted(_PACKAGE.glob(pattern)):
            yield f"dlsetup/{path.relative_to(_PACKAGE).as_posix()}", path
    import pynvml  # one pure-Python file (ctypes): NVML on hosts that have the driver

    yield "pynvml.py", Path(pynvml.__file__)
    yield "__main__.py", Path(__file__).with_name("entry.py")


def build_zipapp(directory: Path) -> Path:
    """The remote probe zipapp in ``directory``, built there first unless this version's already is."""
    sources = list(_sources())
    digest = hashlib.sha256()
    for name, path in sources:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    target = directory / f"remote-probe-{__version__}-{digest.hexdigest()[:12]}.pyz"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, path in sources:
                archive.write(path, name)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def probe_hosts(inventory: Inventory, distinct: bool = False) -> Dict[str, Union[RemoteHost, ProbeFailure]]:
    """Probe every selected host of ``inventory`` in one parallel run: name -> host or why it has none.

    Hosts with the variable :data:`~dlsetup.fleet.HOST_BUNDLE_VAR` are read from that saved bundle on
    the controller instead (``root`` unknown). A host that fails or cannot be reached does not stop the
    others; every selected host is in the result, in inventory order. Cached facts of a probed host
    that no longer describe it are dropped (:func:`dlsetup.fleet.drop_stale_facts`). With ``distinct``
    (before changing hosts), inventory names that reach one machine are a
    :class:`~dlsetup.errors.UsageError` naming them (:func:`dlsetup.fleet.refuse_aliases`). Raises
    :class:`~dlsetup.errors.DlsetupError` (exit 3) only when ansible-playbook itself cannot run."""
    from dlsetup.fleet import drop_stale_facts, refuse_aliases
    from dlsetup.runner import RunOptions, cache_dir, list_inventory, run_playbooks
    from dlsetup.runner.settings import fact_cache_dir

    rc, data, _ = list_inventory(inventory.sources, inventory.limit)
    hostvars = data.get("_meta", {}).get("hostvars", {}) if rc == 0 else {}
    outcomes: Dict[str, Union[RemoteHost, ProbeFailure]] = {
        name: _bundle_host(name, hostvars[name][HOST_BUNDLE_VAR])
        for name in inventory.hosts if HOST_BUNDLE_VAR in hostvars.get(name, {})}
    remote = [name for name in inventory.hosts if name not in outcomes]
    if remote:
        zipapp = build_zipapp(cache_dir())
        limit = inventory.limit if len(remote) == len(inventory.hosts) else ",".join(remote)
        options = RunOptions(limit=limit, extra_vars=(json.dumps({"dlsetup_probe_zipapp": str(zipapp)}),))
        result = run_playbooks([PLAYBOOK], inventory.sources, hosts=remote, options=options, capture=[TASK])
        if result.error:
            raise DlsetupError(f"cannot probe the hosts: {result.error}", EXIT_HOSTS_FAILED)
        outcomes.update((host.host, _remote_host(host)) for host in result.hosts)
    probed = [host for host in map(outcomes.get, inventory.hosts) if isinstance(host, RemoteHost)]
    drop_stale_facts(fact_cache_dir(inventory.sources, cache_dir()), probed)
    if distinct:
        refuse_aliases(probed)
    return {name: outcomes.get(name, ProbeFailure(name, "failed", "the probe did not run on this host"))
            for name in inventory.hosts}


def _bundle_host(name: str, bundle: Any) -> Union[RemoteHost, ProbeFailure]:
    from dlsetup.probe import probe

    try:
        profile = probe(bundle=Path(str(bundle)))
    except UsageError as err:
        return ProbeFailure(name, "failed", f"{HOST_BUNDLE_VAR}: {err}")
    return RemoteHost(name, dataclasses.replace(profile, hostname=name), root=None)


def _remote_host(host: HostResult) -> Union[RemoteHost, ProbeFailure]:
    """The profile the probe printed on ``host``, or why there is none."""
    from dlsetup.probe import enrich

    if host.status in ("failed", "unreachable"):
        why = host.failure.message if host.failure else f"the probe {host.status}"
        return ProbeFailure(host.host, host.status, why)
    try:
        data = json.loads(str(host.captured[TASK]["stdout"]))
        profile = HostProfile.from_dict(data["profile"])
    except (ValueError, KeyError, TypeError) as err:
        return ProbeFailure(host.host, "failed", f"the remote probe printed no profile ({err})")
    profile = enrich(dataclasses.replace(profile, source=f"remote:{host.host}"))
    identity = data.get("identity")
    identity = {str(k): str(v) for k, v in identity.items() if isinstance(v, str)} if isinstance(identity, dict) else {}
    return RemoteHost(host.host, profile, root=data.get("euid") == 0, identity=identity)
