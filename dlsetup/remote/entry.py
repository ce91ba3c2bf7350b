"""``__main__`` of the remote probe zipapp: probe this host and print ``{"euid", "profile"}`` as JSON.

With ``--status VENV`` (``dlsetup status``) it also prints ``installed``: the package states, reboot
markers and what the framework venv VENV holds (:func:`dlsetup.probe.installed.read_installed`), read
over the same runner, so the host is asked once.

Runs on the target with nothing but its own Python 3.9+; see :mod:`dlsetup.remote`.
"""

import json
import os
import sys

from dlsetup.probe import Host, probe_host


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
    doc = {"euid": os.geteuid(), "profile": profile.to_dict()}
    if installed is not None:
        doc["installed"] = installed
    json.dump(doc, sys.stdout)


main()
