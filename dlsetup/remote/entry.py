"""``__main__`` of the remote probe zipapp: probe this host and print ``{"euid", "identity", "profile"}``.

With ``--status VENV`` (``dlsetup status``) it also prints ``installed``: the package states, reboot
markers and what the framework venv VENV holds (:func:`dlsetup.probe.installed.read_installed`), read
over the same runner, so the host is asked once.

Runs on the target with nothing but its own Python 3.9+; see :mod:`dlsetup.remote`.
"""

import json
import os
import sys

from dlsetup.probe import Host, probe_host


def _first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def identity() -> dict:
    """What tells this machine from another (see dlsetup.fleet.IDENTITY_KEYS): the running kernel's boot
    id, the root filesystem's device and inode, /etc/machine-id, and the DMI product UUID (root only)."""
    try:
        st = os.stat("/")
        root = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        root = ""
    return {"boot_id": _first_line("/proc/sys/kernel/random/boot_id"), "root": root,
            "machine_id": _first_line("/etc/machine-id"),
            "product_uuid": _first_line("/sys/class/dmi/id/product_uuid").lower()}


def main() -> None:
    args = sys.argv[1:]
    venv = args[args.index("--status") + 1] if "--status" in args[:-1] else None
    host = Host.live()
    try:
        if venv is not None:
            from dlsetup.probe.installed import COMMANDS

            host.start(list(COMMANDS.items()))  # runs while the probe reads
        profile = probe_host(host, enrich=False)
        installed = None
        if venv is not None:
            from dlsetup.probe.installed import read_installed

            installed = read_installed(host, venv)
    finally:
        host.close()
    doc = {"euid": os.geteuid(), "identity": identity(), "profile": profile.to_dict()}
    if installed is not None:
        doc["installed"] = installed
    json.dump(doc, sys.stdout)


main()
