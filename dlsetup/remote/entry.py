"""``__main__`` of the remote probe zipapp: probe this host and print ``{"euid", "identity", "profile"}``.

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
    host = Host.live()
    try:
        profile = probe_host(host, enrich=False)
    finally:
        host.close()
    json.dump({"euid": os.geteuid(), "identity": identity(), "profile": profile.to_dict()}, sys.stdout)


main()
