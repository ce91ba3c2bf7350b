"""Small helpers shared by the readers. Standard library only, Python 3.9+ (runs on remote hosts too)."""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any, Dict, Iterable, Optional, Tuple

#: open() flags for a read that never waits: a FIFO or a terminal opened without O_NONBLOCK blocks
#: until someone writes to it (a bundle with a FIFO at proc/cpuinfo would hang the probe forever).
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 65536


def fields_of(cls: type, data: Dict[str, Any]) -> Dict[str, Any]:
    """The items of ``data`` that are fields of dataclass ``cls`` and known (not None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names and v is not None}


def merge_layers(layers: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge fact layers, most trusted first: a key keeps the first known value; ``sources`` accumulate."""
    merged: Dict[str, Any] = {}
    sources: list = []
    for layer in layers:
        for key, value in layer.items():
            if key == "sources":
                sources.extend(s for s in value if s not in sources)
            elif value is not None and merged.get(key) is None:
                merged[key] = value
    merged["sources"] = tuple(sources)
    return merged


def int_or_none(text: Optional[str], base: int = 10) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(text.strip(), base)
    except ValueError:
        return None


def read_regular(path: "os.PathLike[str] | str", limit: int,
                 whole: bool = True) -> Tuple[Optional[bytes], Optional[str]]:
    """The regular file ``path``, read without ever blocking: ``(data, None)``; ``(None, why)`` when it
    exists but is no regular file (a FIFO, a device, a socket, a directory) or, with ``whole``, holds
    more than ``limit`` bytes (without ``whole``: its first ``limit`` bytes); ``(None, None)`` when it
    cannot be opened (absent, unreadable).

    procfs and sysfs files are regular files (of size 0 or 4096 whatever they hold): they are read in
    chunks, up to ``limit`` bytes, since sysctl files refuse one huge read (ENOMEM)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None, None
    if not stat.S_ISREG(mode):  # not opened at all: opening a device node can have effects
        return None, f"is {_kind(mode)}, not a regular file"
    try:
        fd = os.open(path, _READ_FLAGS)
    except (OSError, ValueError):
        return None, None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped since the stat above
            return None, f"is {_kind(info.st_mode)}, not a regular file"
        if whole and info.st_size > limit:
            return None, f"is larger than {limit} bytes"
        wanted = limit + 1 if whole else limit  # one byte more tells a file over the limit
        chunks, total = [], 0
        while total < wanted:
            chunk = os.read(fd, min(_CHUNK, wanted - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            return None, f"is larger than {limit} bytes"
        return b"".join(chunks), None
    except OSError:
        return None, None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"
