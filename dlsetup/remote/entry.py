"""``__main__`` of the remote probe zipapp: probe this host and print ``{"euid", "profile"}`` as JSON.

Runs on the target with nothing but its own Python 3.9+; see :mod:`dlsetup.remote`.
"""

import json
import os
import sys

from dlsetup.probe import Host, probe_host


def main() -> None:
    host = Host.live()
    try:
        profile = probe_host(host, enrich=False)
    finally:
        host.close()
    json.dump({"euid": os.geteuid(), "profile": profile.to_dict()}, sys.stdout)


main()
