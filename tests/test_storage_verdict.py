"""The storage role's disk check, decided in Python the fast tier runs: module_utils/dlsetup_storage.py
(shared with the planner) on captured /proc and blkid/wipefs text, and the module's main() on faked facts.

The module itself runs on real disks in tests/test_storage_disks.py (loop devices) and tests/test_vm_storage.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from dlsetup.probe import storage as probe_storage
from dlsetup.storage import shared

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "storage"
#: the module_utils as the collection's module imports them
UTILS_NAME = "ansible_collections.dlsetup.workstation.plugins.module_utils.dlsetup_storage"
V = shared()

UUID = "0123456789abcdef0123456789abcdef"
OTHER = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
D1, D2 = "/dev/disk/by-id/virtio-dlsetup-d1", "/dev/disk/by-id/virtio-dlsetup-d2"
REQUEST = {"name": "data", "level": "raid1", "members": [D1, D2], "mountpoint": "/data"}
RECORD = {UUID: {"name": "data", "level": "raid1", "members": [D1, D2], "mountpoint": "/data", "created": None}}

#: /proc/self/mountinfo of a Debian 12 guest with md127 at /backup and vdd1 at "/mnt/with space".
MOUNTINFO = """\
21 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
22 21 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=1000k
35 21 9:127 / /backup rw,relatime shared:15 - ext4 /dev/md127 rw,stripe=256
36 21 254:49 / /mnt/with\\040space rw,relatime shared:16 - ext4 /dev/vdd1 rw
"""
#: /proc/mounts of the same guest plus a mount made in another namespace view: /dev/md/backup at /srv/copy.
PROC_MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
/dev/md127 /backup ext4 rw,relatime,stripe=256 0 0
/dev/md/backup /srv/copy ext4 rw,relatime 0 0
"""
SWAPS = ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
         "/dev/vdc                                partition\t262140\t\t0\t\t-2\n")
BLKID_MEMBER = ("DEVNAME=/dev/vdb\nUUID=a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90\n"
                "UUID_SUB=77e0c2b5-0d5f-7c7d-1e4e-2a9b0e3f4c51\n"
                "LABEL=backup01:data\nVERSION=1.2\nTYPE=linux_raid_member\nUSAGE=raid\n")
WIPEFS_GPT = json.dumps({"signatures": [
    {"device": "vdd", "offset": "0x200", "type": "gpt", "uuid": "c0ffee00-0000-4000-8000-000000000001"},
    {"device": "vdd", "offset": "0xfffe00", "type": "gpt", "uuid": "c0ffee00-0000-4000-8000-000000000001"},
    {"device": "vdd", "offset": "0x1fe", "type": "PMBR", "uuid": None}]})


def _facts(disk: str, kernel: str, **found: object) -> dict:
    facts = {"disk": disk, "kernel": kernel, "device": f"/dev/{kernel}", "signatures": [], "partitions": [],
             "holders": [], "raid_uuids": [], "mounts": [], "swaps": []}
    return {**facts, **found}


def _member(disk: str, kernel: str, uuid: str = UUID, md: str = "md127", point: str | None = "/data",
            **found: object) -> dict:
    """A member of the active md array ``md`` carrying ``uuid``, mounted at ``point``."""
    mounts = [{"point": point, "device": md}] if point else []
    member = {"signatures": ["linux_raid_member"], "raid_uuids": [uuid], "mounts": mounts,
              "holders": [{"name": md, "active": True, "degraded": False}]}
    return _facts(disk, kernel, **{**member, **found})


def test_md_uuid_has_one_form_whatever_tool_wrote_it():
    forms = ["01234567:89abcdef:01234567:89abcdef", "01234567-89ab-cdef-0123-456789abcdef",
             "md-uuid-01234567:89ABCDEF:01234567:89abcdef", "0123456789abcdef0123456789abcdef"]
    assert {V.md_uuid(f) for f in forms} == {UUID}
    assert {probe_storage.md_uuid(f) for f in forms[:2] + forms[3:]} == {UUID}  # the probe reads them alike
    assert [V.md_uuid(t) for t in ("", None, "data", "host:data", "0123", "0123456789abcdef0123456789abcdefff",
                                   "g123456789abcdef0123456789abcdef")] == [None] * 7
    assert V.mdadm_uuid(UUID) == "01234567:89abcdef:01234567:89abcdef"


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"arrays": 5}', '{"arrays": [1, {"uuid": "x", "members": []}, {"uuid": "%s"}]}' % UUID,
    json.dumps({"version": 1, "arrays": [{"uuid": V.mdadm_uuid(UUID), "name": "data", "level": "raid1",
                                          "members": [D1, D2], "mountpoint": "/data",
                                          "created": "2026-01-01T00:00:00Z"},
                                         {"uuid": OTHER, "members": [D1, 5]}]}),
])
def test_the_probe_and_the_role_read_the_record_alike(text):
    role = V.parse_record(text)
    probe = {r.uuid: {"name": r.name, "level": r.level, "members": list(r.members), "mountpoint": r.mountpoint,
                      "created": r.created} for r in probe_storage.parse_record(text)}
    assert probe == role
    assert probe_storage.RECORD_PATH == V.RECORD_PATH == "/etc/dlsetup/storage.json"


def test_the_record_keeps_other_arrays_and_replaces_a_name():
    text = V.add_to_record("", UUID, "data", "raid1", [D1, D2], "/data", "t1")
    text = V.add_to_record(text, OTHER, "scratch", "raid0", ["/dev/x", "/dev/y"], "/scratch", "t2")
    assert set(V.parse_record(text)) == {UUID, OTHER}
    again = V.add_to_record(text, "f" * 32, "data", "raid1", [D1, D2], "/data", "t3")
    assert set(V.parse_record(again)) == {OTHER, "f" * 32}
    assert V.planned_uuid(V.parse_record(text), "data", "raid1", [D2, D1]) == UUID
    assert V.planned_uuid(V.parse_record(text), "data", "raid10", [D1, D2]) is None


@pytest.mark.parametrize(("record", "level", "members", "degraded", "verdict"), [
    (RECORD, "raid1", [D2, D1], False, "ours"),
    ({}, "raid1", [D1, D2], False, "not made by dlsetup"),
    (RECORD, "raid0", [D1, D2], False, "made by dlsetup as raid1 over 2 disk(s), not as asked"),
    (RECORD, "raid1", [D1, "/dev/disk/by-id/virtio-dlsetup-d3"], False,
     "made by dlsetup as raid1 over 2 disk(s), not as asked"),
    (RECORD, "raid1", [D1, D2], True, "made by dlsetup, degraded: repair it (mdadm --add) or pass --destroy-data"),
])
def test_ownership(record, level, members, degraded, verdict):
    assert V.ownership(V.mdadm_uuid(UUID), record, level, members, degraded) == verdict


def test_an_md_name_ending_in_data_makes_no_array_ours():
    """The array of issue 2: md name "backup01:data", not in dlsetup's record: its disks are judged."""
    members = [_member(D1, "vdb", OTHER, point="/backup"), _member(D2, "vdc", OTHER, point="/backup")]
    state = V.array_state(members, REQUEST, RECORD)
    assert (state["state"], state["why"]) == ("absent", "not made by dlsetup")
    assert V.disk_reasons(members[0]) == ["carries an md RAID signature",
                                          "is in use by md127 (an md array not made by dlsetup)",
                                          "is mounted at /backup (md127)"]


def test_parsers_read_real_proc_and_blkid_text():
    assert V.parse_mountinfo(MOUNTINFO)[2:] == [("9:127", "/backup", "/dev/md127"),
                                                 ("254:49", "/mnt/with space", "/dev/vdd1")]
    assert V.parse_swaps(SWAPS) == ["/dev/vdc"]
    assert V.md_uuid(V.parse_blkid_export(BLKID_MEMBER)["UUID"]) == OTHER
    assert V.parse_wipefs_json(WIPEFS_GPT) == ["gpt", "gpt", "PMBR"]
    assert V.parse_wipefs_json("") == V.parse_wipefs_json("{") == []


def test_mounts_count_from_mountinfo_and_from_proc_mounts_alone():
    """A mount only /proc/mounts shows (its source a symlink to the array) is found as well."""
    links = {"/dev/md/backup": "/dev/md127"}
    mounts = V.tree_mounts({"254:16": "vdb", "9:127": "md127"}, MOUNTINFO, PROC_MOUNTS,
                           lambda path: links.get(path, path))
    assert mounts == [{"point": "/backup", "device": "md127"}, {"point": "/srv/copy", "device": "md127"}]
    only_proc = V.tree_mounts({"9:127": "md127"}, "", PROC_MOUNTS, lambda path: links.get(path, path))
    assert only_proc == [{"point": "/backup", "device": "md127"}, {"point": "/srv/copy", "device": "md127"}]
    facts = _facts(D1, "vdb", mounts=only_proc)
    assert V.disk_reasons(facts) == ["is mounted at /backup (md127)", "is mounted at /srv/copy (md127)"]


@pytest.mark.parametrize(("found", "reasons"), [
    ({"mounts": [{"point": "/mnt/x", "device": "vdb"}]}, ["is mounted at /mnt/x (vdb)"]),
    ({"swaps": ["vdb"]}, ["is in use as swap"]),
    ({"signatures": ["gpt", "gpt", "PMBR"], "partitions": ["vdb1"]}, ["has a gpt partition table",
                                                                      "has partitions vdb1"]),
    ({"signatures": ["xfs"]}, ["holds a filesystem (xfs)"]),
    ({"holders": [{"name": "dm-0"}]}, ["is in use by dm-0"]),
    ({}, []),
])
def test_each_finding_is_a_reason(found, reasons):
    assert V.disk_reasons(_facts(D1, "vdb", **found)) == reasons


def test_reusing_the_array_dlsetup_made_leaves_out_only_what_it_explains():
    members = [_member(D1, "vdb"), _member(D2, "vdc")]
    state = V.array_state(members, REQUEST, RECORD)
    assert state == {"state": "active", "uuid": V.mdadm_uuid(UUID), "device": "/dev/md127", "stale": [], "why": "ours"}
    result = V.verdict([members], [REQUEST], RECORD, False, {})
    assert (result["refusals"], result["blocked"], result["wipe"]) == ([], None, [])
    # anything beyond the array still counts: a mount elsewhere, a second signature, swap on the array
    odd = [_member(D1, "vdb", point="/srv"), _member(D2, "vdc", swaps=["md127"])]
    result = V.verdict([odd], [REQUEST], RECORD, False, {})
    assert result["refusals"] == [f"{D1}: is mounted at /srv (md127)", f"{D2}: is in use as swap"]
    assert result["blocked"].startswith("storage: refusing the whole layout, nothing was written.")
    extra = [_member(D1, "vdb", signatures=["linux_raid_member", "ext4"]), _member(D2, "vdc")]
    assert V.array_state(extra, REQUEST, RECORD)["state"] == "absent"


def test_a_partial_assembly_of_ours_is_assembled_not_refused():
    """After a reboot the kernel may hold one member in an inactive md: stopped and assembled again."""
    members = [_member(D1, "vdb", md="md127", point=None,
                       holders=[{"name": "md127", "active": False, "degraded": False}]),
               _facts(D2, "vdc", signatures=["linux_raid_member"], raid_uuids=[UUID])]
    result = V.verdict([members], [REQUEST], RECORD, False, {})
    assert result["arrays"][0] == {"state": "inactive", "uuid": V.mdadm_uuid(UUID), "device": None,
                                   "stale": ["md127"], "why": "ours"}
    assert (result["refusals"], result["blocked"]) == ([], None)
    # not recorded: the same disks are refused
    assert V.verdict([members], [REQUEST], {}, False, {})["refusals"] == [
        f"{D1}: carries an md RAID signature, is in use by md127 (an md array not made by dlsetup)",
        f"{D2}: carries an md RAID signature"]


def test_a_degraded_array_of_ours_is_not_reused():
    members = [_member(D1, "vdb", holders=[{"name": "md127", "active": True, "degraded": True}]),
               _member(D2, "vdc", holders=[{"name": "md127", "active": True, "degraded": True}])]
    state = V.array_state(members, REQUEST, RECORD)
    assert (state["state"], state["why"]) == (
        "absent", "made by dlsetup, degraded: repair it (mdadm --add) or pass --destroy-data")
    assert V.verdict([members], [REQUEST], RECORD, False, {})["blocked"] is not None


def test_safe_mode_refuses_the_whole_layout():
    used = [_facts(D1, "vdb", signatures=["ext4"], mounts=[{"point": "/mnt/x", "device": "vdb"}]), _facts(D2, "vdc")]
    result = V.verdict([used], [REQUEST], {}, False, {"disks": [D1], "mounts": ["/mnt/x"]})
    assert result["blocked"] == (
        f"storage: refusing the whole layout, nothing was written. {D1}: holds a filesystem (ext4), "
        "is mounted at /mnt/x (vdb). Free these disks, or set storage_destroy_data (dlsetup provision "
        "--destroy-data) to wipe them.")
    assert result["wipe"] == [D1]
    missing = V.verdict([[_facts(D1, None)]], [REQUEST], {}, True, {"disks": [D1]})
    assert (missing["refusals"], missing["wipe"]) == ([f"{D1}: does not exist"], [])


FOREIGN = [_member(D1, "vdb", OTHER, point="/backup"), _member(D2, "vdc", OTHER, point="/backup")]
PLANNED = {"disks": [D1, D2], "arrays": [V.mdadm_uuid(OTHER)], "mounts": ["/backup"]}


def test_destroy_data_wipes_exactly_what_the_plan_listed():
    result = V.verdict([FOREIGN], [REQUEST], RECORD, True, PLANNED)
    assert (result["blocked"], result["wipe"]) == (None, [D1, D2])


@pytest.mark.parametrize(("allowed", "outside"), [
    ({**PLANNED, "disks": [D1]}, f"{D2} (the plan did not list this disk)"),
    ({**PLANNED, "arrays": []}, f"{D1} (md array {V.mdadm_uuid(OTHER)} is not in the plan)"),
    ({**PLANNED, "mounts": ["/data"]}, f"{D1} (mount point /backup is not in the plan)"),
    ({}, f"{D1} (the plan did not list this disk)"),
])
def test_destroy_data_touches_nothing_the_plan_did_not_list(allowed, outside):
    result = V.verdict([FOREIGN], [REQUEST], RECORD, True, allowed)
    assert result["blocked"].startswith("storage: refusing to wipe what the plan did not list, nothing was written: ")
    assert outside in result["blocked"]


def test_a_disk_that_changed_since_the_plan_is_refused():
    """Blank at plan time (so not listed), mounted at apply time: refused even with destroy_data."""
    later = [_facts(D1, "vdb"), _facts(D2, "vdc", signatures=["ext4"], mounts=[{"point": "/home", "device": "vdc"}])]
    result = V.verdict([later], [REQUEST], {}, True, {"disks": [], "arrays": [], "mounts": []})
    assert f"{D2} (the plan did not list this disk)" in result["blocked"]
    assert f"{D2} (mount point /home is not in the plan)" in result["blocked"]


# -- the module's main(), on faked facts ---------------------------------------------------------------


@pytest.fixture(scope="module")
def module():
    """plugins/modules/dlsetup_storage_disks.py, importing module_utils as Ansible provides it."""
    sys.modules[UTILS_NAME] = V
    spec = importlib.util.spec_from_file_location("dlsetup_storage_disks",
                                                  REPO / "plugins" / "modules" / "dlsetup_storage_disks.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    yield loaded
    del sys.modules[UTILS_NAME]


def _main(module, monkeypatch, capsys, facts: dict, **args: object) -> dict:
    from ansible.module_utils import basic

    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    monkeypatch.setattr(module.Disks, "facts", lambda self, disk: facts[disk])
    wiped = []
    monkeypatch.setattr(module, "_wipe", lambda disks, name: wiped.append(name))
    with pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    result["wiped"] = wiped
    return result


def test_module_fails_in_safe_mode_and_wipes_nothing(module, monkeypatch, capsys, tmp_path):
    facts = {D1: FOREIGN[0], D2: FOREIGN[1]}
    record = tmp_path / "storage.json"
    result = _main(module, monkeypatch, capsys, facts, arrays=[REQUEST], state="wiped", record=str(record))
    assert result["failed"] is True and result["wiped"] == []
    assert result["msg"].startswith(f"storage: refusing the whole layout, nothing was written. {D1}: ")
    # with destroy_data but the plan's lists missing the array: still nothing wiped
    result = _main(module, monkeypatch, capsys, facts, arrays=[REQUEST], state="wiped", destroy_data=True,
                   destroy_disks=[D1, D2], destroy_mounts=["/backup"], record=str(record))
    assert result["failed"] is True and result["wiped"] == []


def test_module_records_before_create_and_reuses_the_planned_uuid(module, monkeypatch, capsys, tmp_path):
    record = tmp_path / "etc" / "dlsetup" / "storage.json"
    first = _main(module, monkeypatch, capsys, {}, state="recorded", array=REQUEST, record=str(record))
    uuid = V.md_uuid(first["uuid"])
    assert first["changed"] is True and set(V.parse_record(record.read_text())) == {uuid}
    again = _main(module, monkeypatch, capsys, {}, state="recorded", array=REQUEST, record=str(record))
    assert (again["changed"], again["uuid"]) == (False, first["uuid"])
    # the array then created under that UUID is dlsetup's
    facts = {D1: _member(D1, "vdb", uuid), D2: _member(D2, "vdc", uuid)}
    checked = _main(module, monkeypatch, capsys, facts, arrays=[REQUEST], record=str(record))
    assert checked["arrays"][0]["state"] == "active" and checked["refusals"] == []


def test_module_wipes_the_listed_disks(module, monkeypatch, capsys, tmp_path):
    facts = {D1: FOREIGN[0], D2: FOREIGN[1]}
    result = _main(module, monkeypatch, capsys, facts, arrays=[REQUEST], state="wiped", destroy_data=True,
                   destroy_disks=PLANNED["disks"], destroy_arrays=PLANNED["arrays"], destroy_mounts=["/backup"],
                   record=str(tmp_path / "none.json"))
    # the fake facts do not change after the fake wipe, so the module reports the disks still in use
    assert result["wiped"] == ["vdb", "vdc"]
    assert result["msg"].startswith(f"storage: still in use after wiping: {D1}: ")


def test_role_installs_the_tools_then_inspects_then_wipes_then_creates():
    names = [t["name"] for t in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())]
    order = [names.index(n) for n in ("Install mdadm and the mkfs tools",
                                      "Inspect the member disks, refuse any that hold data (safe mode)",
                                      "Wipe the member disks the plan lists (storage_destroy_data)",
                                      "Check that the member disks now hold nothing but the arrays dlsetup made",
                                      "Build, format and mount each array")]
    assert order == sorted(order)
    tasks = {t["name"]: t for t in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())}
    inspect = tasks["Inspect the member disks, refuse any that hold data (safe mode)"][
        "dlsetup.workstation.dlsetup_storage_disks"]
    assert inspect["destroy_data"] == "{{ storage_destroy_data | bool }}"
    assert inspect["destroy_disks"] == "{{ storage_destroy_disks }}"
    array = [t["name"] for t in yaml.safe_load((ROLE / "tasks" / "array.yml").read_text())]
    assert array.index("Record the array in dlsetup's record before creating it") < \
        array.index("Create the array on the checked disks")
