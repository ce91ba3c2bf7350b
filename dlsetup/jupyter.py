"""How to reach the JupyterLab a plan sets up: its URL, the ``ssh -L`` line, where the token is. Pure.

The token itself is never printed: it stays in the file the jupyter role keeps on the host (readable by the
service's user only), out of terminal scrollback and dlsetup's run records.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
from typing import Any, List, Mapping, Optional

TOKEN_FILE = "/etc/dlsetup/jupyter/token.env"  #: the jupyter role's jupyter_config_dir/token.env


def invoking_user(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The user who ran dlsetup: the one sudo was run by, else the login user; None for root alone."""
    environ = os.environ if environ is None else environ
    name = environ.get("SUDO_USER") or ""
    if not name or name == "root":
        try:
            name = getpass.getuser()
        except (OSError, KeyError):
            return None
    return None if name == "root" else name


def access_lines(variables: Mapping[str, Any], host: str, local: bool) -> List[str]:
    """What to print after provisioning ``host`` with JupyterLab (``variables``: its plan's; ``local``: ``host``
    is the machine dlsetup runs on, named as the network knows it)."""
    if "jupyter" not in (variables.get("dlsetup_roles") or ()):
        return []
    address = str(variables.get("jupyter_listen_address") or "127.0.0.1")
    port = int(variables.get("jupyter_port") or 8888)
    scheme = "http" if variables.get("jupyter_tls", "none") == "none" else "https"
    user = str(variables.get("jupyter_user") or "") or "the service's user"
    ip = ipaddress.ip_address(address)
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    where = "this machine" if local else host
    lines = []
    if ip.is_loopback:
        lines.append(f"JupyterLab on {where}: {scheme}://127.0.0.1:{port}/lab"
                     + (" (listening on loopback only)" if not local else ""))
        lines.append(f"  from your computer: ssh -N -L {port}:{shown}:{port} {host}  then open "
                     f"{scheme}://127.0.0.1:{port}/lab")
    else:
        lines.append(f"JupyterLab on {where}: {scheme}://{host if ip.is_unspecified else shown}:{port}/lab")
    if scheme == "https" and variables.get("jupyter_tls") == "self-signed":
        lines.append("  the certificate is self-signed (/etc/dlsetup/jupyter/tls/jupyter.crt): check its "
                     "fingerprint before trusting it")
    lines.append(f"  log in with the token in {TOKEN_FILE} on {where} (readable by {user} only)")
    return lines
