"""The JSON documents dlsetup prints and reads back, and how it reads them safely.

``probe`` prints a host profile (its schema: ``dlsetup/schema/host-profile.schema.json``), ``check`` its
findings, ``plan`` a plan, ``verify`` its checks, ``provision --json`` one result line per host; with an
inventory, ``probe`` and ``check`` print ``{host: document}`` where a host that could not be probed has a
failure ``{host, status, message}``. ``dlsetup report`` reads any of these back, and ``verify`` reads
the workload's document from the venv's own interpreter; neither trusts what it reads:

* :func:`decode` caps the size and refuses what is not UTF-8; :func:`loads` caps the nesting depth (the
  parser's own recursion guard, then an iterative walk, before anything else recurses into it) and
  turns every parse failure into one short line;
* :func:`problem` checks a document against the schema of its kind and names the first field that is
  wrong, in at most a line (``checks[2].figures.tflops: expected a number, got 'fast'``).
"""

from __future__ import annotations

import gc
import json
import os
import stat
from functools import lru_cache
from importlib.resources import files
from typing import Any, Dict, Optional

from dlsetup.paths import quote

#: A probe document is a few KiB: this holds the ``probe -i`` of a fleet of thousands of hosts, and keeps
#: what a hostile file can cost to parse to seconds and well under a GiB.
MAX_BYTES = 16 * 1024 * 1024
#: The host profile nests 5 levels; anything deeper than this is not a dlsetup document.
MAX_DEPTH = 32

_STR_OR_NULL = {"type": ["string", "null"]}
_STATUS = {"enum": ["pass", "warn", "fail"]}

CHECK = {
    "type": "object",
    "required": ["findings"],
    "properties": {
        "host": _STR_OR_NULL,
        "machine": _STR_OR_NULL,
        "source": {"type": "string"},
        "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
        "findings": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "severity", "message"],
            "properties": {"id": {"type": "string"}, "severity": {"enum": ["pass", "info", "warn", "fail"]},
                           "message": {"type": "string"}, "hint": _STR_OR_NULL},
        }},
    },
}

PLAN = {
    "type": "object",
    "required": ["roles", "decisions"],
    "properties": {
        "host": _STR_OR_NULL,
        "machine": _STR_OR_NULL,
        "roles": {"type": "array", "items": {"type": "string"}},
        "decisions": {"type": "array", "items": {
            "type": "object",
            "required": ["topic", "choice", "reason"],
            "properties": {"topic": {"type": "string"}, "choice": {"type": "string"},
                           "reason": {"type": "string"}, "rule": {"type": "string"}},
        }},
        "variables": {"type": "object"},
        "reboot_required": {"type": "boolean"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "destroys": {"type": "array", "items": {"type": "string"}},
    },
}

_FIGURE = {"type": ["number", "string", "boolean", "null"]}
_NUMBER = {"type": "number"}

#: What the workload (``dlsetup/verify/payload.py``) prints, as far as dlsetup reads it.
PAYLOAD = {
    "type": "object",
    "required": ["checks", "devices"],
    "properties": {
        "kind": {"const": "verify"},
        "host": _STR_OR_NULL,
        "machine": _STR_OR_NULL,
        "python": _STR_OR_NULL,
        "quick": {"type": "boolean"},
        "elapsed_s": {"type": ["number", "null"]},
        "framework": {"anyOf": [{"type": "null"}, {
            "type": "object",
            "properties": {"name": _STR_OR_NULL, "version": _STR_OR_NULL, "cuda": _STR_OR_NULL,
                           "hip": _STR_OR_NULL, "nccl": _STR_OR_NULL},
        }]},
        "devices": {"type": "array", "items": {
            "type": "object",
            "required": ["device"],
            "properties": {"device": {"type": "string"}, "name": _STR_OR_NULL},
        }},
        "checks": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "status", "message", "figures", "device"],
            "properties": {
                "id": {"type": "string"}, "status": _STATUS, "message": {"type": "string"},
                "device": _STR_OR_NULL,
                "figures": {"type": "object", "additionalProperties": _FIGURE,
                            "properties": {"fraction_of_peak": _NUMBER, "peak": _NUMBER}},
            },
            # the figures the datasheet comparison divides
            "allOf": [
                {"if": {"properties": {"id": {"enum": ["matmul.bf16", "matmul.fp16", "matmul.fp32"]}}},
                 "then": {"properties": {"figures": {"required": ["tflops"], "properties": {"tflops": _NUMBER}}}}},
                {"if": {"properties": {"id": {"const": "memory.bandwidth"}}},
                 "then": {"properties": {"figures": {"required": ["gbps"], "properties": {"gbps": _NUMBER}}}}},
            ],
        }},
    },
}

#: What ``dlsetup verify --json`` prints: the workload's document with dlsetup's checks and verdict.
_PAYLOAD_PROPERTIES: Dict[str, Any] = PAYLOAD["properties"]  # type: ignore[assignment]
VERIFY = {
    **PAYLOAD,
    "required": ["kind", "checks"],
    "properties": {**_PAYLOAD_PROPERTIES, "kind": {"const": "verify"}, "venv": {"type": "string"},
                   "status": _STATUS},
}

#: One line of ``dlsetup provision --json``.
PROVISION = {
    "type": "object",
    "required": ["host", "status"],
    "properties": {
        "host": {"type": "string"},
        "status": {"type": "string"},
        **{k: {"type": "integer"} for k in ("ok", "changed", "failed", "unreachable", "skipped", "rescued",
                                              "ignored")},
        "reboot_required": {"type": ["boolean", "null"]},
        "failure": {"anyOf": [{"type": "null"}, {
            "type": "object", "properties": {"task": _STR_OR_NULL, "message": _STR_OR_NULL}}]},
        "check": {"type": "boolean"},
        "roles": {"type": "array", "items": {"type": "string"}},
    },
}

#: A host of ``probe -i`` / ``check -i`` that has no profile.
FAILURE = {
    "type": "object",
    "required": ["host", "status", "message"],
    "properties": {"host": {"type": "string"}, "status": {"type": "string"}, "message": {"type": "string"}},
}


#: ``dlsetup status --json``: one host's comparison with its plan (``{host: document}`` for several)
_STATUS_ITEM = {
    "type": "object",
    "required": ["topic", "expected", "found", "ok", "fix"],
    "properties": {"topic": {"type": "string"}, "expected": {"type": "string"}, "found": {"type": "string"},
                   "ok": {"type": "boolean"}, "fix": {"type": "string"}},
}
STATUS = {
    "type": "object",
    "required": ["host", "status", "drift", "items"],
    "properties": {"host": {"type": "string"}, "status": {"enum": ["in sync", "drift"]}, "basis": {"type": "string"},
                   "drift": {"type": "array", "items": _STATUS_ITEM}, "items": {"type": "array", "items": _STATUS_ITEM},
                   "notes": {"type": "array", "items": {"type": "string"}}},
}


class DocumentError(ValueError):
    """What is wrong with an input, in one short line (without the input's name)."""


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` containers: level by level, no recursion to exhaust."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        following = []
        for item in level:
            for child in (item.values() if isinstance(item, dict) else item):
                if isinstance(child, (dict, list)):
                    following.append(child)
        if not following:
            return False
        level = following
    return bool(level)


def read_input(path: "os.PathLike[str] | str", limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the file or pipe ``path`` (one more than the limit tells it is too
    large), without waiting on a FIFO nobody writes to. A pipe that has a writer (``<(dlsetup probe -i
    ...)``) is read to its end. Raises OSError when it cannot be opened, DocumentError when it is a device,
    socket or directory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)  # a FIFO's open never waits
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            kind = "a directory" if stat.S_ISDIR(mode) else "a device or socket"
            raise DocumentError(f"is {kind}, not a file")
        os.set_blocking(fd, True)  # a FIFO without a writer now reads as empty; one with a writer, to its end
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode(raw: bytes, *, max_bytes: int = MAX_BYTES) -> str:
    """``raw`` as UTF-8 text within the size cap, or a :class:`DocumentError`."""
    if len(raw) > max_bytes:
        raise DocumentError(f"larger than {max_bytes // 2**20} MiB: not a dlsetup document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DocumentError(f"not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})") from None
    return text


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON value, nesting at most ``max_depth`` deep, or a one-line :class:`DocumentError`."""
    collecting = gc.isenabled()
    gc.disable()  # millions of tiny containers would make each collection walk them all, again and again
    try:
        value = json.loads(text)
        too_deep = _too_deep(value, max_depth)
    except json.JSONDecodeError as err:
        raise DocumentError(f"not JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    except RecursionError:  # the parser's own guard, far deeper than max_depth
        raise DocumentError(f"nested deeper than {max_depth} levels: not a dlsetup document") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise DocumentError(f"not JSON: {quote(str(err), 100)}") from None
    finally:
        if collecting:
            gc.enable()
    if too_deep:
        raise DocumentError(f"nested deeper than {max_depth} levels: not a dlsetup document")
    return value


@lru_cache(maxsize=None)
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    if kind == "probe":
        schema = json.loads(files("dlsetup").joinpath("schema", "host-profile.schema.json").read_text("utf-8"))
    else:
        schema = SCHEMAS[kind]
    return Draft202012Validator(schema)


SCHEMAS: Dict[str, Dict[str, Any]] = {"check": CHECK, "plan": PLAN, "verify": VERIFY, "payload": PAYLOAD,
                                      "provision": PROVISION, "failure": FAILURE, "status": STATUS}


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the document"


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _branch_type(schema: Any) -> str:
    if isinstance(schema, dict) and "$ref" in schema:
        return "a mapping"
    kind = schema.get("type") if isinstance(schema, dict) else None
    return _TYPE_WORDS.get(kind, str(kind)) if isinstance(kind, str) else "another shape"


def _expected(error: Any) -> str:
    if error.validator == "anyOf":
        return "expected " + " or ".join(dict.fromkeys(_branch_type(b) for b in error.validator_value))
    if error.validator == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return "expected " + " or ".join(_TYPE_WORDS.get(t, str(t)) for t in types)
    if error.validator == "required":
        missing = next((k for k in error.validator_value if k not in error.instance), "?")
        return f"missing {quote(missing)}"
    if error.validator in ("enum", "const"):
        allowed = error.validator_value if error.validator == "enum" else [error.validator_value]
        return "expected one of " + ", ".join(quote(a, 20) for a in allowed[:6])
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        extra = next((k for k in error.instance if k not in known), "?")
        return f"unknown field {quote(extra)}"
    return f"fails {error.validator}"


def problem(kind: str, document: Any) -> Optional[str]:
    """The first thing wrong with ``document`` as a ``kind`` document, in one short line; None when it
    has the right shape."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(kind).iter_errors(document))
    if error is None:
        return None
    while error.validator == "anyOf" and error.context:  # e.g. null or a mapping
        # the branches whose type the value has say what is wrong inside it; else: a wrong type
        inner = [e for e in error.context if e.relative_path or e.validator != "type"]
        if not inner:
            break
        error = best_match(inner)
    where = _where(error.absolute_path)
    got = "" if error.validator in ("required", "additionalProperties") else f", got {quote(error.instance, 60)}"
    return f"{where}: {_expected(error)}{got}"
