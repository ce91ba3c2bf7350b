"""Parse ``dmidecode -t memory`` (SMBIOS type 17) into :class:`~dlsetup.model.MemoryInfo` keys.

Each record looks like::

    Handle 0x1100, DMI type 17, 84 bytes
    Memory Device
        Size: 32 GB
        Locator: DIMM_A1
        Bank Locator: P0_Node0_Channel0_Dimm0
        Speed: 3200 MT/s
        Configured Memory Speed: 2933 MT/s

An empty slot reads "Size: No Module Installed". dmidecode before 3.2 labelled speeds "MHz" though
SMBIOS stores them in MT/s, so both units are read as MT/s. Unreadable records are skipped.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

_SIZE = re.compile(r"^(\d+)\s*(bytes|kB|KB|MB|GB|TB)$")
_UNITS = {"bytes": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SPEED = re.compile(r"^(\d+)\s*(MT/s|MHz)$")
_CHANNEL = re.compile(r"channel[\s_-]*[A-Za-z0-9]+", re.IGNORECASE)
#: Newer dmidecode names first; dmidecode 2.x said "Configured Clock Speed".
_CONFIGURED_SPEED = ("Configured Memory Speed", "Configured Clock Speed")


def _records(text: str) -> Iterator[dict[str, str]]:
    """The tab-indented ``key: value`` fields of every "Memory Device" record (a common indent of the
    whole output, as in a pasted quote, is not part of it)."""
    record: dict[str, str] | None = None
    for line in textwrap.dedent(text).splitlines():
        if not line.startswith(("\t", " ")):
            if record is not None:
                yield record
            record = {} if line.strip() == "Memory Device" else None
            continue
        key, sep, value = line.strip().partition(":")
        if record is not None and sep:
            record[key.strip()] = value.strip()
    if record is not None:
        yield record


def _speed(value: str | None) -> int | None:
    match = _SPEED.match(value or "")
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _channel(record: dict[str, str]) -> str | None:
    """The locator text up to its channel name ("P0_Node0_Channel0"), or None when it names none."""
    for key in ("Bank Locator", "Locator"):
        match = _CHANNEL.search(record.get(key, ""))
        if match:
            return record[key][: match.end()].upper()
    return None


def parse_memory_devices(text: str) -> list[dict[str, Any]]:
    """One dict per populated slot: ``size_bytes``, ``speed_mts`` (configured, else rated) and ``channel``."""
    devices = []
    for record in _records(text):
        size = _SIZE.match(record.get("Size", ""))
        if not size or int(size.group(1)) == 0:
            continue
        configured = next(filter(None, (_speed(record.get(k)) for k in _CONFIGURED_SPEED)), None)
        devices.append(
            {
                "size_bytes": int(size.group(1)) * _UNITS[size.group(2)],
                "speed_mts": configured or _speed(record.get("Speed")),
                "channel": _channel(record),
            }
        )
    return devices


def parse_dmidecode_memory(text: str) -> dict[str, Any]:
    """``dimm_count``, ``dimm_speed_mts`` and ``populated_channels`` from ``dmidecode -t memory``.

    The speed is the slowest populated DIMM's (the channel runs at it). ``populated_channels`` is given
    only when every populated DIMM's locator names its channel; otherwise it is None.
    """
    devices = parse_memory_devices(text)
    if not devices:
        return {}
    speeds = [d["speed_mts"] for d in devices if d["speed_mts"]]
    channels = [d["channel"] for d in devices]
    return {
        "dimm_count": len(devices),
        "dimm_speed_mts": min(speeds) if speeds else None,
        "populated_channels": len(set(channels)) if all(channels) else None,
    }
