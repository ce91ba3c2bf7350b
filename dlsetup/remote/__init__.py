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
from typing import Dict, Iterator, Tuple

from dlsetup import __version__
from dlsetup.errors import DlsetupError
from dlsetup.inventory import Inventory
from dlsetup.model import HostProfile

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
    root: bool  #: the connection user is root (no privilege escalation needed)


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


def probe_hosts(inventory: Inventory) -> Dict[str, RemoteHost]:
    """Probe every selected host of ``inventory``; name -> :class:`RemoteHost`.

    Raises :class:`~dlsetup.errors.DlsetupError` with exit code 4 when hosts are unreachable, 3 when
    the probe failed on some, naming the first of them."""
    from dlsetup.errors import EXIT_HOSTS_FAILED, EXIT_UNREACHABLE
    from dlsetup.probe import enrich
    from dlsetup.runner import RunOptions, cache_dir, run_playbooks

    zipapp = build_zipapp(cache_dir())
    options = RunOptions(limit=inventory.limit, extra_vars=(json.dumps({"dlsetup_probe_zipapp": str(zipapp)}),))
    result = run_playbooks([PLAYBOOK], inventory.sources, hosts=inventory.hosts, options=options, capture=[TASK])
    if result.error:
        raise DlsetupError(f"cannot probe the hosts: {result.error}", EXIT_HOSTS_FAILED)
    for status, code in (("unreachable", EXIT_UNREACHABLE), ("failed", EXIT_HOSTS_FAILED)):
        bad = [h for h in result.hosts if h.status == status]
        if bad:
            failure = bad[0].failure
            why = f": {failure.message}" if failure else ""
            raise DlsetupError(f"{len(bad)} host(s) {status} while probing, first {bad[0].host}{why}", code)
    hosts = {}
    for host in result.hosts:
        stdout = str(host.captured.get(TASK, {}).get("stdout", ""))
        try:
            data = json.loads(stdout)
            profile = HostProfile.from_dict(data["profile"])
        except (ValueError, KeyError, TypeError) as err:
            raise DlsetupError(f"{host.host}: the remote probe printed no profile ({err})",
                               EXIT_HOSTS_FAILED) from None
        profile = enrich(dataclasses.replace(profile, source=f"remote:{host.host}"))
        hosts[host.host] = RemoteHost(host.host, profile, root=data.get("euid") == 0)
    return hosts
