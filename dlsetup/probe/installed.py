"""What ``dlsetup status`` needs beyond the probe: package states (held or not), the reboot markers, and
what the framework venv holds (distributions, versions, and the accelerator torch was built for).

The venv is asked with its own python and a short script that reads ``importlib.metadata`` and torch's
``version.py`` as text: nothing is imported from the frameworks themselves, so it takes a fraction of a
second and works with a broken CUDA. It is a named command like the others (``cmd/venv-facts.out`` in a
bundle), bounded by the runner's timeout. Standard library only, Python 3.9+ (runs on remote hosts too).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

from dlsetup.probe.host import Host

#: every package dpkg knows, with its selection/state abbreviation ("hi": held and installed)
DPKG_FORMAT = "${db:Status-Abbrev} ${Package} ${Version}\n"
COMMANDS = {"dpkg-query-status": ["dpkg-query", "--show", f"--showformat={DPKG_FORMAT}"]}
#: markers that say the host must reboot: dlsetup's roles', and Debian/Ubuntu's (update-notifier, needrestart)
REBOOT_MARKERS = ("/run/dlsetup/reboot-required", "/run/reboot-required")

#: run by the venv's python: its distributions and torch's build, as JSON
VENV_SCRIPT = r"""
import json, re, sys
from importlib import metadata
out = {"python": "%d.%d" % sys.version_info[:2], "packages": {}}
for dist in metadata.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
    if name:
        out["packages"][name] = dist.version
try:
    files = metadata.distribution("torch").files or []
    version_py = next(f for f in files if str(f).replace("\\", "/") == "torch/version.py")
    text = version_py.locate().read_text()
    for key in ("cuda", "hip"):
        m = re.search(r"^%s\b[^=\n]*=\s*(?:'([^']*)'|\"([^\"]*)\"|None)" % key, text, re.M)
        out["torch_" + key] = (m.group(1) or m.group(2)) if m else None
except Exception:
    pass
print(json.dumps(out))
"""


def venv_command(venv: str) -> list:
    return [f"{venv.rstrip('/')}/bin/python", "-I", "-c", VENV_SCRIPT]


def read_installed(host: Host, venv: Optional[str]) -> Dict[str, Any]:
    """``{"packages": {name: [status, version]} | None, "reboot": [marker, ...], "venv": {...} | None}``.

    ``packages`` is None when dpkg could not be asked; ``venv`` None when no venv was named, else
    ``{"path", "exists", "python", "packages", "torch_cuda", "torch_hip"}``. Several venvs, joined by ":",
    are each read into ``venvs`` (path -> the same), ``venv`` being the first."""
    if host.is_live:
        host.start([("dpkg-query-status", COMMANDS["dpkg-query-status"])])
    facts: Dict[str, Any] = {"packages": None, "reboot": [m for m in REBOOT_MARKERS if host.exists(m)], "venv": None}
    if venv:
        facts["venvs"] = {path: read_venv(host, path) for path in dict.fromkeys(venv.split(":")) if path}
        facts["venv"] = next(iter(facts["venvs"].values()), None)
    facts["packages"] = parse_dpkg_status(host.run("dpkg-query-status", COMMANDS["dpkg-query-status"]))
    return facts


def read_venv(host: Host, venv: str) -> Dict[str, Any]:
    python = f"{venv.rstrip('/')}/bin/python"
    result: Dict[str, Any] = {"path": venv, "exists": host.exists(python), "python": None, "packages": None,
                              "torch_cuda": None, "torch_hip": None}
    if not result["exists"]:
        return result
    text = host.run("venv-facts", venv_command(venv))
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("packages"), dict):
        result.update(python=data.get("python"), packages=data["packages"], torch_cuda=data.get("torch_cuda"),
                      torch_hip=data.get("torch_hip"))
    return result


_DPKG_LINE = re.compile(r"^(?P<status>\S{2,3})\s+(?P<name>[a-z0-9][a-z0-9+.:-]*)(?:\s+(?P<version>\S+))?\s*$")


def parse_dpkg_status(text: Optional[str]) -> Optional[Dict[str, list]]:
    """``dpkg-query --show`` lines in :data:`DPKG_FORMAT`: name (without ``:arch``) -> [status, version]."""
    if text is None:
        return None
    packages: Dict[str, list] = {}
    for line in text.splitlines():
        match = _DPKG_LINE.match(line.strip())
        if match:
            packages[match["name"].split(":")[0]] = [match["status"], match["version"] or ""]
    return packages
