"""md RAID and lsblk parsers against real captures (tests/conftest.py: PUBLIC, H100_BUNDLE)."""

from __future__ import annotations

import pytest

from conftest import H100_BUNDLE, PUBLIC
from dlsetup.model import MdMember
from dlsetup.parsers.lsblk import parse_lsblk_json, parse_lsblk_pairs, parse_lsblk_table
from dlsetup.parsers.mdstat import md_membership, parse_mdstat

MDSTAT = PUBLIC / "mdstat"
LSBLK = PUBLIC / "lsblk"


def _arrays(name: str) -> dict:
    return {a.name: a for a in parse_mdstat((MDSTAT / name).read_text())}


def _devices(parser, path) -> dict:
    return {d.name: d for d in parser(path.read_text())}


@pytest.mark.parametrize("path", sorted(MDSTAT.iterdir()), ids=lambda p: p.name)
def test_every_mdstat_capture_parses(path):
    arrays = parse_mdstat(path.read_text())
    assert arrays
    assert all(a.name.startswith("md") and a.members and a.size_bytes for a in arrays)


def _lsblk_parser(path):
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return parse_lsblk_json
    return parse_lsblk_pairs if text.startswith("KNAME=") else parse_lsblk_table


@pytest.mark.parametrize("path", sorted(LSBLK.iterdir()), ids=lambda p: p.name)
def test_every_lsblk_capture_parses(path):
    text = path.read_text()
    devices = _lsblk_parser(path)(text)
    assert devices
    assert len({d.name for d in devices}) == len(devices)
    assert all(d.name in text and d.name == d.name.strip() for d in devices)


def test_degraded_raid5_recovery():
    md = _arrays("pymdstat05_raid5_degraded_recovery.txt")["md127"]
    assert (md.level, md.state, md.devices_total, md.devices_active, md.degraded) == ("raid5", "active", 6, 5, True)
    assert (md.sync_action, md.sync_progress_pct) == ("recovery", 12.6)
    assert md.size_bytes == 1464725760 * 1024
    assert [m.device for m in md.members] == ["sdh1", "sdg1", "sdf1", "sde1", "sdd1", "sdc1"]


def test_failed_member():
    md = _arrays("pymdstat07_raid1_failed_member.txt")["md1"]
    assert MdMember("sde1", 6, "faulty") in md.members
    assert sum(m.state == "active" for m in md.members) == 4
    assert (md.devices_total, md.devices_active, md.degraded, md.sync_action) == (6, 4, True, None)


def test_inactive_array_of_spares():
    arrays = _arrays("pymdstat09_inactive_spares.txt")
    md2 = arrays["md2"]
    assert (md2.state, md2.level, md2.degraded, md2.size_bytes) == ("inactive", None, None, 5860553984 * 1024)
    assert {(m.device, m.role, m.state) for m in md2.members} == {
        ("sdb", 0, "spare"), ("sdc", 2, "spare"), ("sdd", 3, "spare"), ("sda", 1, "spare")
    }  # fmt: skip
    assert arrays["md0"].degraded is False and arrays["md1"].size_bytes == 200704 * 1024


def test_raid4_reshape():
    md = _arrays("pymdstat13_raid4_reshape.txt")["md127"]
    assert (md.level, md.sync_action, md.sync_progress_pct, md.metadata) == ("raid4", "reshape", 2.1, "1.2")
    assert (md.devices_total, md.devices_active, md.degraded) == (4, 3, True)


def test_intel_imsm_container_and_member_array():
    arrays = _arrays("checkbox_intel-rst-imsm_raid0.txt")
    assert (arrays["md127"].state, arrays["md127"].metadata) == ("inactive", "external:imsm")
    assert [m.state for m in arrays["md127"].members] == ["spare", "spare"]
    assert (arrays["md126"].level, arrays["md126"].metadata) == ("raid0", "external:/md127/0")
    assert arrays["md126"].size_bytes == 500113408 * 1024


def test_bitmap_lines_and_raid0_without_counts():
    arrays = _arrays("pymdstat10_nvme_raid0_bitmap.txt")
    assert list(arrays) == ["md129", "md128", "md125", "md126"]
    assert (arrays["md128"].bitmap, arrays["md129"].bitmap) == (True, False)
    nvme = arrays["md126"]
    assert [m.device for m in nvme.members] == ["nvme0n1", "nvme1n1"]
    assert (nvme.level, nvme.devices_total, nvme.degraded) == ("raid0", None, None)


def test_95tb_raid5_with_bitmap():
    md = _arrays("pymdstat16_raid5_95TB_bitmap.txt")["md1"]
    assert md.size_bytes == 95705752576 * 1024 == 98002690637824
    assert (md.bitmap, md.devices_total, md.degraded, len(md.members)) == (True, 8, False, 8)


def test_synology_unindented_block_lines():
    arrays = _arrays("pymdstat15_synology_noindent.txt")
    assert [(a.name, a.level) for a in arrays.values()] == [
        ("md3", "raid6"), ("md2", "raid6"), ("md1", "raid1"), ("md0", "raid1")
    ]  # fmt: skip
    assert arrays["md3"].size_bytes == 17581481472 * 1024
    assert (arrays["md3"].metadata, arrays["md1"].metadata) == ("1.2", None)
    assert all(a.devices_active == 8 and a.degraded is False for a in arrays.values())


def test_md_membership():
    arrays = parse_mdstat((MDSTAT / "pymdstat09_inactive_spares.txt").read_text())
    assert md_membership(arrays) == {
        "sdf1": "md0", "sde1": "md0", "sdf2": "md1", "sde2": "md1",
        "sdb": "md2", "sdc": "md2", "sdd": "md2", "sda": "md2",
    }  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["", "garbage\n\x00\xff", "md0 : active raid1 sda1[x]\n  oops blocks [a/b]", "unused devices: <none>"],
)
def test_mdstat_garbage_gives_what_it_can(text):
    arrays = parse_mdstat(text)
    assert all(a.members == () and a.size_bytes is None for a in arrays)


def test_h100_bundle_virtio_disks():
    devices = _devices(parse_lsblk_json, H100_BUNDLE / "cmd" / "lsblk-J-b.out")
    assert list(devices) == ["zram0", "vda", "vdb"]
    vda, vdb = devices["vda"], devices["vdb"]
    assert (vda.media, vda.transport, vda.rotational, vda.mountpoints) == ("virtual", "virtio", True, ("/",))
    assert (vda.size_bytes, vdb.size_bytes) == (274877906944, 318332928)
    assert vdb.mountpoints == ("/usr/local/nvidia",) and vdb.media == "virtual"
    assert (devices["zram0"].media, devices["zram0"].size_bytes) == ("virtual", 0)


def test_elitebook_json_flat_list():
    devices = _devices(parse_lsblk_json, LSBLK / "lsblk-J-b_hp-elitebook835g10_nvme_usb.json")
    assert len(devices) == 24 and sum(d.type == "loop" for d in devices.values()) == 14
    root = devices["nvme0n1p3"]
    assert (root.media, root.fstype, root.mountpoints, root.size_bytes) == ("nvme", "ext4", ("/",), 505695698944)
    assert devices["sda1"].mountpoints == ("/media/ubuntu/Ubuntu 24.04.3 LTS amd64",)
    assert devices["sda2"].mountpoints == () and devices["sda2"].uuid == "73B7-988D"
    assert devices["sda"].media == "unknown"  # no TRAN, no ROTA in this capture


def test_ascii_tree_with_lvm_over_loops():
    devices = _devices(parse_lsblk_table, LSBLK / "lsblk_basic_lvm-on-loop_sata_nvme.txt")
    assert len(devices) == 18  # dm-0 is shown under each of its 4 loop devices, kept once
    assert (devices["dm-0"].type, devices["dm-0"].parent, devices["dm-0"].media) == ("lvm", "loop0", "virtual")
    assert (devices["sda4"].parent, devices["sda4"].mountpoints) == ("sda", ("/",))
    assert devices["nvme0n1p2"].media == "nvme" and devices["nvme0n1p2"].mountpoints == ("/home",)
    assert devices["loop0"].size_bytes == 10 * 1024**2


def test_utf8_tree_and_roms():
    devices = _devices(parse_lsblk_table, LSBLK / "lsblk_default_ubuntu18.04-vm_snaps_unicode-tree.txt")
    sda2 = devices["sda2"]
    assert (sda2.parent, sda2.mountpoints, sda2.size_bytes) == ("sda", ("/",), 20 * 1024**3)
    assert [d.name for d in devices.values() if d.media == "optical"] == ["sr0", "sr1"]
    assert devices["loop10"].mountpoints == ("/snap/core/7917",)
    assert devices["fd0"].parent is None and len(devices) == 17


def test_rota_column_gives_ssd_hdd_nvme_optical():
    devices = _devices(parse_lsblk_table, LSBLK / "lsblk_state-rota_sata-ssd_hdd_nvme_dvd.txt")
    media = {name: d.media for name, d in devices.items() if d.parent is None}
    assert media == {"sda": "ssd", "sdb": "hdd", "sdc": "ssd", "sr0": "optical", "nvme0n1": "nvme"}
    assert (devices["sdb1"].parent, devices["sdb1"].media, devices["sdb1"].rotational) == ("sdb", "hdd", True)


def test_model_column_with_spaces_and_empty_cells():
    devices = _devices(parse_lsblk_table, LSBLK / "lsblk_model-vendor_sata-ssd_hdd_nvme_dvd.txt")
    assert devices["nvme0n1"].model == "KINGSTON SFYR2S1T0"
    assert devices["sr0"].model == "HL-DT-ST_DVD+_-RW_GH82N"
    assert devices["sda1"].model is None and devices["sda1"].parent == "sda"


def test_basic_columns_sizes_and_mounts():
    devices = _devices(parse_lsblk_table, LSBLK / "lsblk_basic_sata-ssd_hdd_nvme_dvd.txt")
    assert devices["sdc1"].mountpoints == devices["sdc2"].mountpoints == ("/mnt/test",)
    assert devices["sr0"].size_bytes == 1024**3 and devices["sr0"].media == "optical"
    assert devices["nvme0n1p4"].mountpoints == ("/home/kzak",)


def test_pairs_with_swap_and_emmc():
    devices = _devices(parse_lsblk_pairs, LSBLK / "lsblk-P_ubuntu-core_emmc.txt")
    assert len(devices) == 27
    assert devices["mmcblk0p3"].mountpoints == ("[SWAP]",)
    assert devices["loop0"].mountpoints == ("/",) and devices["sda"].mountpoints == ()


def test_json_nested_children_and_value_variants():
    text = """{"blockdevices": [{"name": "vda", "rota": "1", "tran": "virtio", "size": "100",
        "model": "QEMU HARDDISK   ", "serial": "abc  ", "pttype": "gpt",
        "children": [{"name": "vda1", "rota": 1, "size": 50, "mountpoints": ["/boot", null]},
                     {"name": "vda2", "rota": true, "size": "1G", "mountpoints": [null]}]},
        {"name": "sdz", "rota": "0", "model": "Virtual disk"}]}"""
    devices = {d.name: d for d in parse_lsblk_json(text)}
    vda = devices["vda"]
    assert (vda.model, vda.serial, vda.size_bytes, vda.partition_table) == ("QEMU HARDDISK", "abc", 100, "gpt")
    assert (devices["vda1"].parent, devices["vda1"].media, devices["vda1"].transport) == ("vda", "virtual", "virtio")
    assert devices["vda1"].mountpoints == ("/boot",) and devices["vda2"].mountpoints == ()
    assert devices["vda2"].size_bytes == 1024**3
    assert devices["sdz"].media == "virtual"


@pytest.mark.parametrize("parser", [parse_lsblk_json, parse_lsblk_pairs, parse_lsblk_table])
@pytest.mark.parametrize("text",
                         ["", "{", "[1, 2]", '{"blockdevices": [1, {"size": "x"}, {"name": null}]}', "\x00\n\n"])
def test_lsblk_garbage_gives_no_device(parser, text):
    assert parser(text) == ()


@pytest.mark.parametrize(("parser", "text", "sizes"), [
    (parse_lsblk_json, '{"blockdevices": [1, {"name": null}, {"name": "sda", "size": "x", "children": 5}]}',
     {"sda": None}),
    (parse_lsblk_table, "NAME SIZE\nsda 1G\n  garbage line here\n", {"sda": 1024**3}),
    (parse_lsblk_pairs, 'KNAME="sda" SIZE="2048"\ngarbage "\nKNAME="sdb"', {"sda": 2048, "sdb": None}),
])
def test_lsblk_garbage_around_a_device_keeps_the_device(parser, text, sizes):
    assert {d.name: d.size_bytes for d in parser(text)} == sizes
