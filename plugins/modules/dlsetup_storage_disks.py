#!/usr/bin/python3
"""Ansible module: the storage role's disk check (safe mode), wipe and record, on the target.

It gathers the facts of each member disk; the decisions are the pure functions of
plugins/module_utils/dlsetup_storage.py, which the planner runs too and the fast tests call directly.
"""

from __future__ import annotations

import datetime
import os
import uuid as uuidlib

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dlsetup.workstation.plugins.module_utils.dlsetup_storage import (
    RECORD_PATH, add_to_record, disk_reasons, md_uuid, parse_blkid_export, parse_mountinfo, parse_record, parse_swaps,
    parse_wipefs_json, planned_uuid, tree_mounts, verdict)

DOCUMENTATION = r"""
module: dlsetup_storage_disks
short_description: Check the member disks of the storage layout, wipe what the plan allows, record arrays
description:
  - C(state=inspect) (read-only, also in check mode) reports, per member, every reason writing to it
    would destroy data (partition table, partitions, filesystem/LVM/RAID/swap signatures, holders such as
    md arrays or LVM volumes, mounts seen in /proc/self/mountinfo or /proc/mounts, swap) and whether the
    members form the array dlsetup made (its md UUID in dlsetup's record, /etc/dlsetup/storage.json;
    never judged by md name). It fails, naming each disk and reason, when a disk holds anything and
    I(destroy_data) is false, or when wiping would touch a disk, md array or mount point outside
    I(destroy_disks), I(destroy_arrays), I(destroy_mounts) (what the plan listed).
  - C(state=wiped) makes the same check, then releases and erases exactly the disks it allows: swapoff,
    umount, stops md arrays and device-mapper devices holding them, then C(wipefs -a) on partitions and disk.
  - C(state=recorded) writes the array I(array) to dlsetup's record under a new md UUID (or the one
    recorded for it before) and returns it; the role then runs C(mdadm --create --uuid=) with it.
options:
  arrays: {description: The layout (storage_arrays)., type: list, elements: dict, default: []}
  array: {description: The array to record (state=recorded)., type: dict}
  state: {description: inspect, wiped or recorded., type: str, choices: [inspect, wiped, recorded], default: inspect}
  destroy_data: {description: Wipe instead of refusing., type: bool, default: false}
  destroy_disks: {description: Disks the plan lets this wipe., type: list, elements: str, default: []}
  destroy_arrays: {description: md UUIDs the plan lets this stop., type: list, elements: str, default: []}
  destroy_mounts: {description: Mount points the plan lets this unmount., type: list, elements: str, default: []}
  record: {description: Path of dlsetup's record., type: str, default: /etc/dlsetup/storage.json}
"""

RETURN = r"""
disks: {description: "Per array, per member: disk, device, reasons.", type: list, returned: always}
refusals:
  {description: "One line per member that holds something: 'disk: reason, reason'.", type: list, returned: always}
arrays:
  {description: "Per array: state (absent, active, inactive), uuid, device, stale, why.", type: list,
   returned: always}
wipe: {description: "The disks that destroy_data wipes.", type: list, returned: always}
uuid: {description: "state=recorded: the md UUID (mdadm form) to create the array with.", type: str}
"""

def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def _partitions(name: str) -> list[str]:
    base = f"/sys/class/block/{name}"
    return sorted(p for p in os.listdir(base) if os.path.exists(f"{base}/{p}/partition")) if os.path.isdir(base) else []


def _holders(name: str) -> list[str]:
    path = f"/sys/class/block/{name}/holders"
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _numbers(names: list[str]) -> dict[str, str]:
    """major:minor -> kernel name."""
    return {_read(f"/sys/class/block/{n}/dev").strip(): n for n in names}


class Disks:
    """The member disks as the kernel, libblkid and /proc see them now."""

    def __init__(self, module: AnsibleModule):
        self.module = module

    def run(self, *args: str) -> str:
        rc, out, err = self.module.run_command(list(args))
        if rc not in (0, 2):  # blkid: 2 = nothing found
            self.module.fail_json(msg=f"{' '.join(args)} failed ({rc}): {err.strip()}")
        return out

    def tree(self, name: str) -> list[str]:
        """The disk, its partitions and every holder above them, in order."""
        names = [name, *_partitions(name)]
        for n in list(names):
            stack = _holders(n)
            while stack:
                holder = stack.pop(0)
                if holder not in names:
                    names.append(holder)
                    stack += _holders(holder)
        return names

    def facts(self, disk: str) -> dict:
        """The facts of one member disk that plugins/module_utils/dlsetup_storage.py judges."""
        if not os.path.exists(disk):
            return {"disk": disk, "kernel": None, "device": None}
        device = os.path.realpath(disk)
        kernel = os.path.basename(device)
        parts = _partitions(kernel)
        tree = self.tree(kernel)
        raid = []
        for name in [kernel, *parts]:
            found = parse_blkid_export(self.run("blkid", "-p", "-o", "export", f"/dev/{name}"))
            if found.get("TYPE") == "linux_raid_member" and md_uuid(found.get("UUID")):
                raid.append(md_uuid(found.get("UUID")))
        holders = []
        for name in tree[len(parts) + 1:]:
            state = _read(f"/sys/block/{name}/md/array_state").strip()
            holders.append({"name": name, "active": state not in ("", "inactive", "clear"),
                            "degraded": _read(f"/sys/block/{name}/md/degraded").strip() not in ("", "0")})
        mounts = tree_mounts(_numbers(tree), _read("/proc/self/mountinfo"), _read("/proc/self/mounts"),
                             os.path.realpath)
        swaps = {os.path.basename(os.path.realpath(p)) for p in parse_swaps(_read("/proc/swaps"))}
        return {"disk": disk, "kernel": kernel, "device": device,
                "signatures": parse_wipefs_json(self.run("wipefs", "--no-act", "--json", device)),
                "partitions": parts, "holders": holders, "raid_uuids": sorted(set(raid)), "mounts": mounts,
                "swaps": sorted(swaps & set(tree))}


def _wipe(disks: Disks, name: str) -> None:
    tree = disks.tree(name)
    numbers = _numbers(tree)
    swaps = {os.path.basename(os.path.realpath(p)) for p in parse_swaps(_read("/proc/swaps"))}
    for kernel in reversed(tree):
        if kernel in swaps:
            disks.run("swapoff", f"/dev/{kernel}")
    points = {point for number, point, _ in parse_mountinfo(_read("/proc/self/mountinfo")) if number in numbers}
    for point in sorted(points, key=len, reverse=True):
        disks.run("umount", point)
    for kernel in reversed(tree[1:]):
        if kernel.startswith("md"):
            # erase the array's own signatures first: a new array of the same geometry over these disks
            # would otherwise show the old filesystem again, which mkfs then keeps
            if _read(f"/sys/block/{kernel}/md/array_state").strip() not in ("", "inactive", "clear"):
                disks.run("wipefs", "--all", f"/dev/{kernel}")
            disks.run("mdadm", "--stop", f"/dev/{kernel}")
        elif kernel.startswith("dm-"):
            disks.run("dmsetup", "remove", "--retry", _read(f"/sys/class/block/{kernel}/dm/name").strip())
    for kernel in reversed(tree[:len(_partitions(name)) + 1]):
        disks.run("wipefs", "--all", f"/dev/{kernel}")
    udevadm = disks.module.get_bin_path("udevadm")
    if udevadm:  # wipefs re-read the partition table; wait for udev to drop the old links
        disks.run(udevadm, "settle")


def _inspect(disks: Disks, params: dict) -> dict:
    arrays = params["arrays"]
    facts = [[disks.facts(m) for m in a.get("members") or []] for a in arrays]
    allowed = {"disks": params["destroy_disks"], "arrays": params["destroy_arrays"], "mounts": params["destroy_mounts"]}
    return verdict(facts, arrays, parse_record(_read(params["record"])), params["destroy_data"], allowed)


def _record(module: AnsibleModule) -> None:
    """Record the array before it is created, under the UUID mdadm --create is then given."""
    array, path = module.params["array"] or {}, module.params["record"]
    text = _read(path)
    record = parse_record(text)
    args = (array["name"], array["level"], array["members"])
    uuid = planned_uuid(record, *args) or uuidlib.uuid4().hex
    changed = uuid not in record
    if changed and not module.check_mode:
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(add_to_record(text, uuid, *args, array["mountpoint"], created))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    module.exit_json(changed=changed, uuid=":".join(uuid[i:i + 8] for i in range(0, 32, 8)))


def main() -> None:
    module = AnsibleModule(
        argument_spec={"arrays": {"type": "list", "elements": "dict", "default": []},
                       "array": {"type": "dict"},
                       "state": {"type": "str", "choices": ["inspect", "wiped", "recorded"], "default": "inspect"},
                       "destroy_data": {"type": "bool", "default": False},
                       "destroy_disks": {"type": "list", "elements": "str", "default": []},
                       "destroy_arrays": {"type": "list", "elements": "str", "default": []},
                       "destroy_mounts": {"type": "list", "elements": "str", "default": []},
                       "record": {"type": "str", "default": RECORD_PATH}},
        supports_check_mode=True,
    )
    if module.params["state"] == "recorded":
        _record(module)
    disks = Disks(module)
    result = _inspect(disks, module.params)
    if result["blocked"]:
        module.fail_json(msg=result["blocked"], **result)
    changed = False
    if module.params["state"] == "wiped" and result["wipe"]:
        changed = True
        if not module.check_mode:
            devices = {d["disk"]: d["device"] for report in result["disks"] for d in report}
            for disk in result["wipe"]:
                _wipe(disks, os.path.basename(devices[disk]))
            after = [[disks.facts(d["disk"]) for d in report] for report in result["disks"]]
            left = [f"{f['disk']}: {', '.join(disk_reasons(f))}" for report in after for f in report
                    if f["disk"] in result["wipe"] and disk_reasons(f)]
            if left:
                module.fail_json(msg=f"storage: still in use after wiping: {'; '.join(left)}", **result)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
