"""Which paths and URLs dlsetup accepts from its users: the one policy for mount points, the framework
venv and pip's index, shared by command-line options and the config file.

Pure (no I/O): each check takes the text as given and returns it normalised, or raises a one-line
:class:`~dlsetup.errors.UsageError`. The paths are paths *on the target host*, so nothing is looked up
on the machine running dlsetup.

Both kinds of path must be
  * absolute, made of at most 4095 characters, each component at most 255;
  * free of ``.`` and ``..`` components (``/data/../etc`` is refused, not resolved);
  * made of the POSIX portable filename characters: letters, digits, ``.``, ``_`` and ``-``, plus ``+``
    and ``@``. Whitespace, control characters, ``\\``, ``:``, ``#``, ``,``, quotes and anything non-ASCII
    are refused: ``/etc/fstab`` separates fields by blanks and ends lines at a newline (a tab or a newline
    in a mount point would write a field or a whole line of its own), Ansible's ``mount`` module escapes
    only a few of them, ``--storage`` splits on ``:``, and ``PATH`` splits a venv's ``bin`` on ``:``.
    Repeated slashes are folded (``//data/`` is ``/data``).

**Mount points.** dlsetup makes *new, empty* filesystems for datasets and checkpoints. Mounted over a
directory that already holds files, an empty filesystem hides them: over ``/etc`` or ``/usr`` the host
does not come back from the next boot, over ``/home/alice`` or ``/root`` it hides ``.ssh/authorized_keys``
and locks people out, over ``/var/lib/dpkg`` it loses the package database. So a mount point is refused
  * in a system tree (the tree's root or anywhere below it): :data:`SYSTEM_TREES`, the OS's programs,
    configuration, boot files, kernel interfaces, package and init state, logs, spools and cleaned
    temporary directories;
  * on a shared directory itself (a new directory below it is fine): :data:`SHARED_DIRS`, where other
    people's files or mounts live: ``/home`` and each home, ``/root``, ``/mnt``, ``/media``, ``/opt``;
  * on any ancestor of either: ``/``, ``/var``.
``/var/lib`` is package, init and service state (dpkg, apt, systemd, a database's files), except the
container engines' stores :data:`DATA_TREES` (``/var/lib/docker``, ``/var/lib/containers``,
``/var/lib/containerd``): container images on a fast array is a classic, and is accepted.
Accepted, for example: ``/data``, ``/scratch``, ``/srv``, ``/srv/datasets``, ``/mnt/data``,
``/home/alice/datasets``, ``/opt/data``, ``/var/lib/docker``, ``/root/checkpoints``.

**The framework venv.** ``python3 -m venv PATH`` writes ``PATH/bin/python3`` and ``pyvenv.cfg`` and pip
then installs into ``PATH/lib``: on ``/usr`` or ``/usr/local`` that overwrites the system's own Python.
The venv is refused where a mount point is (the container stores included): in a system tree (below
``/usr``, the distribution's territory, and the cleaned ``/tmp`` and ``/var/tmp`` included), on a shared
directory or an ancestor.

**pip's index** (``--pip-index-url``) is an ``http://`` or ``https://`` URL with a host, or a
``file:///`` URL of a local directory (a mirror on disk), at most 2048 characters, without blanks or
control characters. **Find-links** entries are such a URL or an absolute directory (blanks allowed:
they reach pip quoted).

**Plain http** is secure to pip only on loopback (``localhost``, ``127.0.0.0/8``, ``::1``) or on a host given
with ``--trusted-host`` (``--pip-trusted-host``: ``HOST`` or ``HOST:PORT``, as pip parses it). pip *ignores*
any other http index or find-links location with a warning and goes on with the indexes it has left (its
default one, when the ignored URL was the only one): :func:`pip_ignores` says which URL pip would ignore,
exactly as pip's ``PipSession.is_secure_origin`` decides, so that dlsetup refuses it instead.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import reprlib
from typing import Iterable, Optional, Tuple
from urllib.parse import urlsplit

from dlsetup.errors import UsageError

#: The path and everything below it belongs to the OS (``*`` matches within one component).
SYSTEM_TREES: Tuple[str, ...] = (
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc", "/boot", "/efi",
    "/dev", "/proc", "/sys", "/run", "/tmp", "/snap", "/lost+found",
    "/var/tmp", "/var/run", "/var/lock", "/var/log", "/var/spool", "/var/mail", "/var/backups",
    "/var/crash", "/var/lib", "/var/cache/apt", "/var/cache/debconf", "/var/cache/ldconfig",
    "/opt/rocm", "/opt/rocm-*", "/opt/nvidia",
)
#: Exceptions for mount points: container engines' stores, which a fast array is a classic for. (The rest
#: of /var/lib is package, init and service state: dpkg, apt, systemd, a database's files.)
DATA_TREES: Tuple[str, ...] = ("/var/lib/docker", "/var/lib/containers", "/var/lib/containerd")
#: The directory itself holds others' files or mounts; a new directory below it is fine.
SHARED_DIRS: Tuple[str, ...] = (
    "/home", "/home/*", "/root", "/mnt", "/media", "/media/*", "/opt", "/var/cache", "/var/opt",
    "/var/local",
)

MAX_PATH = 4095
MAX_COMPONENT = 255
MAX_URL = 2048
_COMPONENT = re.compile(r"^[A-Za-z0-9._+@-]+$")
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 2
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, whatever ``value`` is or holds: error messages
    quote what they refuse, and must stay one short line."""
    try:
        text = _repr.repr(value)
    except Exception:  # a hostile __repr__: say what it is, not what it says
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _parts(path: str) -> Tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def _matches(parts: Tuple[str, ...], pattern: str) -> bool:
    pattern_parts = _parts(pattern)
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts, strict=True))


def _is_within(parts: Tuple[str, ...], tree: str) -> bool:
    """``parts`` is ``tree`` or below it."""
    tree_parts = _parts(tree)
    return len(parts) >= len(tree_parts) and _matches(parts[:len(tree_parts)], tree)


def _is_ancestor(parts: Tuple[str, ...], pattern: str) -> bool:
    """``parts`` is a strict ancestor of what ``pattern`` names (``/`` is an ancestor of everything)."""
    pattern_parts = _parts(pattern)
    return len(parts) < len(pattern_parts) and _matches(parts, "/" + "/".join(pattern_parts[:len(parts)]))


def absolute_path(what: str, value: object) -> str:
    """``value`` as a normalised absolute path in the portable character set, or a UsageError."""
    if not isinstance(value, str):
        raise UsageError(f"{what}: expected an absolute path, got {quote(value)}")
    if not value.startswith("/"):
        raise UsageError(f"{what} {quote(value)} must be an absolute path")
    if len(value) > MAX_PATH:
        raise UsageError(f"{what} {quote(value)} is longer than {MAX_PATH} characters")
    parts = _parts(value)
    for part in parts:
        if part in (".", ".."):
            raise UsageError(f"{what} {quote(value)} must not contain '.' or '..' components")
        if len(part) > MAX_COMPONENT:
            raise UsageError(f"{what} {quote(value)} has a component longer than {MAX_COMPONENT} characters")
        if not _COMPONENT.match(part):
            bad = next(c for c in part if not _COMPONENT.match(c))
            raise UsageError(f"{what} {quote(value)} contains {bad!r}: use letters, digits and . _ - + @")
    return "/" + "/".join(parts)


def _refusal(path: str, trees: Iterable[str], allowed: Iterable[str] = ()) -> Optional[str]:
    """Why ``path`` is protected ("the system directory /etc", "inside ...", "the parent of ..."), or None."""
    parts = _parts(path)
    if not parts:
        return "the root directory"
    if any(_is_within(parts, tree) for tree in allowed):
        return None
    for tree in trees:
        if _is_within(parts, tree):
            inside = "/" + "/".join(parts[:len(_parts(tree))])
            return f"the system directory {path}" if inside == path else f"inside the system directory {inside}"
        if _is_ancestor(parts, tree):
            return f"the parent of the system directory {tree}"
    for shared in SHARED_DIRS:
        if _matches(parts, shared):
            return f"the shared directory {path}"
        if _is_ancestor(parts, shared):
            return f"the parent of the shared directory {shared}"
    return None


def mount_point(value: object) -> str:
    """A mount point for a new, empty filesystem: normalised, or a UsageError naming why not."""
    path = absolute_path("storage: mount point", value)
    why = _refusal(path, SYSTEM_TREES, DATA_TREES)
    if why is not None:
        raise UsageError(f"storage: mount point {path} is {why}: an empty filesystem mounted there would "
                         f"hide the files kept there; use a directory of its own, e.g. /data")
    return path


def venv_path(value: object) -> str:
    """A path for the framework venv: normalised, or a UsageError naming why not."""
    path = absolute_path("venv", value)
    why = _refusal(path, SYSTEM_TREES)
    if why is not None:
        raise UsageError(f"venv {path} is {why}: python3 -m venv and pip would write into it; "
                         f"use a directory of its own, e.g. /opt/dlsetup/venv")
    return path


def index_url(value: object, what: str = "pip index URL") -> str:
    """pip's ``--index-url``: http(s) with a host, or file:/// of a local directory."""
    if not isinstance(value, str):
        raise UsageError(f"{what}: expected a URL, got {quote(value)}")
    text = value.strip()
    if len(text) > MAX_URL:
        raise UsageError(f"{what} {quote(text)} is longer than {MAX_URL} characters")
    if not text or _BLANK_OR_CONTROL.search(text):
        raise UsageError(f"{what} {quote(text)} must be one URL without blanks or control characters")
    try:
        url = urlsplit(text)
        host, _ = url.hostname, url.port  # port: a ValueError when it is not a number
    except ValueError:
        raise UsageError(f"{what} {quote(text)} is not a valid URL") from None
    scheme = url.scheme.lower()
    if scheme in ("http", "https"):
        if not host:
            raise UsageError(f"{what} {quote(text)} has no host: use e.g. https://mirror.example/simple")
        return text
    if scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise UsageError(f"{what} {quote(text)}: a file URL names a local directory, e.g. file:///srv/simple")
        return text
    raise UsageError(f"{what} {quote(text)} is not an http://, https:// or file:/// URL")


def find_links(value: object) -> str:
    """One ``--pip-find-links`` entry: a URL as for the index, or an absolute directory."""
    if not isinstance(value, str):
        raise UsageError(f"pip find-links: expected a directory or URL, got {quote(value)}")
    if "://" in value:
        return index_url(value, "pip find-links URL")
    if not value.startswith("/") or len(value) > MAX_PATH or re.search(r"[\x00-\x1f\x7f]", value):
        raise UsageError(f"pip find-links {quote(value)} must be an absolute directory or a URL")
    return value


def _host_port(netloc: str) -> Tuple[Optional[str], Optional[int]]:
    """pip's ``parse_netloc``: host and port of ``HOST[:PORT]``, a bare IPv6 address bracketed first."""
    if netloc.count(":") >= 2 and "@" not in netloc and "[" not in netloc:
        netloc = f"[{netloc}]"
    url = urlsplit(f"https://{netloc}")
    return url.hostname, url.port  # port: a ValueError when it is not a number in 0-65535


def trusted_host(value: object) -> str:
    """One ``--pip-trusted-host`` entry, as pip's ``--trusted-host`` takes it: ``HOST`` (every port) or
    ``HOST:PORT``; an IPv6 address bare or in brackets."""
    if not isinstance(value, str):
        raise UsageError(f"pip trusted host: expected HOST or HOST:PORT, got {quote(value)}")
    text = value.strip()
    bad = (not text or len(text) > 255 or _BLANK_OR_CONTROL.search(text) is not None
           or any(c in text for c in "/@?#\\"))
    try:
        host, _ = (None, None) if bad else _host_port(text)
    except ValueError:
        host = None
    if not host:
        raise UsageError(f"pip trusted host {quote(text)} is not HOST or HOST:PORT (a host, not a URL: "
                         f"e.g. mirror.lan or mirror.lan:8080)")
    return text


def _same_host(host: str, trusted: str) -> bool:
    """pip's host test: an address against the trusted one as a network (one address), else names, any case."""
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(trusted)
    except ValueError:
        return host.lower() == trusted.lower()


def _is_loopback(host: str) -> bool:
    """What pip trusts over plain http without being told (its SECURE_ORIGINS): localhost, 127.0.0.0/8, ::1."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def pip_ignores(url: str, trusted_hosts: Iterable[str] = ()) -> Optional[str]:
    """The host of ``url`` when pip would ignore that index or find-links location: a plain ``http://`` URL
    whose host is neither loopback nor one of ``trusted_hosts`` (pip's ``--trusted-host`` values, matched as
    pip matches them: the host, and the port when the entry names one). None for https, file URLs, local
    paths, loopback and trusted hosts."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return None  # not a URL pip could use at all: the URL checks above refuse it
    if parts.scheme.lower() != "http" or not host:
        return None
    if _is_loopback(host):
        return None
    for entry in trusted_hosts:
        try:
            trusted, trusted_port = _host_port(entry)
        except ValueError:
            continue
        if trusted and _same_host(host, trusted) and (trusted_port is None or trusted_port == port):
            return None
    return host
