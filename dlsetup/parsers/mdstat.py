"""Parse ``/proc/mdstat`` into :class:`~dlsetup.model.MdArray` records.

The layout (``drivers/md/md.c``, ``md_seq_show``) is one header line per array followed by its block
lines, which the kernel indents by 6 spaces; some vendors (Synology) print them unindented, so lines
are attached to the last array header whatever their indentation::

    md127 : active raid5 sdh1[6] sdg1[4] sdc1[0](F)
          1464725760 blocks super 1.2 level 5, 64k chunk, algorithm 2 [6/5] [UUUUU_]
          [==>..................]  recovery = 12.6% (37043392/292945152) finish=127.5min
          bitmap: 1/1 pages [4KB], 65536KB chunk

"Personalities" and "unused devices" lines carry nothing about arrays and are skipped, as is any line
that cannot be read.
"""

from __future__ import annotations

import re
from dataclasses import replace

from dlsetup.model import MdArray, MdMember

_HEADER = re.compile(
    r"^(?P<name>md[\w/.-]*)\s*:\s*(?P<state>active|inactive)(?P<ro>\s*\([\w-]+\))?\s*(?P<rest>.*)$"
)
_MEMBER = re.compile(r"^(?P<device>[^\s\[\]()]+)\[(?P<role>\d+)\](?P<flags>(?:\([A-Z]\))*)$")
_BLOCKS = re.compile(r"^(?P<blocks>\d+) blocks(?: super (?P<super>\S+))?")
_COUNTS = re.compile(r"\[(?P<total>\d+)/(?P<active>\d+)\]\s*\[(?P<map>[U_]+)\]")
_SYNC = re.compile(r"\b(?P<action>recovery|resync|reshape|check)\s*=\s*(?:(?P<pct>\d+(?:\.\d+)?)%)?")

#: Member flags as md prints them, in the order of precedence when several are set.
_FLAG_STATES = (("F", "faulty"), ("S", "spare"), ("R", "replacement"), ("W", "write-mostly"))


def _member(token: str) -> MdMember | None:
    match = _MEMBER.match(token)
    if not match:
        return None
    flags = match["flags"]
    state = next((name for flag, name in _FLAG_STATES if f"({flag})" in flags), "active")
    return MdMember(device=match["device"], role=int(match["role"]), state=state)


def _header(match: re.Match) -> MdArray:
    state = match["state"] + (f" {match['ro'].strip()}" if match["ro"] else "")
    level = None
    members = []
    for token in match["rest"].split():
        member = _member(token)
        if member is not None:
            members.append(member)
        elif not members and level is None:
            level = token
    # md prints a "bitmap:" line for every running array that has one.
    bitmap = False if match["state"] == "active" else None
    return MdArray(name=match["name"], state=state, level=level, members=tuple(members), bitmap=bitmap)


def _detail(array: MdArray, line: str) -> MdArray:
    """Fold one block line of an array into it."""
    changes: dict = {}
    blocks = _BLOCKS.match(line)
    if blocks:
        changes["size_bytes"] = int(blocks["blocks"]) * 1024  # md counts 1 KiB blocks
        if blocks["super"]:
            changes["metadata"] = blocks["super"]
    counts = _COUNTS.search(line)
    if counts:
        total, active = int(counts["total"]), int(counts["active"])
        changes.update(devices_total=total, devices_active=active, degraded=active < total)
    sync = _SYNC.search(line)
    if sync:
        changes["sync_action"] = sync["action"]
        changes["sync_progress_pct"] = float(sync["pct"]) if sync["pct"] else None
    if line.startswith("bitmap:"):
        changes["bitmap"] = True
    return replace(array, **changes)


def parse_mdstat(text: str) -> tuple[MdArray, ...]:
    """Every md array listed in ``/proc/mdstat`` text, in file order."""
    arrays: list[MdArray] = []
    for raw in text.splitlines():
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            arrays.append(_header(header))
        elif arrays and line:
            arrays[-1] = _detail(arrays[-1], line)
    return tuple(arrays)


def md_membership(arrays: tuple[MdArray, ...]) -> dict[str, str]:
    """Map each member device's kernel name to the name of the array it belongs to."""
    return {member.device: array.name for array in arrays for member in array.members}
