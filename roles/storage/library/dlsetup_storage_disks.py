#!/usr/bin/python3
"""Ansible module: inspect the member disks of one array before anything is written, or wipe them."""

from __future__ import annotations

import json
import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: dlsetup_storage_disks
short_description: Check that the member disks of an md array hold nothing, or wipe them
description:
  - C(state=inspect) (read-only, also in check mode) reports, per member, every reason writing to it
    would destroy data (partition table, partitions, filesystem/LVM/RAID/swap signatures, holders such as
    md arrays or LVM volumes, mounts, swap) and whether the members already form the array I(name) built
    by this role (same md UUID on every member, array name ending in C(:name)).
  - C(state=wiped) releases and erases every member that is not part of the array I(name): swapoff,
    umount, stops md arrays and device-mapper devices holding it, then C(wipefs -a) on partitions and disk.
options:
  name: {description: Array name (the md name without host part)., type: str, required: true}
  members: {description: Member disks (/dev/disk/by-id paths)., type: list, elements: str, required: true}
  state: {description: inspect or wiped., type: str, choices: [inspect, wiped], default: inspect}
"""

RETURN = r"""
disks: {description: "Per member: disk, device, reasons.", type: list, returned: always}
refusals:
  {description: "One line per member that holds something: 'disk: reason, reason'.", type: list, returned: always}
array:
  {description: "state (absent, active, inactive), uuid and device of the array built earlier.", type: dict,
   returned: always}
"""

ABSENT = {"state": "absent", "uuid": None, "device": None, "stale": []}
_SIGNATURES = {
    "LVM2_member": "is an LVM physical volume",
    "swap": "is swap space",
    "linux_raid_member": "carries an md RAID signature",
    "gpt": "has a gpt partition table",
    "dos": "has a dos partition table",
    "PMBR": None,  # the protective MBR of a GPT disk: reported with gpt
}


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


def _mounts() -> list[tuple[str, str]]:
    """(major:minor, mount point) of every mount."""
    found = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        found.append((fields[2], fields[4].encode().decode("unicode_escape")))
    return found


def _swaps() -> set[str]:
    lines = _read("/proc/swaps").splitlines()[1:]
    return {os.path.basename(os.path.realpath(line.split()[0])) for line in lines if line.strip()}


class Disks:
    """The member disks as the kernel, libblkid and /proc see them now."""

    def __init__(self, module: AnsibleModule):
        self.module = module

    def run(self, *args: str) -> str:
        rc, out, err = self.module.run_command(list(args))
        if rc not in (0, 2):  # blkid: 2 = nothing found
            self.module.fail_json(msg=f"{' '.join(args)} failed ({rc}): {err.strip()}")
        return out

    def signatures(self, device: str) -> list[dict]:
        out = self.run("wipefs", "--no-act", "--json", device)
        return json.loads(out).get("signatures", []) if out.strip() else []

    def probe(self, device: str) -> dict[str, str]:
        out = self.run("blkid", "-p", "-o", "export", device)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

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

    def reasons(self, name: str, device: str) -> list[str]:
        found = []
        for sig in self.signatures(device):
            kind = sig.get("type", "")
            text = _SIGNATURES.get(kind, f"holds a filesystem ({kind})")
            if text:
                found.append(text)
        parts = _partitions(name)
        if parts:
            found.append(f"has partitions {', '.join(parts)}")
        tree = self.tree(name)
        for holder in tree[len(parts) + 1:]:
            found.append(f"is in use by {holder}")
        numbers = _numbers(tree)
        for number, point in _mounts():
            if number in numbers:
                found.append(f"is mounted at {point} ({numbers[number]})")
        if _swaps() & set(tree):
            found.append("is in use as swap")
        return list(dict.fromkeys(found))


def _array(disks: Disks, name: str, members: list[tuple[str, str]]) -> dict:
    """The array ``name`` if exactly these members carry it: its md UUID, state and device."""
    probes = [disks.probe(device) for _, device in members]
    uuids = {p.get("UUID") for p in probes}
    ours = all(p.get("TYPE") == "linux_raid_member" and p.get("LABEL", "").split(":")[-1] == name for p in probes)
    if not ours or len(uuids) != 1 or any(len(disks.signatures(device)) != 1 for _, device in members):
        return ABSENT
    holders = {h for kernel, _ in members for h in _holders(kernel)}
    active = [h for h in holders if h.startswith("md") and _read(f"/sys/block/{h}/md/array_state").strip()
              not in ("", "inactive", "clear")]
    state = "active" if len(active) == 1 and len(holders) == 1 else "inactive"
    device = f"/dev/{active[0]}" if state == "active" else None
    return {"state": state, "uuid": uuids.pop(), "device": device, "stale": sorted(holders - set(active))}


def _wipe(disks: Disks, name: str) -> None:
    tree = disks.tree(name)
    numbers = _numbers(tree)
    swaps = _swaps()
    for kernel in reversed(tree):
        if kernel in swaps:
            disks.run("swapoff", f"/dev/{kernel}")
    for number, point in sorted(_mounts(), key=lambda m: -len(m[1])):
        if number in numbers:
            disks.run("umount", point)
    for kernel in reversed(tree[1:]):
        if kernel.startswith("md"):
            disks.run("mdadm", "--stop", f"/dev/{kernel}")
        elif kernel.startswith("dm-"):
            disks.run("dmsetup", "remove", "--retry", _read(f"/sys/class/block/{kernel}/dm/name").strip())
    for kernel in reversed(tree[:len(_partitions(name)) + 1]):
        disks.run("wipefs", "--all", f"/dev/{kernel}")
    udevadm = disks.module.get_bin_path("udevadm")
    if udevadm:  # wipefs re-read the partition table; wait for udev to drop the old links
        disks.run(udevadm, "settle")


def main() -> None:
    module = AnsibleModule(
        argument_spec={"name": {"type": "str", "required": True},
                       "members": {"type": "list", "elements": "str", "required": True},
                       "state": {"type": "str", "choices": ["inspect", "wiped"], "default": "inspect"}},
        supports_check_mode=True,
    )
    disks = Disks(module)
    name = module.params["name"]
    missing = [m for m in module.params["members"] if not os.path.exists(m)]
    if missing:
        module.exit_json(changed=False, array=ABSENT, refusals=[f"{m}: does not exist" for m in missing],
                         disks=[{"disk": m, "device": None, "reasons": ["does not exist"]} for m in missing])
    members = [(os.path.basename(os.path.realpath(m)), os.path.realpath(m)) for m in module.params["members"]]
    array = _array(disks, name, members)
    report = []
    for disk, (kernel, device) in zip(module.params["members"], members):
        reasons = [] if array["state"] != "absent" else disks.reasons(kernel, device)
        report.append({"disk": disk, "device": device, "reasons": reasons})
    changed = False
    if module.params["state"] == "wiped" and any(r["reasons"] for r in report):
        changed = True
        if not module.check_mode:
            for (kernel, device), entry in zip(members, report):
                if entry["reasons"]:
                    _wipe(disks, kernel)
                    entry["reasons"] = disks.reasons(kernel, device)
    refusals = [f"{entry['disk']}: {', '.join(entry['reasons'])}" for entry in report if entry["reasons"]]
    module.exit_json(changed=changed, array=array, disks=report, refusals=refusals)


if __name__ == "__main__":
    main()
