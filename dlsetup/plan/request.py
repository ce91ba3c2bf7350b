"""What the user asks for: frameworks and pins, from command-line options and/or a YAML config file."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import yaml

from dlsetup import paths
from dlsetup.documents import DocumentError, read_input
from dlsetup.errors import UsageError
from dlsetup.paths import quote
from dlsetup.storage import FILESYSTEMS, LEVELS, StorageRequest, array_request, storage_request

DEFAULT_VENV = "/opt/dlsetup/venv"
#: one venv per framework by default, each under this root: /opt/dlsetup/venvs/pytorch, .../keras
DEFAULT_VENV_ROOT = "/opt/dlsetup/venvs"
FRAMEWORKS = ("pytorch", "tensorflow", "jax", "keras")
KERAS_BACKENDS = ("jax", "tensorflow", "torch")
#: JupyterLab listens here unless --jupyter-listen says otherwise (loopback: reach it with ssh -L)
DEFAULT_JUPYTER_LISTEN = "127.0.0.1:8888"
RUNTIMES = ("docker", "podman", "containerd")

_X_Y = re.compile(r"^\d+\.\d+$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_BRANCH = re.compile(r"^\d{3}$")


@dataclass(frozen=True)
class Request:
    """A plan request. ``None`` means "let the planner choose"."""

    frameworks: Tuple[str, ...] = ("pytorch",)
    driver_branch: Optional[str] = None  #: "580"
    cuda: Optional[str] = None  #: CUDA toolkit to install, "13.0"; none: wheels bring their own runtime
    rocm: Optional[str] = None  #: "7.2"
    torch: Optional[str] = None  #: "2.13" or "2.13.0"
    tensorflow: Optional[str] = None  #: "2.21" or "2.21.0"
    python: Optional[str] = None  #: "3.12"; none: the OS's python3
    container_toolkit: Optional[bool] = None
    container_runtimes: Tuple[str, ...] = ("docker",)
    pip_index_url: Optional[str] = None
    pip_find_links: Tuple[str, ...] = ()
    pip_offline: bool = False  #: install only from pip_find_links (pip --no-index)
    pip_trusted_hosts: Tuple[str, ...] = ()  #: pip --trusted-host: plain-http index/find-links hosts pip may use
    venv_path: str = DEFAULT_VENV
    storage: Optional[StorageRequest] = None  #: arrays for datasets and checkpoints; none: no storage role
    offline: bool = False  #: plan from the shipped tables only: do not ask the package indexes
    hold_kernel: bool = False  #: hold the kernel meta packages (only when asked: kernels keep their updates)
    keras_backend: Optional[str] = None  #: "jax", "tensorflow" or "torch"; none: the other framework, else torch
    shared_venv: bool = False  #: one venv (venv_path) for every framework; else one per framework under venv_root
    venv_root: str = DEFAULT_VENV_ROOT
    jupyter: bool = False  #: JupyterLab in its own venv, a kernel per framework venv, a systemd service
    jupyter_user: Optional[str] = None  #: who the service runs as; none: the invoking user
    jupyter_listen: str = DEFAULT_JUPYTER_LISTEN  #: "ADDR:PORT"; not loopback only with TLS
    jupyter_cert: Optional[str] = None  #: TLS certificate on the host (with jupyter_key)
    jupyter_key: Optional[str] = None
    jupyter_self_signed: bool = False  #: TLS with a certificate generated on the host
    mirror: Optional[str] = None  #: provision from this dlsetup mirror (a folder or an http(s) URL)
    mirror_fingerprint: Optional[str] = None  #: the mirror key's pinned fingerprint (40 or 64 hex digits)
    #: the site's own copies of vendor repositories (config file ``repositories:``), by repository name
    repositories: Tuple["SiteRepository", ...] = ()


@dataclass(frozen=True)
class SiteRepository:
    """A vendor repository of ``dlsetup/data/compat/os.toml`` (``[repositories.<name>]``) that the site serves
    itself (an internal mirror): its URL, and its key's URL and pinned fingerprint when they differ. The
    placeholders of the vendor's URLs ({cuda_repo}, {cuda_arch}, {codename}, ...) apply to these too."""

    name: str  #: "cuda", "nvidia_container_toolkit", "rocm"
    url: str
    key_url: Optional[str] = None  #: none: the vendor's key URL
    key_fingerprint: Optional[str] = None  #: none: the vendor's pinned fingerprint


#: option -> (pattern it must match, example) for the version-like options
_FORMATS = {
    "driver_branch": (_BRANCH, "580"),
    "cuda": (_X_Y, "13.0"),
    "rocm": (_X_Y, "7.2"),
    "torch": (_VERSION, "2.13.0"),
    "tensorflow": (_VERSION, "2.21.0"),
    "python": (_X_Y, "3.12"),
}
_FIELDS = {f.name for f in dataclasses.fields(Request)}
_ALIASES = {"framework": "frameworks", "venv": "venv_path", "pip_find_link": "pip_find_links",
            "pip_trusted_host": "pip_trusted_hosts"}
#: a user name as useradd takes it (Debian's NAME_REGEX, which also admits capitals)
_USER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,31}$")
#: CLI-only: --destroy-data, folded into the storage request (the config file says storage: destroy_data)
_DESTROY = "destroy_data"


def _key(name: str) -> str:
    key = name.replace("-", "_")
    return _ALIASES.get(key, key)


#: A config file is a few lines; anything this large is not one (and is not read further).
MAX_CONFIG_BYTES = 1024 * 1024
_STORAGE_KEYS = ("arrays", "destroy_data")
_ARRAY_KEYS = ("mountpoint", "level", "filesystem", "disks")
#: More arrays or disks than any host has: the list is not a layout.
_MAX_ITEMS = 64
_NAME_TEXT = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")


def _as_tuple(name: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and len(value) <= _MAX_ITEMS and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UsageError(f"{name}: expected a name or a list of names, got {quote(value)}")


def _unknown(where: str, data: dict, known: Tuple[str, ...]) -> None:
    unknown = [k for k in data if k not in known]
    if unknown:
        raise UsageError(f"{where}: unknown key {quote(unknown[0])} (use {', '.join(known)})")


def _array(data: Any, where: str) -> dict:
    """One array of the storage layout, every field typed and the mount point checked by the path policy
    (:mod:`dlsetup.paths`); the storage module then builds the :class:`ArrayRequest`."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping of {', '.join(_ARRAY_KEYS)}, got {quote(data)}")
    _unknown(where, data, _ARRAY_KEYS)
    level, filesystem, disks = data.get("level"), data.get("filesystem", "ext4"), data.get("disks", [])
    if level is not None and (not isinstance(level, str) or level not in LEVELS):
        raise UsageError(f"storage: RAID level {quote(level)} is unknown: use {', '.join(LEVELS)}")
    if not isinstance(filesystem, str) or filesystem not in FILESYSTEMS:
        raise UsageError(f"storage: filesystem {quote(filesystem)} is not supported: use {', '.join(FILESYSTEMS)}")
    if (not isinstance(disks, list) or len(disks) > _MAX_ITEMS
            or not all(isinstance(d, str) and _NAME_TEXT.match(d) for d in disks)):
        raise UsageError(f"storage: disks must be a list of disk names, got {quote(disks)}")
    return {"mountpoint": paths.mount_point(data.get("mountpoint", "/data")), "level": level,
            "filesystem": filesystem, "disks": disks}


def _storage(value: Any, from_file: bool) -> StorageRequest:
    """The config file's ``storage:`` (a mapping, or a list of arrays) or the ``--storage`` options."""
    if not from_file:
        arrays = []
        for text in _as_tuple("storage", value):
            mountpoint, level, filesystem, disks = (text.split(":", 3) + ["", "", ""])[:4]
            arrays.append(array_request(_array({"mountpoint": mountpoint, "level": level or None,
                                                "filesystem": filesystem or "ext4",
                                                "disks": [d for d in disks.split(",") if d]}, "--storage")))
        return StorageRequest(tuple(arrays))
    if isinstance(value, list):
        value = {"arrays": value}
    if not isinstance(value, dict):
        raise UsageError(f"storage: expected a mapping with arrays and destroy_data, got {quote(value)}")
    _unknown("storage", value, _STORAGE_KEYS)
    arrays = value.get("arrays", [{}])
    if not isinstance(arrays, list) or not arrays or len(arrays) > _MAX_ITEMS:
        raise UsageError(f"storage: arrays must be a non-empty list of mappings, got {quote(arrays)}")
    checked = {"arrays": [_array(a, f"storage: array {i + 1}") for i, a in enumerate(arrays)]}
    if "destroy_data" in value:
        checked["destroy_data"] = value["destroy_data"]
    return storage_request(checked)


def _normalise(name: str, value: Any) -> Any:
    if name in ("frameworks", "pip_find_links", "container_runtimes", "pip_trusted_hosts"):
        value = _as_tuple(name, value)
        if name == "frameworks":
            value = tuple(dict.fromkeys(v.strip().lower() for v in value))
        if name == "container_runtimes":
            unknown = sorted(set(value) - set(RUNTIMES))
            if unknown:
                raise UsageError(f"container runtime {quote(unknown[0])} is unknown: use {', '.join(RUNTIMES)}")
        if name == "pip_find_links":
            value = tuple(paths.find_links(v) for v in value)
        if name == "pip_trusted_hosts":
            value = tuple(dict.fromkeys(paths.trusted_host(v) for v in value))
        return value
    if name in ("container_toolkit", "pip_offline", "offline", "hold_kernel", "shared_venv", "jupyter",
                "jupyter_self_signed"):
        if not isinstance(value, bool):
            raise UsageError(f"{name}: expected true or false, got {quote(value)}")
        return value
    if name in ("venv_path", "venv_root"):
        return paths.venv_path(value)
    if name in ("jupyter_cert", "jupyter_key"):
        if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "\n\t\x00"):
            raise UsageError(f"{name}: expected an absolute path on the host, got {quote(value)}")
        return value
    if name == "keras_backend":
        if not isinstance(value, str) or value.strip().lower() not in KERAS_BACKENDS:
            raise UsageError(f"keras backend {quote(value)} is unknown: use {', '.join(KERAS_BACKENDS)}")
        return value.strip().lower()
    if name == "jupyter_user":
        if not isinstance(value, str) or not _USER.match(value):
            raise UsageError(f"jupyter user {quote(value)} is not a user name")
        return value
    if name == "jupyter_listen":
        return jupyter_listen(value)
    if name == "repositories":
        return _repositories(value)
    if name == "pip_index_url":
        return paths.index_url(value)
    if name == "mirror_fingerprint":
        return _fingerprint("mirror_fingerprint", value)
    if name == "mirror" and (not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\t\0")):
        raise UsageError(f"mirror: expected a folder or an http(s) URL, got {quote(value)}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"{name}: expected a string, got {quote(value)}")
    text = str(value).strip()
    if name in _FORMATS:
        pattern, example = _FORMATS[name]
        if not pattern.match(text):
            raise UsageError(f"{name} {quote(text)} is not a version like {example!r} (quote it in YAML)")
    return text


def _fingerprint(where: str, value: Any) -> str:
    """A pinned OpenPGP fingerprint, 40 or 64 hex digits (spaces allowed), upper case without spaces."""
    text = "".join(value.split()).upper() if isinstance(value, str) else ""
    if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", text):
        raise UsageError(f"{where}: expected 40 or 64 hex digits, got {quote(value)}")
    return text


_SITE_REPO_KEYS = ("url", "key_url", "key_fingerprint")
#: the placeholders the planner fills in a repository's URLs (:meth:`dlsetup.plan.planner.Planner.repository`)
_REPO_PLACEHOLDERS = ("cuda_repo", "cuda_arch", "codename", "rocm_suite", "rocm_version")


def _repo_url(where: str, value: Any, placeholders: Tuple[str, ...]) -> str:
    """An http(s):// or file:/// URL whose {placeholders} are among those the planner fills in for it."""
    import string

    if not isinstance(value, str) or not re.match(r"^(https?://[^/\s]+|file:///)", value) or any(
            c.isspace() or ord(c) < 32 or c == "\x7f" for c in value):
        raise UsageError(f"{where}: expected an http(s):// or file:/// URL, got {quote(value)}")
    try:
        names = [part[1] for part in string.Formatter().parse(value) if part[1] is not None]
    except ValueError:
        raise UsageError(f"{where}: unbalanced {{ or }} in {quote(value)}") from None
    bad = [n for n in names if n not in placeholders]
    if bad:
        raise UsageError(f"{where}: unknown placeholder {quote('{' + bad[0] + '}')} in {quote(value)} "
                         f"(use {', '.join('{' + n + '}' for n in placeholders)})")
    return value


def _repositories(value: Any) -> Tuple[SiteRepository, ...]:
    """The config file's ``repositories:``: repository name -> {url, key_url, key_fingerprint}."""
    from dlsetup.plan.compat import load

    known = tuple(load().repositories)
    if not isinstance(value, dict):
        raise UsageError(f"repositories: expected a mapping of repository name to url, key_url, key_fingerprint, "
                         f"got {quote(value)}")
    out = []
    for name, entry in value.items():
        if name not in known:
            raise UsageError(f"repositories: unknown repository {quote(name)} (use {', '.join(known)})")
        where = f"repositories: {name}"
        # {rocm_version}: the release the plan picks, known only for ROCm's repository
        placeholders = _REPO_PLACEHOLDERS if name == "rocm" else _REPO_PLACEHOLDERS[:-1]
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected a mapping of {', '.join(_SITE_REPO_KEYS)}, got {quote(entry)}")
        _unknown(where, entry, _SITE_REPO_KEYS)
        if "url" not in entry:
            raise UsageError(f"{where}: url is missing")
        fingerprint = entry.get("key_fingerprint")
        if fingerprint is not None:
            fingerprint = _fingerprint(f"{where}: key_fingerprint", fingerprint)
        if entry.get("key_url") is not None and fingerprint is None:
            raise UsageError(f"{where}: key_url needs key_fingerprint: pin the key that signs the site's repository")
        out.append(SiteRepository(
            name, _repo_url(f"{where}: url", entry["url"], placeholders),
            _repo_url(f"{where}: key_url", entry["key_url"], placeholders) if entry.get("key_url") is not None
            else None,
            fingerprint))
    return tuple(out)


def keras_backend(request: Request) -> Optional[str]:
    """The Keras backend a request plans (None without keras): the one asked for, else the other framework
    planned (the first of them), else torch."""
    if "keras" not in request.frameworks:
        return None
    if request.keras_backend:
        return request.keras_backend
    others = {"pytorch": "torch", "tensorflow": "tensorflow", "jax": "jax"}
    return next((others[f] for f in request.frameworks if f in others), "torch")


def venv_paths(request: Request) -> Tuple[str, ...]:
    """The framework venvs a request plans: the one shared venv, or one per framework under the venv root."""
    if request.shared_venv:
        return (request.venv_path,)
    return tuple(f"{request.venv_root}/{f}" for f in request.frameworks)


def pip_trust_problem(request: Request) -> Optional[str]:
    """Why pip on the hosts would ignore an index or find-links URL of ``request`` (one line naming the URL
    and the fix), or None. pip skips a plain-http location whose host is not loopback and not a
    --trusted-host with a warning only, and installs from whatever index it has left (its default one beside
    find-links): a build other than the one served (:func:`dlsetup.paths.pip_ignores`)."""
    locations = [("--pip-index-url", request.pip_index_url or "")]
    locations += [("--pip-find-links", link) for link in request.pip_find_links]
    if request.mirror:
        locations.append((f"--mirror {request.mirror}: its pip index", request.mirror.rstrip("/") + "/simple/"))
    for option, url in locations:
        host = paths.pip_ignores(url, request.pip_trusted_hosts)
        if host is not None:
            return (f"{option} {url} is plain http to {host}, a host pip does not trust: pip would skip it and "
                    f"take the packages from its other indexes. Use https, or pass --pip-trusted-host {host}")
    return None


def jupyter_listen(value: Any) -> str:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6): the address a literal IP, the port 1-65535."""
    import ipaddress

    text = value if isinstance(value, str) else ""
    addr, sep, port = text.rpartition(":")
    host = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        ip, number = None, 0
    if not sep or ip is None or not 0 < number < 65536 or (ip.version == 6 and not addr.startswith("[")):
        raise UsageError(f"--jupyter-listen {quote(value)} is not ADDR:PORT (e.g. 127.0.0.1:8888 or [::1]:8888)")
    return f"[{ip}]:{number}" if ip.version == 6 else f"{ip}:{number}"


def listen_is_loopback(listen: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(listen.rpartition(":")[0].strip("[]")).is_loopback


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: no aliases (``*name``: an alias bomb expands into gigabytes as soon
    as anything walks it, an error message included), no duplicate keys (which one wins is a guess)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {quote(key_node.value)}",
                                                            key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One short line for a YAML error: what, and where (PyYAML's own text quotes the document)."""
    if isinstance(err, yaml.MarkedYAMLError):
        problem = err.problem or err.context or "invalid YAML"
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{problem[:120]}{where}"
    return (str(err).splitlines() or ["invalid YAML"])[0][:160]


def _read_config(config: Path) -> dict:
    try:
        raw = read_input(config, MAX_CONFIG_BYTES)
    except OSError as err:
        raise UsageError(f"cannot read config {config}: {err.strerror or err}") from None
    except DocumentError as err:
        raise UsageError(f"cannot read config {config}: it {err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(f"config {config} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a dlsetup config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"config {config} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})") \
            from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise UsageError(f"config {config} is not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise UsageError(f"config {config} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config {config} must be a mapping of option: value")
    return data


def load_request(config: Optional[Path] = None, **cli_values: Any) -> Request:
    """Build a :class:`Request`: values from the YAML ``config`` file, overridden by the CLI values
    that are set (``None`` and empty tuples mean "not given"). Bad files or values raise UsageError."""
    values: dict[str, Any] = {}
    destroy = bool(cli_values.pop(_DESTROY, False))
    sources = [(_read_config(config) if config else {}, True)]
    sources.append(({k: v for k, v in cli_values.items() if v is not None and v != ()}, False))
    for mapping, from_file in sources:
        given: dict[str, Any] = {}
        for raw, value in mapping.items():
            name = _key(str(raw))
            where = f"config {config}" if from_file else "options"
            if name not in _FIELDS:
                raise UsageError(f"{where}: unknown option {quote(raw)}")
            if name in given:
                raise UsageError(f"{where}: {quote(given[name])} and {quote(raw)} are the same option")
            given[name] = raw
            if value is None:
                continue
            values[name] = _storage(value, from_file) if name == "storage" else _normalise(name, value)
    if "venv_path" in values and "venv_root" not in values:
        values.setdefault("shared_venv", True)  # --venv PATH names the one venv, as before
    if destroy:
        if "storage" not in values:
            raise UsageError("--destroy-data applies to a storage layout: add --storage or a storage: section")
        values["storage"] = dataclasses.replace(values["storage"], destroy_data=True)
    request = Request(**values)
    untrusted = pip_trust_problem(request)  # the same for every host: refused once, before any host is probed
    if untrusted:
        raise UsageError(untrusted)
    return request
