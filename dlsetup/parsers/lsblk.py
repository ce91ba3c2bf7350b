"""Parse lsblk output (``-J``, ``-P`` and the plain column table) into
:class:`~dlsetup.model.BlockDevice` records.

Columns read: NAME, KNAME, PATH, TYPE, SIZE, ROTA, TRAN, MODEL, SERIAL, MOUNTPOINT, MOUNTPOINTS, FSTYPE,
UUID, PKNAME, PTTYPE; any subset may be present and others are ignored. Devices are returned flat in
lsblk's order; one that lsblk shows under several parents (an LVM volume spanning disks, an md array)
is returned once, with its first parent. ``media`` is derived (see :func:`_media`); a partition or
holder without a transport of its own takes transport and media from its parent.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Iterator, Optional

from dlsetup.model import BlockDevice

#: A parsed lsblk row: lower-case column name -> value as lsblk printed it, plus "_parent".
Row = dict

_VIRTUAL_TRANSPORTS = {"virtio", "xen"}
#: Models that hypervisors give their emulated disks.
_VIRTUAL_MODELS = re.compile(r"QEMU|VBOX|VMware|Virtual disk|Msft Virtual|Xen|Virtio", re.IGNORECASE)
#: Kernel names that only virtual block drivers use: virtio-blk, Xen, zram, ramdisk, loop.
_VIRTUAL_NAMES = re.compile(r"^(?:vd[a-z]+|xvd[a-z]+|zram\d+|ram\d+|loop\d+)")
_TREE_CHARS = " |`-\u251c\u2514\u2502\u2500"  # ASCII and UTF-8 (├ └ │ ─) tree drawing
_SIZE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<unit>[BKMGTPE]?)$")
_UNITS = "BKMGTPE"
_PAIR = re.compile(r'([A-Z][A-Z0-9_:%-]*)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _text(value: Any) -> Optional[str]:
    """A cell as a stripped string; empty and null are None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _bool(value: Any) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    return {"0": False, "1": True, "false": False, "true": True}.get((_text(value) or "").lower())


def _size(value: Any) -> Optional[int]:
    """Bytes from ``-b`` integers or from human sizes such as "223.6G" (1024-based, lsblk's rounding)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _SIZE.match(_text(value) or "")
    if not match:
        return None
    return int(float(match["num"]) * 1024 ** _UNITS.index(match["unit"] or "B"))


def _mountpoints(row: Row) -> tuple[str, ...]:
    points = row.get("mountpoints")
    if isinstance(points, str):  # -P and the table print one mountpoint a line
        points = points.split("\n")
    if not isinstance(points, list):
        points = [row.get("mountpoint")]
    found = (_text(p) for p in points)
    return tuple(dict.fromkeys(p for p in found if p))


def _media(kind: Optional[str], name: str, transport: Optional[str], model: Optional[str],
           rotational: Optional[bool]) -> str:  # fmt: skip
    """What the device is made of, from the facts lsblk gives.

    Virtual disks are checked before the rotational flag because virtio and most hypervisors report
    their disks as rotational.
    """
    if kind == "rom":
        return "optical"
    if transport == "nvme" or name.startswith("nvme"):
        return "nvme"
    if (
        transport in _VIRTUAL_TRANSPORTS
        or kind == "loop"
        or _VIRTUAL_NAMES.match(name)
        or (model and _VIRTUAL_MODELS.search(model))
    ):
        return "virtual"
    if rotational is None:
        return "unknown"
    return "hdd" if rotational else "ssd"


def _devices(rows: Iterable[Row]) -> tuple[BlockDevice, ...]:
    """Rows to devices: first occurrence of each kernel name wins, parents resolved in order."""
    devices: dict[str, BlockDevice] = {}
    for row in rows:
        name = _text(row.get("kname")) or _text(row.get("name"))
        if not name or name in devices:
            continue
        parent = _text(row.get("pkname")) or row.get("_parent")
        upper = devices.get(parent) if parent else None
        kind = _text(row.get("type"))
        model = _text(row.get("model"))
        transport = _text(row.get("tran"))
        rotational = _bool(row.get("rota"))
        if transport is None and upper is not None:
            transport, media = upper.transport, upper.media
        else:
            media = _media(kind, name, transport, model, rotational)
        devices[name] = BlockDevice(
            name=name,
            type=kind,
            path=_text(row.get("path")),
            size_bytes=_size(row.get("size")),
            rotational=rotational,
            transport=transport,
            media=media,
            model=model,
            serial=_text(row.get("serial")),
            parent=parent,
            fstype=_text(row.get("fstype")),
            uuid=_text(row.get("uuid")),
            partition_table=_text(row.get("pttype")),
            mountpoints=_mountpoints(row),
        )
    return tuple(devices.values())


def _json_rows(nodes: Any, parent: Optional[str]) -> Iterator[Row]:
    if not isinstance(nodes, list):
        return
    for node in nodes:
        if not isinstance(node, dict):
            continue
        row = {key.lower(): value for key, value in node.items() if isinstance(key, str)}
        row["_parent"] = parent
        yield row
        yield from _json_rows(row.get("children"), _text(row.get("kname")) or _text(row.get("name")))


def parse_lsblk_json(text: str) -> tuple[BlockDevice, ...]:
    """Devices from ``lsblk -J`` (with or without ``-b``), nested children flattened."""
    try:
        data = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(data, dict):
        return ()
    return _devices(_json_rows(data.get("blockdevices"), None))


def parse_lsblk_pairs(text: str) -> tuple[BlockDevice, ...]:
    """Devices from ``lsblk -P`` (``KEY="value"`` pairs, ``\\xHH`` escapes)."""
    rows = []
    for line in text.splitlines():
        pairs = _PAIR.findall(line)
        if pairs:
            rows.append(
                {key.lower(): _ESCAPE.sub(lambda m: chr(int(m[1], 16)), value) for key, value in pairs}
            )
    return _devices(rows)


def _spans(line: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", line)]


def _column_of(span: tuple[int, int], headers: list[tuple[int, int]]) -> int:
    """The header a cell word belongs to: most overlap, else the nearest.

    lsblk left-aligns text columns under the start of their header and right-aligns numbers under
    its end, so a word always overlaps or sits next to its own header.
    """
    start, end = span

    def score(i: int) -> tuple[int, int]:
        h_start, h_end = headers[i]
        overlap = min(end, h_end) - max(start, h_start)
        distance = max(h_start - end, start - h_end, 0)
        return (overlap, -distance)

    return max(range(len(headers)), key=score)


def _table_rows(lines: list[str]) -> Iterator[Row]:
    names = [word.lower() for word in lines[0].split()]
    headers = _spans(lines[0])
    parents: list[str] = []  # tree path: parents[d] is the last device seen at depth d
    for line in lines[1:]:
        cells: dict[int, tuple[int, int]] = {}
        previous: Optional[int] = None
        for start, end in _spans(line):
            # a word under no header continues the text before it ("VMware Virtual S" under MODEL): the
            # first word of a cell always sits under its header (left-aligned text starts there,
            # right-aligned numbers end there)
            overlaps = any(min(end, h_end) > max(start, h_start) for h_start, h_end in headers)
            column = previous if previous is not None and not overlaps else _column_of((start, end), headers)
            previous = column
            first = cells.get(column, (start, end))[0]
            cells[column] = (first, end)
        row: Row = {names[i]: line[s:e] for i, (s, e) in cells.items()}
        raw_name = row.get("name")
        if raw_name is not None:
            name = raw_name.lstrip(_TREE_CHARS)
            depth = (len(raw_name) - len(name)) // 2
            row["name"] = name
            del parents[depth:]
            row["_parent"] = parents[-1] if parents else None
            parents.append(_text(row.get("kname")) or name)
        yield row


def parse_lsblk_table(text: str) -> tuple[BlockDevice, ...]:
    """Devices from plain ``lsblk [-o ...]`` output, with or without an ASCII or UTF-8 tree.

    Needs the header line (no ``-n``); a human SIZE such as "223.6G" gives an approximate byte count.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ()
    return _devices(_table_rows(lines))
