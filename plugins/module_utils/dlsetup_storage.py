"""The storage safety verdicts, shared by the planner (dlsetup.storage) and the role's disk module.

Pure: no I/O, standard library only, Python 3.9+ (it runs on the target inside the Ansible module, and
the planner loads this same file on the controller). The disk module gathers the facts of each member
disk (wipefs, blkid, /sys/class/block, /proc/self/mountinfo, /proc/mounts, /proc/swaps) and the
functions here decide; the fast tests call them with captured text.

One definition of "an array dlsetup made": its md UUID is in dlsetup's own record, RECORD_PATH, which
the role writes *before* ``mdadm --create --uuid=...`` runs. An md name (``host:data``) says nothing:
anyone can name an array ``data``.
"""

from __future__ import annotations

import json
import re

#: dlsetup's record of the arrays it created, on the target.
RECORD_PATH = "/etc/dlsetup/storage.json"
RECORD_VERSION = 1

#: wipefs/blkid TYPE -> the reason it gives; None: reported with another signature.
SIGNATURES = {
    "LVM2_member": "is an LVM physical volume",
    "swap": "is swap space",
    "linux_raid_member": "carries an md RAID signature",
    "gpt": "has a gpt partition table",
    "dos": "has a dos partition table",
    "PMBR": None,  # the protective MBR of a GPT disk: reported with gpt
}

_HEX = re.compile(r"[^0-9a-f]")


def md_uuid(text):
    """An md array UUID in one form, 32 lower-case hex digits, from mdadm's ``a:b:c:d``, blkid's
    ``8-4-4-4-12`` or an ``md-uuid-`` link name; None when ``text`` is not one."""
    if not isinstance(text, str):
        return None
    text = text.strip().lower()
    if text.startswith("md-uuid-"):
        text = text[len("md-uuid-"):]
    if not re.fullmatch(r"[0-9a-f:.\-]+", text or "-"):
        return None
    digits = _HEX.sub("", text)
    return digits if len(digits) == 32 else None


def mdadm_uuid(uuid):
    """The 32 hex digits as mdadm writes them (``--uuid=``): four groups of 8 joined by ``:``."""
    return ":".join(uuid[i:i + 8] for i in range(0, 32, 8))


def parse_record(text):
    """dlsetup's record: md UUID -> {name, level, members, mountpoint, created}. Unreadable or garbage
    text gives no entry (nothing is then ours, the safe side); each bad entry is skipped."""
    try:
        data = json.loads(text) if text and text.strip() else {}
    except ValueError:
        return {}
    arrays = data.get("arrays") if isinstance(data, dict) else None
    found = {}
    for entry in arrays if isinstance(arrays, list) else []:
        if not isinstance(entry, dict):
            continue
        uuid = md_uuid(entry.get("uuid"))
        members = entry.get("members")
        if uuid is None or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            continue
        found[uuid] = {
            "name": entry.get("name") if isinstance(entry.get("name"), str) else None,
            "level": entry.get("level") if isinstance(entry.get("level"), str) else None,
            "members": list(members),
            "mountpoint": entry.get("mountpoint") if isinstance(entry.get("mountpoint"), str) else None,
            "created": entry.get("created") if isinstance(entry.get("created"), str) else None,
        }
    return found


def add_to_record(text, uuid, name, level, members, mountpoint, created):
    """The record text with the array ``uuid`` in it, replacing any entry of that UUID or that name."""
    entries = [dict(v, uuid=k) for k, v in parse_record(text).items() if k != uuid and v["name"] != name]
    entries.append({"uuid": uuid, "name": name, "level": level, "members": list(members),
                    "mountpoint": mountpoint, "created": created})
    return json.dumps({"version": RECORD_VERSION, "arrays": entries}, indent=2, sort_keys=True) + "\n"


def planned_uuid(record, name, level, members):
    """The UUID recorded for the array ``name`` with exactly this level and these members, if any: a run
    killed between writing the record and ``mdadm --create`` creates it under the same UUID."""
    for uuid, entry in sorted(record.items()):
        if (entry["name"], entry["level"], sorted(entry["members"])) == (name, level, sorted(members)):
            return uuid
    return None


def ownership(uuid, record, level, members, degraded):
    """What an existing md array over exactly the requested ``members`` is to dlsetup.

    ``"ours"``: recorded by dlsetup with this level and these members (by id), and not degraded: it is
    assembled and kept, never re-created. Anything else is a reason not to touch the disks without
    --destroy-data, named by the returned phrase: ``"not made by dlsetup"`` (no UUID, or a UUID not in
    the record: whatever its md name), ``"made by dlsetup as LEVEL over N disk(s), not as asked"``, or
    ``"made by dlsetup, degraded: repair it (mdadm --add) or pass --destroy-data"``.
    """
    entry = record.get(md_uuid(uuid) or "")
    if entry is None:
        return "not made by dlsetup"
    if entry["level"] != level or sorted(entry["members"]) != sorted(members):
        return f"made by dlsetup as {entry['level']} over {len(entry['members'])} disk(s), not as asked"
    if degraded:
        return "made by dlsetup, degraded: repair it (mdadm --add) or pass --destroy-data"
    return "ours"


# -- the host side: facts gathered by the disk module, as plain dicts ----------------------------------
#
# One member disk's facts:
#   disk        the member as the layout names it (/dev/disk/by-id/...)
#   kernel      kernel name ("vdb"); None when the disk does not exist
#   signatures  wipefs TYPEs on the whole disk, e.g. ["gpt", "PMBR"] or ["linux_raid_member"]
#   partitions  kernel names of its partitions
#   holders     [{"name": "md127", "uuid": "<32 hex>" or None}] every device stacked above it, in order
#   raid_uuids  md UUIDs carried by the disk or its partitions (blkid UUID of a linux_raid_member)
#   mounts      [{"point": "/backup", "device": "md127"}] mounts of the disk, a partition or a holder,
#               from /proc/self/mountinfo (by device number) and /proc/mounts (by source path)
#   swaps       kernel names in its tree that are active swap
#   degraded    True when its md holder reports missing members (/sys/block/mdX/md/degraded)


def parse_mountinfo(text):
    """/proc/self/mountinfo: (major:minor, mount point, source), octal escapes decoded."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or ":" not in fields[2]:
            continue
        sep = fields.index("-", 6) if "-" in fields[6:] else len(fields)
        source = fields[sep + 2] if len(fields) > sep + 2 else ""
        found.append((fields[2], _unescape(fields[4]), _unescape(source)))
    return found


def parse_proc_mounts(text):
    """/proc/mounts (or /proc/self/mounts): (source, mount point)."""
    return [(_unescape(f[0]), _unescape(f[1])) for f in (line.split() for line in text.splitlines()) if len(f) >= 3]


def parse_swaps(text):
    """/proc/swaps: the swap sources (paths)."""
    return [line.split()[0] for line in text.splitlines()[1:] if line.strip()]


def parse_blkid_export(text):
    """``blkid -p -o export``: KEY -> value."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_wipefs_json(text):
    """``wipefs --no-act --json``: the signature TYPEs, in order."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return []
    return [s.get("type", "") for s in data.get("signatures", []) if isinstance(s, dict)]


def tree_mounts(numbers, mountinfo_text, mounts_text, resolve=lambda path: path):
    """The mounts of a disk's tree: ``numbers`` maps major:minor -> kernel name of the disk, its
    partitions and holders. Found by device number in /proc/self/mountinfo and by source path in
    /proc/mounts (``resolve``: realpath, e.g. /dev/md/backup -> /dev/md127), so a mount lsblk does not
    show still counts. [{"point", "device"}], each once."""
    found = [{"point": point, "device": numbers[number]}
             for number, point, _ in parse_mountinfo(mountinfo_text) if number in numbers]
    by_path = {f"/dev/{name}": name for name in numbers.values()}
    for source, point in parse_proc_mounts(mounts_text):
        name = by_path.get(resolve(source)) if source.startswith("/dev/") else None
        if name and {"point": point, "device": name} not in found:
            found.append({"point": point, "device": name})
    return found


def _unescape(value):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), value)


def disk_reasons(facts, ours=None):
    """Why writing to this disk would destroy data, one phrase per finding, in a stable order.

    ``ours``: {"devices": ["md127"], "mountpoint": "/data"} when the members form an array dlsetup made
    (its md device, or the stale partial assemblies of it); only what that array explains (its RAID
    signature, it as holder, its mount at its own mount point) is then left out: anything else counts.
    """
    if facts.get("kernel") is None:
        return ["does not exist"]
    found = []
    for kind in facts.get("signatures", []):
        if ours and kind == "linux_raid_member":
            continue
        text = SIGNATURES.get(kind, f"holds a filesystem ({kind})")
        if text:
            found.append(text)
    if facts.get("partitions"):
        found.append(f"has partitions {', '.join(facts['partitions'])}")
    for holder in facts.get("holders", []):
        if ours and holder["name"] in ours["devices"]:
            continue
        owner = " (an md array not made by dlsetup)" if holder["name"].startswith("md") and not ours else ""
        found.append(f"is in use by {holder['name']}{owner}")
    for mount in facts.get("mounts", []):
        if ours and mount["device"] in ours["devices"] and mount["point"] == ours["mountpoint"]:
            continue
        found.append(f"is mounted at {mount['point']} ({mount['device']})")
    if facts.get("swaps"):
        found.append("is in use as swap")
    return list(dict.fromkeys(found))


def array_state(facts_list, request, record):
    """Whether the members form the array dlsetup made for ``request`` ({name, level, members,
    mountpoint}): {"state": "absent"|"active"|"inactive", "uuid", "device", "stale", "why"}.

    "absent" also covers an array that is not ours: its disks are then judged by :func:`disk_reasons`,
    and ``why`` says what the array is to dlsetup (see :func:`ownership`).
    """
    absent = {"state": "absent", "uuid": None, "device": None, "stale": [], "why": None}
    if request.get("level") == "single" or any(f.get("kernel") is None for f in facts_list):
        return absent
    uuids = {u for f in facts_list for u in f.get("raid_uuids", [])}
    carried = all(f.get("signatures") == ["linux_raid_member"] and not f.get("partitions") for f in facts_list)
    if len(uuids) != 1 or not carried:
        return dict(absent, why="not made by dlsetup" if uuids else None)
    uuid = uuids.pop()
    holders = sorted({h["name"] for f in facts_list for h in f.get("holders", [])[:1]})
    active = [h for f in facts_list for h in f.get("holders", [])[:1] if h.get("active")]
    active_names = sorted({h["name"] for h in active})
    degraded = any(h.get("degraded") for h in active)
    why = ownership(uuid, record, request.get("level"), request.get("members", []), degraded)
    if why != "ours":
        return dict(absent, why=why)
    if len(active_names) == 1 and len(holders) == 1:
        return {"state": "active", "uuid": mdadm_uuid(uuid), "device": f"/dev/{active_names[0]}", "stale": [],
                "why": "ours"}
    return {"state": "inactive", "uuid": mdadm_uuid(uuid), "device": None,
            "stale": sorted(set(holders) - set(active_names)), "why": "ours"}


def verdict(facts_by_array, requests, record, destroy_data, allowed):
    """The decision of the disk check for the whole layout, before anything is written.

    ``facts_by_array``: per requested array, its members' facts; ``allowed``: what the plan lists for
    destruction, {"disks": [...], "arrays": [md UUIDs], "mounts": [mount points]}. Returns
    {"arrays": [array_state...], "disks": [[{disk, device, reasons}]...], "refusals": ["disk: reasons"],
    "wipe": [disks to wipe], "blocked": message or None}. ``blocked`` is set, and nothing may be
    written, when any disk holds something and destroy_data is off (safe mode), or when destroying would
    touch a disk, an md array or a mount point the plan did not list (it changed since the plan).
    """
    arrays, disks, refusals, wipe, outside = [], [], [], [], []
    allowed_disks = set(allowed.get("disks") or [])
    allowed_arrays = {md_uuid(u) for u in allowed.get("arrays") or []} - {None}
    allowed_mounts = set(allowed.get("mounts") or [])
    for facts_list, request in zip(facts_by_array, requests):
        state = array_state(facts_list, request, record)
        ours = None
        if state["state"] != "absent":
            devices = [state["device"][len("/dev/"):]] if state["device"] else state["stale"]
            ours = {"devices": devices, "mountpoint": request.get("mountpoint")}
        arrays.append(state)
        report = []
        for facts in facts_list:
            reasons = disk_reasons(facts, ours)
            report.append({"disk": facts["disk"], "device": facts.get("device"), "reasons": reasons})
            if not reasons:
                continue
            refusals.append(f"{facts['disk']}: {', '.join(reasons)}")
            if facts.get("kernel") is None:
                continue
            wipe.append(facts["disk"])
            if facts["disk"] not in allowed_disks:
                outside.append(f"{facts['disk']} (the plan did not list this disk)")
            for uuid in sorted(set(facts.get("raid_uuids", [])) - allowed_arrays):
                outside.append(f"{facts['disk']} (md array {mdadm_uuid(uuid)} is not in the plan)")
            for mount in facts.get("mounts", []):
                if mount["point"] not in allowed_mounts and not (ours and mount["device"] in ours["devices"]):
                    outside.append(f"{facts['disk']} (mount point {mount['point']} is not in the plan)")
        disks.append(report)
    blocked = None
    if refusals and not destroy_data:
        blocked = (f"storage: refusing the whole layout, nothing was written. {'; '.join(refusals)}. "
                   "Free these disks, or set storage_destroy_data (dlsetup provision --destroy-data) to wipe them.")
    elif outside:
        blocked = (f"storage: refusing to wipe what the plan did not list, nothing was written: "
                   f"{'; '.join(dict.fromkeys(outside))}. Run dlsetup plan again and check what it destroys.")
    return {"arrays": arrays, "disks": disks, "refusals": refusals, "wipe": wipe, "blocked": blocked}
