"""What the user asks for: frameworks and pins, from command-line options and/or a YAML config file."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import yaml

from dlsetup.errors import UsageError
from dlsetup.storage import StorageRequest, parse_array_option, storage_request

DEFAULT_VENV = "/opt/dlsetup/venv"
FRAMEWORKS = ("pytorch", "tensorflow", "jax")
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
    venv_path: str = DEFAULT_VENV
    storage: Optional[StorageRequest] = None  #: arrays for datasets and checkpoints; none: no storage role
    offline: bool = False  #: plan from the shipped tables only: do not ask the package indexes


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
_ALIASES = {"framework": "frameworks", "venv": "venv_path", "pip_find_link": "pip_find_links"}
#: CLI-only: --destroy-data, folded into the storage request (the config file says storage: destroy_data)
_DESTROY = "destroy_data"


def _key(name: str) -> str:
    key = name.replace("-", "_")
    return _ALIASES.get(key, key)


def _as_tuple(name: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UsageError(f"{name}: expected a name or a list of names, got {value!r}")


def _storage(value: Any, from_file: bool) -> StorageRequest:
    """The config file's ``storage:`` (a mapping, or a list of arrays) or the ``--storage`` options."""
    if not from_file:
        return StorageRequest(tuple(parse_array_option(text) for text in _as_tuple("storage", value)))
    if isinstance(value, list):
        value = {"arrays": value}
    if not isinstance(value, dict):
        raise UsageError(f"storage: expected a mapping with arrays and destroy_data, got {value!r}")
    return storage_request(value)


def _normalise(name: str, value: Any) -> Any:
    if name in ("frameworks", "pip_find_links", "container_runtimes"):
        value = _as_tuple(name, value)
        if name == "frameworks":
            value = tuple(dict.fromkeys(v.strip().lower() for v in value))
        if name == "container_runtimes":
            unknown = sorted(set(value) - set(RUNTIMES))
            if unknown:
                raise UsageError(f"container runtime {unknown[0]!r} is unknown: use {', '.join(RUNTIMES)}")
        return value
    if name in ("container_toolkit", "pip_offline", "offline"):
        if not isinstance(value, bool):
            raise UsageError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"{name}: expected a string, got {value!r}")
    text = str(value).strip()
    if name in _FORMATS:
        pattern, example = _FORMATS[name]
        if not pattern.match(text):
            raise UsageError(f"{name} {text!r} is not a version like {example!r} (quote it in YAML)")
    return text


def _read_config(config: Path) -> dict:
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"cannot read config {config}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"config {config} is not valid YAML: {str(err).splitlines()[0]}") from None
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
        for raw, value in mapping.items():
            name = _key(str(raw))
            if name not in _FIELDS:
                where = f"config {config}" if from_file else "options"
                raise UsageError(f"{where}: unknown option {raw!r}")
            if value is None:
                continue
            values[name] = _storage(value, from_file) if name == "storage" else _normalise(name, value)
    if destroy:
        if "storage" not in values:
            raise UsageError("--destroy-data applies to a storage layout: add --storage or a storage: section")
        values["storage"] = dataclasses.replace(values["storage"], destroy_data=True)
    return Request(**values)
