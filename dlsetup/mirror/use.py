"""A mirror in a provision run: checked before anything changes, served from the controller, and the
hosts' variables that make the roles take every package and wheel from it.

A folder is served over HTTP on the controller's 127.0.0.1 (port ``DLSETUP_MIRROR_PORT``, default
:data:`DEFAULT_PORT`); an SSH host reaches it through its own Ansible connection (a reverse forward of the
same port to its 127.0.0.1), a chroot or this machine directly. A URL (a site's web server) is used as it is.
On the hosts the ``mirror_sources`` role stores the mirror key, a deb822 source signed-by that key and an apt
configuration (``APT_CONFIG`` for the run) whose only source is the mirror; pip gets the mirror's
``simple/`` index alone."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import socket
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from dlsetup.errors import UsageError
from dlsetup.mirror.contents import REPO_PREFIXES, Contents
from dlsetup.mirror.verify import Mirror, MirrorRefused, check_covers, verify

DEFAULT_PORT = 8642
PORT_ENV = "DLSETUP_MIRROR_PORT"
#: where the mirror_sources role keeps the mirror's key, source and apt configuration on a host
HOST_DIR = "/etc/dlsetup/mirror"


def port() -> int:
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UsageError(f"{PORT_ENV}={value!r}: expected a TCP port, 1 to 65535")
    return int(value)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def serve(root: Path, listen_port: Optional[int] = None) -> Iterator[str]:
    """Serve ``root`` read-only on 127.0.0.1 while the block runs; yields the base URL."""
    chosen = port() if listen_port is None else listen_port
    handler = functools.partial(_Quiet, directory=str(root))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", chosen), handler)
    except OSError as err:
        raise UsageError(f"cannot serve the mirror on 127.0.0.1:{chosen}: {err.strerror or err} "
                         f"(set {PORT_ENV} to a free port)") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def fetch_remote(url: str, dest: Path) -> Path:
    """The signed parts of the mirror at ``url`` (manifest, signature, key, each apt InRelease and the
    simple index pages) in ``dest``, so :func:`verify_remote` can check them; apt checks the packages
    against the signed index and pip the wheels against the index's sha256."""
    base = url.rstrip("/") + "/"

    def get(rel: str) -> None:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(base + rel, timeout=60) as answer:  # noqa: S310 - the user's mirror
                target.write_bytes(answer.read(64 << 20))
        except (OSError, ValueError) as err:
            raise MirrorRefused(f"mirror {url}: cannot read {rel}: {err}") from None

    for rel in ("manifest.json", "manifest.json.asc", "key.asc", "key.fingerprint"):
        get(rel)
    return dest


def verify_remote(url: str, pinned: Optional[str]) -> Mirror:
    """Check a mirror served at ``url``: its key, manifest signature, every InRelease and index page."""
    from dlsetup.mirror import keys
    from dlsetup.mirror.verify import pinned_fingerprint

    if True:  # the checked copy stays for the run: the hosts' variables read its key
        root = fetch_remote(url, Path(tempfile.mkdtemp(prefix="dlsetup-mirror-")))
        fingerprint = pinned_fingerprint(root, pinned)
        verdict = keys.key_verdict(root / "key.asc", fingerprint)
        if not verdict["ok"]:
            raise MirrorRefused(f"mirror {url}: its key file key.asc {verdict['reason']}, but {fingerprint} is pinned")
        if not keys.verified_by(root / "key.asc", root / "manifest.json.asc", root / "manifest.json"):
            raise MirrorRefused(f"mirror {url}: manifest.json is not signed by the mirror key {fingerprint}")
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        base = url.rstrip("/") + "/"
        for rel, entry in manifest["files"].items():
            if not (rel.endswith("/InRelease") or rel.endswith("/Packages") or rel.startswith("simple/")):
                continue
            try:
                with urllib.request.urlopen(base + rel, timeout=60) as answer:  # noqa: S310
                    data = answer.read(256 << 20)
            except (OSError, ValueError) as err:
                raise MirrorRefused(f"mirror {url}: cannot read {rel}: {err}") from None
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise MirrorRefused(f"mirror {url}: {rel} was changed since the mirror was made (sha256 differs)")
            if rel.endswith("/Packages"):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
        return Mirror(root, fingerprint, manifest)


#: every variable :func:`host_variables` sets: an ``-e`` of one of them would win over the mirror's (Ansible's
#: extra vars take precedence over inventory variables) and send the hosts past the mirror
MIRROR_VARIABLES = frozenset({
    "frameworks_pip_index_url", "frameworks_pip_vendor_indexes", "frameworks_pip_extra_index_urls",
    "frameworks_pip_find_links", "frameworks_pip_offline", "jupyter_pip_index_url", "jupyter_pip_find_links",
    "jupyter_pip_offline", "mirror_sources_url", "mirror_sources_key", "mirror_sources_fingerprint",
    "mirror_sources_release", "dlsetup_mirror_apt_config",
    *(f"{prefix}_{part}" for prefix in REPO_PREFIXES.values() for part in ("url", "suite", "key_url",
                                                                             "key_fingerprint")),
})


def host_variables(mirror: Mirror, base_url: str, contents: Contents) -> Dict[str, Any]:
    """The variables that make one host's roles take everything from the mirror at ``base_url``."""
    base = base_url.rstrip("/") + "/"
    key_text = (mirror.root / "key.asc").read_text(encoding="utf-8") if (mirror.root / "key.asc").is_file() else ""
    release = mirror.manifest.get("files", {}).get(f"apt/{contents.apt_repo}/InRelease", {}).get("sha256", "")
    apt_url = f"{base}apt/{contents.apt_repo}/"
    variables: Dict[str, Any] = {
        "frameworks_pip_index_url": f"{base}simple/",
        "frameworks_pip_vendor_indexes": [],
        "frameworks_pip_extra_index_urls": [],
        "frameworks_pip_find_links": [],
        "frameworks_pip_offline": False,
        "jupyter_pip_index_url": f"{base}simple/",
        "jupyter_pip_find_links": [],
        "jupyter_pip_offline": False,
    }
    if not release:  # the host needs no apt package (a cache of a fleet that has them): its apt stays as it is
        return variables
    variables.update({
        "mirror_sources_url": apt_url,
        "mirror_sources_key": key_text,
        "mirror_sources_fingerprint": mirror.fingerprint,
        "mirror_sources_release": release,
        "dlsetup_mirror_apt_config": f"{HOST_DIR}/apt.conf",
    })
    for prefix in REPO_PREFIXES.values():
        variables.update({f"{prefix}_url": apt_url, f"{prefix}_suite": "./", f"{prefix}_key_url": f"{base}key.asc",
                          f"{prefix}_key_fingerprint": mirror.fingerprint})
    return variables


def forward_args(listen: int) -> str:
    """ssh options that give an SSH host the controller's 127.0.0.1:``listen`` as its own."""
    return f"-R 127.0.0.1:{listen}:127.0.0.1:{listen} -o ExitOnForwardFailure=no"


def prepare(source: str, pinned: Optional[str], contents: Sequence[Contents], progress: Any = None
            ) -> Tuple[Mirror, bool]:
    """Check the mirror ``source`` (a folder or an http(s) URL) and that it covers ``contents``, before any
    change. Returns the mirror and whether it is a folder the controller serves."""
    if source.startswith(("http://", "https://")):
        mirror = verify_remote(source, pinned)
        local = False
    else:
        root = Path(source)
        if not root.is_dir():
            raise UsageError(f"mirror folder not found: {source}")
        mirror = verify(root, pinned, progress)
        local = True
    check_covers(mirror, contents)
    return mirror, local


def with_mirror(host_vars: Mapping[str, Mapping[str, Any]], mirror: Mirror, base_url: str,
                contents: Mapping[str, Contents], ssh_port: Optional[int],
                inventory_vars: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """``host_vars`` with each host's mirror variables (and the reverse forward when ``ssh_port``, after the
    ``ansible_ssh_extra_args`` the run or the inventory, ``inventory_vars``, gives the host)."""
    out: Dict[str, Dict[str, Any]] = {}
    for host, variables in host_vars.items():
        merged = {**variables, **host_variables(mirror, base_url, contents[host])}
        if ssh_port is not None:
            own = variables.get("ansible_ssh_extra_args") or (inventory_vars or {}).get(host, {}).get(
                "ansible_ssh_extra_args", "")
            merged["ansible_ssh_extra_args"] = " ".join(part for part in (str(own), forward_args(ssh_port)) if part)
        out[host] = merged
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
