"""More real outputs from public repositories (tests/fixtures/public/SOURCES.tsv cites each file): the values a
person reads off the raw output, table by table. Rows marked "failed before" broke a parser until its fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import PUBLIC
from dlsetup.advice import run_checks
from dlsetup.parsers.amd import parse_amd_smi_json, parse_rocm_smi_json, parse_rocm_smi_text, parse_rocminfo
from dlsetup.parsers.cpu import parse_lscpu
from dlsetup.parsers.dmi import parse_dmidecode_memory
from dlsetup.parsers.lsblk import parse_lsblk_json, parse_lsblk_table
from dlsetup.parsers.mdstat import parse_mdstat
from dlsetup.parsers.nvidia import (
    parse_smi_q_text,
    parse_smi_query_csv,
    parse_smi_table,
    parse_smi_xml,
    split_capture,
)
from dlsetup.parsers.system import parse_os_release
from dlsetup.probe import probe_host
from dlsetup.probe.host import Host

MIB = 1 << 20
GIB = 1 << 30


def _text(kind: str, name: str) -> str:
    return (PUBLIC / kind / name).read_text(encoding="utf-8")


# -- nvidia-smi: XML (drivers 418-590, Windows, vGPU guest), -q text and tables of 2 and 10 GPUs -----------

NVIDIA = [
    # file, driver, cuda, [(bus id, name, memory MiB, power limit W, default W)]
    ("xml_quadro-p400_drv418.43_nodtd.xml", "418.43", "10.1", [("0000:43:00.0", "Quadro P400", 1998, None, None)]),
    ("xml_gt1030_drv470.74_v11.xml", "470.74", "11.4",
     [("0000:2d:00.0", "NVIDIA GeForce GT 1030", 1998, 30.0, 30.0)]),
    ("xml_tesla-p100-pcie-16gb_drv510.47.03_v11.xml", "510.47.03", "11.6",
     [("0000:00:04.0", "Tesla P100-PCIE-16GB", 16384, 250.0, 250.0)]),
    # vGPU guest on Windows: profile name, 1 GiB profile, every power reading N/A
    ("xml_grid-p4-1q-vgpu-guest_windows_drv513.46_v11.xml", "513.46", "11.6",
     [("0000:00:0b.0", "GRID P4-1Q", 1024, None, None)]),
    ("xml_rtx4090_drv535.86.05_v12.xml", "535.86.05", "12.2",
     [("0000:84:00.0", "NVIDIA GeForce RTX 4090", 24564, 450.0, 450.0)]),
    # Windows: the current limit (336 W) is raised above the default (320 W)
    ("xml_rtx3080_windows_drv536.40_v12.xml", "536.40", "12.2",
     [("0000:04:00.0", "NVIDIA GeForce RTX 3080", 10240, 336.0, 320.0)]),
    ("xml_rtx3060_drv570.124.04_v12.xml", "570.124.04", "12.8",
     [("0000:2d:00.0", "NVIDIA GeForce RTX 3060", 12288, 170.0, 170.0)]),
    ("xml_rtx3090_drv590.44.01_v13.xml", "590.44.01", "13.1",
     [("0000:09:00.0", "NVIDIA GeForce RTX 3090", 24576, 350.0, 350.0)]),
    ("xml_2x-rtx2070_drv590.44.01_v13.xml", "590.44.01", "13.1",
     [(f"0000:0{i}:00.0", "NVIDIA GeForce RTX 2070", 8192, 175.0, 175.0) for i in (1, 2)]),
    ("xml_2x-rtx2080_drv590.44.01_v13.xml", "590.44.01", "13.1",
     [(f"0000:0{i}:00.0", "NVIDIA GeForce RTX 2080", 8192, 215.0, 215.0) for i in (1, 2)]),
    ("smi-q_2x-rtx4060ti_drv550.54.14.txt", "550.54.14", "12.4",
     [(f"0000:0{b}:00.0", "NVIDIA GeForce RTX 4060 Ti", 16380, 165.0, 165.0) for b in (3, 9)]),
    ("smi-q_10x-a40_drv550.127.05.txt", "550.127.05", "12.4",
     [(f"0000:{b}:00.0", "NVIDIA A40", 46068, 300.0, 300.0)
      for b in ("4f", "52", "53", "56", "57", "ce", "d1", "d2", "d5", "d6")]),
    ("smi-table_10x-a40_drv550.127.05.txt", "550.127.05", "12.4",
     [(f"0000:{b}:00.0", "NVIDIA A40", 46068, 300.0, None)
      for b in ("4f", "52", "53", "56", "57", "ce", "d1", "d2", "d5", "d6")]),
    ("smi-table_2x-rtx3090_drv560.35.03.txt", "560.35.03", "12.6",
     [(f"0000:{b}:00.0", "NVIDIA GeForce RTX 3090", 24576, 350.0, None) for b in ("41", "81")]),
]


def _nvidia(name: str):
    parse = {"xml": parse_smi_xml, "smi-q": parse_smi_q_text, "smi-table": parse_smi_table}[name.split("_", 1)[0]]
    return parse(_text("nvidia", name))


@pytest.mark.parametrize("name, driver, cuda, gpus", NVIDIA, ids=[row[0] for row in NVIDIA])
def test_nvidia_outputs(name, driver, cuda, gpus):
    report = _nvidia(name)
    assert (report.driver_version, report.cuda_version) == (driver, cuda)
    got = [(g.get("pci_bus_id"), g.get("name"), g.get("memory_bytes"), g.get("power_limit_w"),
            g.get("power_default_w")) for g in report.gpus]
    assert got == [(bus, gpu, mib * MIB, limit, default) for bus, gpu, mib, limit, default in gpus]
    assert [g["index"] for g in report.gpus] == list(range(len(gpus)))


CAPTURES = [
    # file, driver, cuda, (bus id, name, memory MiB, power limit, default, persistence)
    ("capture_rtx2080super_linux_drv610.57.04.txt", "610.57.04", "13.3",
     ("0000:0c:00.0", "NVIDIA GeForce RTX 2080 SUPER", 8192, 250.0, 250.0, False)),
    ("capture_rtx2080super_linux_drv595.71.05.txt", "595.71.05", "13.2",
     ("0000:0c:00.0", "NVIDIA GeForce RTX 2080 SUPER", 8192, 250.0, 250.0, False)),
    ("capture_rtx2080super_windows_drv591.86.txt", "591.86", "13.1",
     ("0000:0c:00.0", "NVIDIA GeForce RTX 2080 SUPER", 8192, 250.0, 250.0, None)),
    ("capture_h200_drv590.48.01.txt", "590.48.01", "13.1", ("0000:83:00.0", "NVIDIA H200", 143771, 700.0, 700.0, True)),
]


@pytest.mark.parametrize("name, driver, cuda, gpu", CAPTURES, ids=[row[0] for row in CAPTURES])
def test_exporter_captures_every_section_agrees(name, driver, cuda, gpu):
    """The -q text, the --query-gpu CSV and the table of one capture, idle and under load, give the same card
    (the table cuts long names to "NVIDIA GeForce RTX 2080 ..." and has no default limit: those stay unknown)."""
    sections = split_capture(_text("nvidia", name))
    bus, product, mib, limit, default, persistence = gpu
    for phase in ("idle", "load"):
        q = parse_smi_q_text(sections[f"{phase} :: query (-q)"])
        csv = parse_smi_query_csv(sections[f"{phase} :: query-gpu (csv, what the exporter parses)"])
        table = parse_smi_table(sections[f"{phase} :: nvidia-smi (default table)"])
        assert (q.driver_version, q.cuda_version, table.driver_version, table.cuda_version) == (driver, cuda) * 2
        assert csv.driver_version == driver
        for report in (q, csv, table):
            (got,) = report.gpus
            assert (got["pci_bus_id"], got["memory_bytes"], got["power_limit_w"], got.get("persistence_mode")) == (
                bus, mib * MIB, limit, persistence)
        assert q.gpus[0]["name"] == csv.gpus[0]["name"] == product
        assert q.gpus[0]["power_default_w"] == csv.gpus[0]["power_default_w"] == default
        assert table.gpus[0].get("name") in (product, None) and "power_default_w" not in table.gpus[0]


def test_nvidia_unknowns_stay_unknown():
    """N/A on a vGPU guest and a Windows WDDM card: no persistence, ECC, MIG, PCIe or VBIOS value is made up."""
    grid = _nvidia("xml_grid-p4-1q-vgpu-guest_windows_drv513.46_v11.xml").gpus[0]
    assert grid["pci_device_id"] == "1bb3" and grid["architecture"] == "Pascal"
    assert {"persistence_mode", "ecc_enabled", "mig_enabled", "mig_devices", "pcie_gen_max", "vbios",
            "serial"}.isdisjoint(grid)
    rtx3080 = _nvidia("xml_rtx3080_windows_drv536.40_v12.xml").gpus[0]
    assert "persistence_mode" not in rtx3080 and rtx3080["pcie_gen_max"] == 4
    a40 = _nvidia("smi-q_10x-a40_drv550.127.05.txt").gpus
    assert all(g["ecc_enabled"] and g["persistence_mode"] and "mig_enabled" not in g for g in a40)  # MIG "N/A"
    assert _nvidia("xml_tesla-p100-pcie-16gb_drv510.47.03_v11.xml").gpus[0]["ecc_enabled"] is True


# -- AMD: rocm-smi JSON of ROCm 4 / 5.7 / 6.0, concise table of one MI300X; a whole MI300X CPX topology -----

AMD = [
    # file, driver, [(bus id, device id, name, memory bytes, power cap W)]
    ("rocm-smi_rx6700xt_rocm5.7.1.json", "6.3.6",
     [("0000:07:00.0", "73df", "Navi 22 [Radeon RX 6700/6700 XT / 6800M]", 12868124672, 211.0)]),
    ("rocm-smi_rx6700xt_rocm6.0.2.json", "6.3.6",
     [("0000:07:00.0", "73df", "Navi 22 [Radeon RX 6700/6700 XT / 6800M]", 12868124672, 211.0)]),
    ("rocm-smi_vega10-xt-6861_rocm4.json", "5.9.25", [("0000:04:00.0", "6861", None, 17163091968, 170.0)]),
    ("rocm-smi_concise_1x-mi300x.txt", None, [(None, "74a1", "AMD Instinct MI300X", None, 750.0)]),
]


@pytest.mark.parametrize("name, driver, gpus", AMD, ids=[row[0] for row in AMD])
def test_amd_outputs(name, driver, gpus):
    parse = parse_rocm_smi_json if name.endswith(".json") else parse_rocm_smi_text
    report = parse(_text("amd", name))
    assert report.driver_version == driver
    got = [(g.get("pci_bus_id"), g.get("pci_device_id"), g.get("name"), g.get("memory_bytes"),
            g.get("power_limit_w")) for g in report.gpus]
    assert got == gpus


def _kfd_bundle(tmp_path: Path, topology: str) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(PUBLIC / "amd" / topology, root / "sys" / "class" / "kfd" / "kfd" / "topology")
    return root


def test_mi300x_cpx_topology_is_eight_cards(tmp_path):
    """8x MI300X in CPX mode as KFD lists it: 63 partition nodes (one card shows 7 of its 8) and no memory banks."""
    profile = probe_host(Host.bundle(_kfd_bundle(tmp_path, "kfd-topology_8x-mi300x-cpx")))
    assert len(profile.gpus) == 8 and profile.visible_gpu_count == 63
    assert [g.pci_bus_id for g in profile.gpus] == [
        f"0000:{b}:00.0" for b in ("05", "27", "47", "65", "85", "a7", "c7", "e5")]
    assert {(g.name, g.gfx_target, g.compute_partition) for g in profile.gpus} == {
        ("AMD Instinct MI300X", "gfx942", "CPX")}
    assert [len(g.partitions) for g in profile.gpus] == [8] * 7 + [7]
    assert all(p.compute_units == 38 for g in profile.gpus for p in g.partitions)
    (finding,) = [f for f in run_checks(profile) if f.id == "gpu.partitions"]
    # failed before: "(~ per card" when the cards' partition counts differ
    assert "8 physical GPU(s) in CPX mode: frameworks see 63 device(s) (7-8 per card" in finding.message


# -- lscpu: EPYC Naples 2S, POWER7 LPAR, Raspberry Pi class Arm boards, a Snapdragon ------------------------

CPUS = [
    # file, (model, logical, sockets, physical cores, numa nodes, clusters)
    ("lscpu_2x-epyc-7601_128t_8numa.txt", ("AMD EPYC 7601 32-Core Processor", 128, 2, 64, 8, None)),
    ("lscpu_ppc64-power7-16s-smt4_plus-parsable.txt",
     ("POWER7 (architected), altivec supported", 64, 16, 16, 2, None)),
    ("lscpu_cortex-a72-4c_aarch64.txt", ("Cortex-A72", 4, 1, 4, 1, 1)),
    ("lscpu_arm1176-1c_armv6l.txt", ("ARM1176", 1, 1, 1, None, None)),
    # failed before: old lscpu calls a Snapdragon's two clusters "Socket(s): 2" (Vendor ID Qualcomm)
    ("lscpu_qualcomm-kryo-v2-8c_socket2-clusters.txt", ("Kryo V2", 8, 1, 8, None, 2)),
]


@pytest.mark.parametrize("name, expected", CPUS, ids=[row[0] for row in CPUS])
def test_lscpu(name, expected):
    info = parse_lscpu(_text("cpu", name))
    keys = ("model", "logical_cpus", "sockets", "physical_cores", "numa_nodes", "clusters")
    assert tuple(info.get(k) for k in keys) == expected


# -- /proc/mdstat: old and new layouts, partitionable md_d0, inactive arrays -------------------------------

MDSTAT = [
    # file, {array: (level, state, total, active, degraded, member count, size KiB)}
    ("pymdstat02_md_d0_raid5_bitmap.txt", {"md_d0": ("raid5", "active", 5, 5, False, 5, 1250241792)}),
    ("pymdstat03_raid5_degraded_no-super.txt", {"md0": ("raid5", "active", 4, 3, True, 3, 1465151808)}),
    ("pymdstat04_4-arrays_raid1_raid5.txt", {
        "md1": ("raid1", "active", 2, 2, False, 2, 136448), "md2": ("raid1", "active", 2, 2, False, 2, 129596288),
        "md3": ("raid5", "active", 10, 10, False, 10, 1318680576),
        "md0": ("raid1", "active", 2, 2, False, 2, 16787776)}),
    ("pymdstat06_raid6_ide-member.txt", {"md0": ("raid6", "active", 7, 7, False, 7, 1225557760)}),
    ("pymdstat08_inactive_raid5.txt", {"md0": ("raid5", "inactive", 4, 4, False, 3, 95425536)}),
    ("pymdstat11_inactive_no-level_spare.txt", {"md127": (None, "inactive", None, None, None, 3, 6282240)}),
    ("pymdstat12_raid0_loop.txt", {"md127": ("raid0", "active", None, None, None, 2, 10475520)}),
    # Linux 2.4: a "read_ahead" line, no "unused devices" line
    ("checkbox_2.4-kernel_read-ahead_raid1_raid0.txt", {
        "md2": ("raid1", "active", 2, 2, False, 2, 17920384),
        "md1": ("raid0", "active", None, None, None, 2, 35840768)}),
]


@pytest.mark.parametrize("name, arrays", MDSTAT, ids=[row[0] for row in MDSTAT])
def test_mdstat(name, arrays):
    got = {a.name: (a.level, a.state, a.devices_total, a.devices_active, a.degraded, len(a.members), a.size_bytes)
           for a in parse_mdstat(_text("mdstat", name))}
    assert got == {k: (*v[:6], v[6] * 1024) for k, v in arrays.items()}


def test_mdstat_spare_and_bitmap():
    (md,) = parse_mdstat(_text("mdstat", "pymdstat11_inactive_no-level_spare.txt"))
    assert [m.state for m in md.members] == ["active", "active", "spare"] and md.metadata == "1.2"
    (md,) = parse_mdstat(_text("mdstat", "pymdstat02_md_d0_raid5_bitmap.txt"))
    assert md.bitmap is True and md.metadata == "1.2"


# -- lsblk: every column (-o +ALL style) tables, flat KNAME JSON --------------------------------------------


def _devices(parse, name):
    return {d.name: d for d in parse(_text("lsblk", name))}


def test_lsblk_all_columns_multi_word_values():
    """failed before: a value of several words ("VMware Virtual S", a disc label) spilled into the next column."""
    centos = _devices(parse_lsblk_table, "lsblk-o-all_centos7.7-vm_lvm_dvd.txt")
    assert (centos["sda"].model, centos["sda"].serial, centos["sda"].size_bytes) == ("VMware Virtual S", None, 20 * GIB)
    assert (centos["sr0"].model, centos["sr0"].serial) == ("VMware IDE CDR10", "10000000000000000001")
    assert (centos["dm-0"].parent, centos["dm-0"].type, centos["dm-0"].mountpoints) == ("sda2", "lvm", ("/",))
    ubuntu = _devices(parse_lsblk_table, "lsblk-o-all_ubuntu18.04-vm_snaps.txt")
    assert (ubuntu["sr1"].model, ubuntu["sr1"].serial) == ("VMware SATA CD01", "01000000000000000001")
    assert (ubuntu["sr1"].fstype, ubuntu["sr1"].uuid) == ("iso9660", "2019-08-05-20-00-00-00")
    assert (ubuntu["sda2"].uuid, ubuntu["sda2"].fstype, ubuntu["sda2"].mountpoints) == (
        "011527a0-c72a-4c00-a50e-ee90da26b6e2", "ext4", ("/",))
    assert ubuntu["sda"].transport == "spi" and ubuntu["sr0"].media == "optical"


def test_lsblk_flat_kname_json():
    dgx = parse_lsblk_json(_text("lsblk", "lsblk-J-b-kname_dgx-station_flat_raid0.json"))
    by_name = {d.name: d for d in dgx}
    assert by_name["sda"].size_bytes == 1734636624391 and by_name["sda1"].mountpoints == ("/boot/efi",)
    assert (by_name["md0"].type, by_name["md0"].mountpoints) == ("raid0", ("/raid",))
    s390 = {d.name: d for d in parse_lsblk_json(_text("lsblk", "lsblk-J-b-kname_s390x-dasd.json"))}
    assert s390["dasda2"].mountpoints == ("[SWAP]",) and s390["dasda1"].fstype == "btrfs"


# -- dmidecode -t memory and /etc/os-release -----------------------------------------------------------------


@pytest.mark.parametrize("name, count, speed", [
    ("dmidecode_lenovo-systemx.txt", 4, 2133),  # 4 of 24 slots, 16384 MB DDR4-2133
    ("dmidecode_fedora32-vmware-vm.txt", 1, None),  # a VMware guest: 1 of 128 "RAM slot"s, speed Unknown
])
def test_dmidecode(name, count, speed):
    info = parse_dmidecode_memory(_text("system", name))
    assert (info["dimm_count"], info["dimm_speed_mts"]) == (count, speed)


@pytest.mark.parametrize("name, expected", [
    ("os-release_centos7.txt", ("centos", "7", "rhel fedora", "CentOS Linux 7 (Core)")),
    ("os-release_ubuntu18.04.5.txt", ("ubuntu", "18.04", "debian", "Ubuntu 18.04.5 LTS")),
])
def test_os_release(name, expected):
    info = parse_os_release(_text("system", name))
    assert (info["ID"], info["VERSION_ID"], info["ID_LIKE"], info["PRETTY_NAME"]) == expected


def test_every_public_capture_is_cited_once():
    """Each file under tests/fixtures/public has one SOURCES.tsv row (repository, path, commit, licence)."""
    rows = [line.split("\t") for line in (PUBLIC / "SOURCES.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert all(len(row) == 6 and all(cell.strip() for cell in row) for row in rows)
    listed = [row[0] for row in rows]
    files = {str(p.relative_to(PUBLIC)) for p in PUBLIC.rglob("*") if p.is_file() and p.name != "SOURCES.tsv"}
    assert len(listed) == len(set(listed)) and set(listed) == files


def _indented(text: str) -> str:
    """The output as pasted into a Markdown list or a mail quote: every line indented by four spaces."""
    return "".join("    " + line for line in text.splitlines(keepends=True))


@pytest.mark.parametrize("kind, name, parse", [
    ("nvidia", "smi-table_10x-a40_drv550.127.05.txt", parse_smi_table),
    ("nvidia", "smi-vgpu-table_host_rtx-unlocked_drv525.147.01.txt", parse_smi_table),
    ("amd", "rocm-smi_concise_4x-mi300x.txt", parse_rocm_smi_text),
    ("amd", "rocminfo_4x-mi300x_2x-epyc9474f.txt", parse_rocminfo),
    ("system", "dmidecode_lenovo-systemx.txt", parse_dmidecode_memory),
    ("nvidia", "smi-q_10x-a40_drv550.127.05.txt", parse_smi_q_text),
    ("amd", "rocm-smi_showall_4x-mi300x.txt", parse_rocm_smi_text),
    ("cpu", "lscpu_2x-epyc-7601_128t_8numa.txt", parse_lscpu),
    ("mdstat", "pymdstat04_4-arrays_raid1_raid5.txt", parse_mdstat),
])
def test_a_pasted_indent_reads_the_same(kind, name, parse):
    """failed before for the nvidia-smi tables, rocm-smi (table and -a), rocminfo and dmidecode (lines anchored
    at the line start were not found); the -q text, lscpu and mdstat read indented output already."""
    text = _text(kind, name)
    assert parse(text)
    assert parse(_indented(text)) == parse(text)


#: What the driver prints on stdout ahead of its report on a card with a damaged infoROM (as quoted in public
#: pastes, e.g. a table followed by this line); a paste may also carry the shell prompt.
INFOROM_WARNING = "WARNING: infoROM is corrupted at gpu 0000:17:00.0\n"


def test_driver_warning_and_prompt_around_xml():
    """failed before: one stdout warning line made the whole XML report unreadable (SmiParseError)."""
    text = _text("nvidia", "xml_tesla-p100-pcie-16gb_drv510.47.03_v11.xml")
    wrapped = "$ nvidia-smi -q -x\n" + INFOROM_WARNING + text + "$ \n"
    assert parse_smi_xml(wrapped) == parse_smi_xml(text) and parse_smi_xml(text).gpus


def test_driver_warning_ahead_of_query_csv():
    """failed before: the warning was taken for the CSV header (SmiParseError), or without a header for a GPU."""
    csv_text = _text("nvidia", "csv_query-gpu_tesla-p100.csv")
    assert parse_smi_query_csv(INFOROM_WARNING + csv_text) == parse_smi_query_csv(csv_text)
    header, *rows = csv_text.splitlines()
    fields = [column.strip().split(" [")[0] for column in header.split(",")]
    plain = parse_smi_query_csv("\n".join(rows), fields=fields)
    assert parse_smi_query_csv(INFOROM_WARNING + "\n".join(rows), fields=fields) == plain and len(plain.gpus) == 1


#: amd-smi run by Python 3.14 warns about its own code on stdout before the JSON (quoted from a public
#: report: github.com/nathaninline/ajean issue 39, amd-smi static --json on a Radeon RX 7800 XT).
AMD_SMI_WARNINGS = (
    "/usr/lib/python3.14/site-packages/amdsmi/amdsmi_interface.py:3569: SyntaxWarning: 'return' in a 'finally' block\n"
    "  return return_dictionary\n"
)


@pytest.mark.parametrize("name, parse", [
    ("amd-smi-static-json_mi210_gfx90a.json", parse_amd_smi_json),
    ("rocm-smi_4x-mi100_rocm6.0.2.json", parse_rocm_smi_json),
    ("rocm-smi_rx6700xt_rocm5.7.1.json", parse_rocm_smi_json),
])
def test_warnings_and_prompt_around_amd_json(name, parse):
    """failed before for rocm-smi (any line before or after its JSON lost every GPU) and for amd-smi followed
    by a prompt; a "[...]" warning line is not taken for the JSON list."""
    text = _text("amd", name)
    expected = parse(text)
    assert expected.gpus
    assert parse(AMD_SMI_WARNINGS + "[WARNING] " + text.splitlines()[0] + "\n" + text + "\n$ \n") == expected
    assert parse(_indented(text)) == expected
