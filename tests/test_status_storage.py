"""``dlsetup status --storage`` on a host whose md array, made by dlsetup, is degraded.

The plan's disk verdict refuses such an array (provision must never re-create it): status reports it as
the array's drift instead, with the faulty and missing members and the repair, exits 1 (drift, not 3),
and still reports everything else; ``dlsetup plan`` on the same host is still refused (exit 2).

Each host is the in-sync H100 bundle of tests/test_status.py with whole NVMe disks added and a real
/proc/mdstat capture (tests/fixtures/public/mdstat) whose member names are those disks', as on a host
where dlsetup built the array over whole disks: lsblk, df, /dev/disk/by-id and dlsetup's record as there.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PUBLIC, REPO
from dlsetup.model import MdArray, MdMember
from dlsetup.plan import PlanConflict, make_plan
from dlsetup.probe import probe
from dlsetup.status import status_of
from dlsetup.storage import StorageRequest, parse_array_option, propose_layout, repairs
from test_status import REQUEST, make_bundle, run_status

UUID = "3f1c9a2e:5b7d4e61:8a0f2c93:d4e5b6a7"
DEGRADED = "made by dlsetup, degraded: repair it (mdadm --add) or pass --destroy-data"
MEMBER_SIZE = 2000398934016


def by_id(disk: str) -> str:
    return f"/dev/disk/by-id/nvme-Samsung_SSD_990_PRO_2TB_S7DNNJ0X{disk.upper()}"


@dataclasses.dataclass(frozen=True)
class Case:
    """A real mdstat capture, its members renamed to whole disks (capture name -> disk), the level
    dlsetup recorded, the disks it recorded that the capture no longer lists, and what status says."""

    capture: str
    md: str
    level: str
    renames: dict
    removed: tuple  #: recorded members md no longer lists (removed from the array; the disk is still there)
    found: tuple  #: pieces of the drift item's "found"
    fix: str  #: the start of its fix
    #: what the plan's verdict says of the array, today: with a member gone md's members are not those
    #: recorded, so it reads "not as asked"; refused either way, and never re-created
    verdict: str = DEGRADED

    @property
    def disks(self) -> tuple:
        return tuple(sorted({*self.renames.values(), *self.removed}))


CASES = [
    # [6/4] [_UUUU_]: sde1 failed (F), one slot empty: the member mdadm --remove took out
    Case("pymdstat07_raid1_failed_member.txt", "md1", "raid1",
         {"sdg1": "nvme0n1", "sdb1": "nvme1n1", "sdd1": "nvme2n1", "sdc1": "nvme3n1", "sde1": "nvme4n1"},
         ("nvme5n1",), ("active degraded", "faulty nvme4n1", f"missing {by_id('nvme5n1')}"),
         "mdadm /dev/md1 --remove /dev/nvme4n1 && mdadm /dev/md1 --add /dev/disk/by-id/<new disk>",
         "made by dlsetup as raid1 over 6 disk(s), not as asked"),
    # [4/3] [UUU_]: no failed member left, one missing
    Case("pymdstat03_raid5_degraded_no-super.txt", "md0", "raid5",
         {"sda1": "nvme0n1", "sdb1": "nvme1n1", "sdd1": "nvme2n1"},
         ("nvme3n1",), ("active degraded", f"missing {by_id('nvme3n1')}"),
         "mdadm /dev/md0 --add /dev/disk/by-id/<new disk>", "made by dlsetup as raid5 over 4 disk(s), not as asked"),
    # [6/5] [UUUUU_] with a recovery running onto sdh1: the repair is under way
    Case("pymdstat05_raid5_degraded_recovery.txt", "md127", "raid5",
         {f"sd{c}1": f"nvme{i}n1" for i, c in enumerate("cdefgh")},
         (), ("active degraded", "recovery 13%"), "none: md is rebuilding the array"),
]
IDS = [c.capture.split("_")[0] for c in CASES]


def mdstat(case: Case) -> str:
    """The capture with its member names replaced by the disks' (nothing else of it changes)."""
    text = (PUBLIC / "mdstat" / case.capture).read_text()
    return re.sub(r"\b(sd[a-z]\d+)(?=\[)", lambda m: case.renames[m.group(1)], text)


def degraded_bundle(tmp_path: Path, case: Case) -> Path:
    """The in-sync H100 bundle plus the array of ``case`` mounted at /data, recorded in dlsetup's record."""
    bundle = make_bundle(tmp_path)
    dashed = UUID.replace(":", "")
    blkid = f"{dashed[:8]}-{dashed[8:12]}-{dashed[12:16]}-{dashed[16:20]}-{dashed[20:]}"
    listed = set(case.renames.values())
    lsblk = json.loads((bundle / "cmd" / "lsblk-J-b.out").read_text())
    for disk in case.disks:
        md = {"name": case.md, "kname": case.md, "path": f"/dev/{case.md}", "type": case.level, "size": MEMBER_SIZE,
              "rota": False, "tran": None, "mountpoint": "/data", "fstype": "ext4",
              "uuid": "5d3c1b5e-4a7f-4e0c-9d61-1f2a3b4c5d6e", "pkname": disk}
        lsblk["blockdevices"].append({
            "name": disk, "kname": disk, "path": f"/dev/{disk}", "type": "disk", "size": MEMBER_SIZE, "rota": False,
            "tran": "nvme", "model": "Samsung SSD 990 PRO 2TB", "serial": f"S7DNNJ0X{disk.upper()}",
            "mountpoint": None, "fstype": "linux_raid_member", "uuid": blkid, "pkname": None,
            "children": [md] if disk in listed else []})
    (bundle / "cmd" / "lsblk-J-b.out").write_text(json.dumps(lsblk))
    (bundle / "proc" / "mdstat").write_text(mdstat(case))
    df = (bundle / "cmd" / "df-PT.out").read_text()
    (bundle / "cmd" / "df-PT.out").write_text(
        df + f"/dev/{case.md}               ext4    983349760    61452 933268816       1% /data\n")
    links = bundle / "dev" / "disk" / "by-id"
    links.mkdir(parents=True)
    for disk in case.disks:
        (links / by_id(disk).rsplit("/", 1)[1]).symlink_to(f"../../{disk}")
    (links / f"md-uuid-{UUID}").symlink_to(f"../../{case.md}")
    record = bundle / "etc" / "dlsetup" / "storage.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"version": 1, "arrays": [
        {"uuid": UUID, "name": "data", "level": case.level, "members": [by_id(d) for d in case.disks],
         "mountpoint": "/data", "created": "2026-01-01T00:00:00Z"}]}))
    return bundle


def storage_option(case: Case) -> str:
    return f"/data:{case.level}:ext4:{','.join(case.disks)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_status_names_the_degraded_array_of_dlsetup_as_drift_and_exits_1(tmp_path, case):
    run = run_status(degraded_bundle(tmp_path, case), "--storage", storage_option(case), "--json")
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    (doc,) = json.loads(run.stdout).values()
    (item,) = doc["drift"]  # the in-sync host's other items are all reported, and in sync
    assert item["topic"] == f"array {case.md}" and not item["ok"], item
    for piece in case.found:
        assert piece in item["found"], item
    assert item["fix"].startswith(case.fix), item
    topics = {i["topic"] for i in doc["items"]}
    assert {"driver", "CUDA toolkit", "container toolkit", "torch", "reboot", "array /data"} <= topics, topics
    assert any(f"{case.md} (made by dlsetup for /data) is degraded" in note for note in doc["notes"]), doc["notes"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_plan_still_refuses_the_degraded_array_of_dlsetup(tmp_path, case):
    """What provision would run: refused (exit 2), each member named with the verdict, nothing planned."""
    bundle = degraded_bundle(tmp_path, case)
    run = subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--offline", "--from-bundle", str(bundle),
                          "--storage", storage_option(case)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
    (line,) = run.stderr.splitlines()
    for disk in case.renames.values():
        assert f"{by_id(disk)}: is a member of md array {case.md} ({case.verdict})" in line, line


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_plan_of_the_same_host_is_refused_and_the_status_plan_is_the_repaired_hosts(tmp_path, case):
    """In the pure layer: make_plan refuses the real host; status plans it as once repaired (the layout
    kept, nothing destroyed) and compares the real host with that plan."""
    profile = probe(bundle=degraded_bundle(tmp_path, case))
    request = dataclasses.replace(REQUEST, storage=StorageRequest((parse_array_option(storage_option(case)),)))
    with pytest.raises(PlanConflict, match=re.escape(case.verdict)):
        make_plan(profile, request)
    (repair,) = repairs(profile, propose_layout(profile, request.storage))
    assert (repair.md, repair.mountpoint) == (case.md, "/data")
    assert repair.missing == tuple(by_id(d) for d in case.removed)
    result = status_of("h", profile, {}, request, {})
    (array,) = [i for i in result.items if i.topic == f"array {case.md}"]
    assert not array.ok and array.fix.startswith(case.fix)


def _owned(case: Case, tmp_path: Path, **record_changes):
    profile = probe(bundle=degraded_bundle(tmp_path, case))
    (entry,) = profile.storage.recorded_arrays
    storage = dataclasses.replace(profile.storage, recorded_arrays=(dataclasses.replace(entry, **record_changes),))
    return dataclasses.replace(profile, storage=storage)


@pytest.mark.parametrize(("what", "change"), [
    ("not in dlsetup's record", {"uuid": "0" * 32}),
    ("recorded at another level", {"level": "raid10"}),
])
def test_only_an_array_dlsetup_made_as_asked_is_planned_as_repaired(tmp_path, what, change):
    """Anyone else's degraded array, or dlsetup's made otherwise, stays a reason status cannot plan (exit 3):
    status never plans a layout provision would refuse for another reason than the degradation."""
    case = CASES[0]
    profile = _owned(case, tmp_path, **change)
    layout = propose_layout(profile, StorageRequest((parse_array_option(storage_option(case)),)))
    assert repairs(profile, layout) == ()
    request = dataclasses.replace(REQUEST, storage=StorageRequest((parse_array_option(storage_option(case)),)))
    with pytest.raises(PlanConflict):
        status_of("h", profile, {}, request, {})


def test_a_healthy_array_of_dlsetup_needs_no_repair(tmp_path):
    case = CASES[1]
    profile = probe(bundle=degraded_bundle(tmp_path, case))
    healthy = MdArray(case.md, "active", case.level, members=tuple(MdMember(d, i) for i, d in enumerate(case.disks)),
                      devices_total=4, devices_active=4, degraded=False, uuid=UUID.replace(":", ""))
    profile = dataclasses.replace(profile, storage=dataclasses.replace(profile.storage, arrays=(healthy,)))
    request = dataclasses.replace(REQUEST, storage=StorageRequest((parse_array_option(storage_option(case)),)))
    assert repairs(profile, propose_layout(profile, request.storage)) == ()
    plan = make_plan(profile, request)  # kept as it is: provision's plan, no refusal
    assert plan.destroys == () and plan.variables["storage_arrays"][0]["members"] == [by_id(d) for d in case.disks]


def test_an_array_over_a_disk_outside_the_record_is_no_repair(tmp_path):
    """md lists a disk dlsetup did not record (someone added it): not the array as asked, no repair."""
    case = CASES[1]
    profile = probe(bundle=degraded_bundle(tmp_path, case))
    (md,) = profile.storage.arrays
    other = dataclasses.replace(md, members=md.members + (MdMember("nvme9n1", 3),))
    profile = dataclasses.replace(profile, storage=dataclasses.replace(profile.storage, arrays=(other,)))
    assert repairs(profile, propose_layout(profile, StorageRequest((parse_array_option(storage_option(case)),)))) == ()
