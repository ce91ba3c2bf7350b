"""NVIDIA parsers on real nvidia-smi / NVML captures (fixtures/public/nvidia and the H100 bundle)."""

from __future__ import annotations

import ctypes.util
import json
import sys
from pathlib import Path

import pynvml
import pytest

from conftest import H100_BUNDLE, PUBLIC
from dlsetup.errors import UsageError
from dlsetup.model import GPU, GPULink
from dlsetup.parsers.nvidia import (
    SmiParseError,
    SmiReport,
    parse_proc_driver_version,
    parse_smi_list,
    parse_smi_q_text,
    parse_smi_query_csv,
    parse_smi_table,
    parse_smi_xml,
    parse_topo_matrix,
    report_from_nvml_snapshot,
    split_capture,
)
from dlsetup.probe import nvml

NVIDIA = PUBLIC / "nvidia"
MIB = 1 << 20
Q_SECTION = "idle :: query (-q)"
CSV_SECTION = "idle :: query-gpu (csv, what the exporter parses)"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _parse_file(path: Path) -> SmiReport:
    """Each public file by its name prefix; a capture file by its -q section."""
    text = _read(path)
    prefix = path.name.split("_", 1)[0]
    if prefix == "capture":
        return parse_smi_q_text(split_capture(text)[Q_SECTION])
    parsers = {
        "xml": parse_smi_xml,
        "csv": parse_smi_query_csv,
        "smi-q": parse_smi_q_text,
        "smi-table": parse_smi_table,
        "smi-vgpu-table": parse_smi_table,
        "vgpu-guest-smi-q": parse_smi_q_text,
    }
    return parsers[prefix](text)


def _public(name: str) -> SmiReport:
    return _parse_file(NVIDIA / name)


def _capture(name: str) -> dict[str, str]:
    return split_capture(_read(NVIDIA / name))


def _bundle(name: str) -> str:
    return _read(H100_BUNDLE / "cmd" / name)


# -- every public file ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(NVIDIA.iterdir()), ids=lambda p: p.name)
def test_every_public_file_parses_into_model_gpus(path: Path) -> None:
    report = _parse_file(path)
    assert report.gpus, "every public NVIDIA capture holds at least one GPU"
    for gpu in report.gpus:
        assert set(gpu) <= {f for f in GPU.__dataclass_fields__}
        assert gpu["vendor"] == "nvidia" and gpu["sources"] == ("nvidia-smi",)
        if "pci_bus_id" in gpu:
            GPU(**gpu)  # the dict is a valid model GPU


def test_unknown_values_leave_keys_out() -> None:
    # Windows WDDM XML: persistence, ECC and MIG are N/A
    gpu = _public("xml_rtx2080_windows-wddm_drv516.59_v11.xml").gpus[0]
    assert {"persistence_mode", "ecc_enabled", "mig_enabled", "serial"}.isdisjoint(gpu)
    assert gpu["name"] == "NVIDIA GeForce RTX 2080" and gpu["power_limit_w"] == 275.0
    # laptop GPU: power limits N/A
    assert "power_limit_w" not in _public("xml_rtx3060-laptop_drv515_v11.xml").gpus[0]
    # "[REDACTED]" PCI ids are not hex ids; a sanitised 000000DE id is no id
    assert "pci_device_id" not in _public("xml_rtx3090_drv525_v12.xml").gpus[0]
    assert "pci_device_id" not in _public("xml_a10g_drv515_v11.xml").gpus[0]
    # Kepler on the 470 driver: PCIe link N/A and the old one-line "Clocks Throttle Reasons : N/A"
    gtx680 = _public("smi-q_gtx680_drv470.256.02.txt").gpus[0]
    assert gtx680["name"] == "NVIDIA GeForce GTX 680" and gtx680["memory_bytes"] == 2000 * MIB
    assert {"pcie_gen_max", "pcie_width_max", "mig_enabled", "ecc_enabled", "power_limit_w"}.isdisjoint(
        gtx680
    )


def test_csv_brackets_and_not_supported_are_unknown() -> None:
    section = _capture("capture_rtx2080super_windows_drv610.62.txt")[CSV_SECTION]
    gpu = parse_smi_query_csv(section).gpus[0]
    assert section.splitlines()[1].split(", ")[6] == "[N/A]"  # the serial column
    assert "serial" not in gpu and "persistence_mode" not in gpu
    assert gpu["compute_capability"] == "7.5" and gpu["pci_subsystem_id"] == "1458:4005"
    header, row = _bundle("nvidia-smi-query-gpu.out").splitlines()
    values = row.split(", ")
    values[5:7] = ["[Not Supported]", "[Unknown Error]"]  # memory.total, power.limit
    gpu = parse_smi_query_csv(f"{header}\n{', '.join(values)}\n").gpus[0]
    assert "memory_bytes" not in gpu and "power_limit_w" not in gpu and gpu["compute_capability"] == "9.0"


def test_csv_noheader_nounits() -> None:
    header, row = _bundle("nvidia-smi-query-gpu.out").splitlines()
    fields = [name.split(" [")[0] for name in header.split(", ")]
    nounits = row.replace(" MiB", "").replace(" W", "")
    gpu = parse_smi_query_csv(nounits, fields=fields).gpus[0]
    assert gpu["memory_bytes"] == 81559 * MIB and gpu["power_limit_w"] == 700.0


def test_csv_without_bus_id_still_names_the_gpu() -> None:
    gpu = _public("csv_query-gpu_tesla-p100.csv").gpus[0]
    assert gpu == {
        "name": "Tesla P100-PCIE-16GB",
        "uuid": "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6",
        "vendor": "nvidia",
        "sources": ("nvidia-smi",),
    }


# -- multi-GPU hosts ------------------------------------------------------------------------------


def test_8x_h100_q_text_and_table_agree() -> None:
    q = _public("smi-q_8x-h100-80gb-hbm3-sxm_drv565.57.01.txt")
    table = _public("smi-table_8x-h100-80gb-hbm3-sxm_drv565.57.01.txt")
    buses = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"]
    for report in (q, table):
        assert (report.driver_version, report.cuda_version) == ("565.57.01", "12.7")
        assert [g["pci_bus_id"] for g in report.gpus] == [f"0000:{b}:00.0" for b in buses]
        assert [g["index"] for g in report.gpus] == list(range(8))
        assert {g["name"] for g in report.gpus} == {"NVIDIA H100 80GB HBM3"}
        assert {g["memory_bytes"] for g in report.gpus} == {81559 * MIB}
        assert {g["power_limit_w"] for g in report.gpus} == {700.0}
    assert q.gpus[0]["uuid"] == "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"
    assert {(g["pcie_gen_max"], g["pcie_width_max"], g["mig_devices"]) for g in q.gpus} == {(5, 16, 0)}


def test_8x_rtx4090() -> None:
    report = _public("smi-q_8x-rtx4090_drv550.127.05.txt")
    assert len(report.gpus) == 8
    assert {g["name"] for g in report.gpus} == {"NVIDIA GeForce RTX 4090"}
    assert {g["architecture"] for g in report.gpus} == {"Ada Lovelace"}
    assert {g["memory_bytes"] for g in report.gpus} == {24564 * MIB}
    assert {g["ecc_enabled"] for g in report.gpus} == {False}
    assert all("mig_enabled" not in g for g in report.gpus)  # consumer cards: MIG N/A


def test_2x_rtx_a5000_xml_v13() -> None:
    report = _public("xml_2x-rtx-a5000_drv590_v13.xml")
    assert (report.driver_version, report.cuda_version) == ("590.44.01", "13.1")
    assert [(g["index"], g["pci_bus_id"]) for g in report.gpus] == [(0, "0000:81:00.0"), (1, "0000:c1:00.0")]
    assert {g["name"] for g in report.gpus} == {"NVIDIA RTX A5000"}
    assert {g["power_limit_w"] for g in report.gpus} == {230.0}


# -- MIG ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, memory_mib, mig_devices",
    [
        ("xml_a100-sxm4-80gb_mig_drv535_v12.xml", 81920, 4),
        ("xml_a100-sxm4-40gb_mig_gcp_drv510_v11.xml", 40960, 2),
        ("capture_h100-80gb-hbm3_mig4_drv590.48.01.txt", 81559, 4),
        ("capture_h200_mig5_drv590.48.01.txt", 143771, 5),
    ],
)
def test_mig_enabled_with_its_devices(name: str, memory_mib: int, mig_devices: int) -> None:
    gpu = _public(name).gpus[0]
    assert gpu["mig_enabled"] is True and gpu["mig_devices"] == mig_devices
    assert gpu["memory_bytes"] == memory_mib * MIB


def test_mig_capture_sections_agree() -> None:
    sections = _capture("capture_h200_mig5_drv590.48.01.txt")
    assert parse_smi_list(sections["capabilities :: list (-L)"]) == [
        (0, "NVIDIA H200", "GPU-00000000-0000-0000-0000-000000000000")
    ]
    csv_gpu = parse_smi_query_csv(sections[CSV_SECTION]).gpus[0]
    table_gpu = parse_smi_table(sections["idle :: nvidia-smi (default table)"]).gpus[0]
    for gpu in (csv_gpu, table_gpu):
        assert gpu["mig_enabled"] is True and gpu["pci_bus_id"] == "0000:83:00.0"
    assert csv_gpu["compute_capability"] == "9.0" and csv_gpu["pci_device_id"] == "2335"


# -- special hardware and layouts -----------------------------------------------------------------


def test_418_xml_without_dtd_and_graphics_device_name() -> None:
    report = _public("xml_gtx1660ti_drv418_nodtd.xml")
    assert (report.driver_version, report.cuda_version) == ("418.43", "10.1")
    gpu = report.gpus[0]
    assert "name" not in gpu  # "Graphics Device": the PCI table names it
    assert "architecture" not in gpu and "mig_devices" not in gpu  # no such elements in 418
    assert (gpu["pci_device_id"], gpu["pci_vendor_id"], gpu["pci_subsystem_id"]) == (
        "2184",
        "10de",
        "1458:3fc8",
    )
    assert (gpu["pcie_gen_max"], gpu["pcie_gen_current"], gpu["power_limit_w"]) == (3, 1, 130.0)


def test_gh200_gpu_power_not_module_power() -> None:
    gpu = _public("smi-q_gh200-480gb_drv550.127.05.txt").gpus[0]
    assert gpu["name"] == "NVIDIA GH200 480GB" and gpu["architecture"] == "Hopper"
    assert gpu["memory_bytes"] == 97871 * MIB
    assert (gpu["power_limit_w"], gpu["power_default_w"]) == (700.0, 900.0)  # module readings say 1000 W


def test_blackwell_rtx_pro_6000() -> None:
    report = _public("xml_rtx-pro-6000-blackwell-maxq_drv590_v13.xml")
    gpu = report.gpus[0]
    assert gpu["name"] == "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    assert (gpu["architecture"], gpu["pci_device_id"], gpu["pci_bus_id"]) == (
        "Blackwell",
        "2bb4",
        "0000:61:00.0",
    )
    assert (gpu["memory_bytes"], gpu["power_limit_w"], gpu["ecc_enabled"]) == (97887 * MIB, 300.0, False)


def test_windows_610_kmd_and_umd_versions() -> None:
    sections = _capture("capture_rtx2080super_windows_drv610.62.txt")
    for report in (
        parse_smi_q_text(sections[Q_SECTION]),
        parse_smi_table(sections["idle :: nvidia-smi (default table)"]),
    ):
        assert (report.driver_version, report.cuda_version) == ("610.62", "13.3")
    table_gpu = parse_smi_table(sections["idle :: nvidia-smi (default table)"]).gpus[0]
    assert "name" not in table_gpu  # cut short: "NVIDIA GeForce RTX 2080 ..."
    assert "persistence_mode" not in table_gpu  # WDDM, not On/Off


def test_split_capture_sections() -> None:
    sections = _capture("capture_l40s_drv595.80.txt")
    assert sections["capabilities :: version"].splitlines()[0] == "NVIDIA-SMI version  : 595.80"
    notes = sections["nvidia_gpu_exporter GPU capture"].splitlines()
    assert "arch:           x86_64" in notes and notes[-1].startswith("load:")
    assert sections[Q_SECTION].startswith("==============NVSMI LOG==============")
    assert {
        "load :: query (-q)",
        "capabilities :: topo -m",
        "idle :: dmon (per-device monitor, incl. PCIe rx/tx)",
    } <= set(sections)
    assert split_capture("no sections here") == {}


# -- the H100 bundle: every source agrees ------------------------------------------------------------


def test_h100_bundle_sources_agree() -> None:
    reports = {
        "xml": parse_smi_xml(_bundle("nvidia-smi-q-x.out")),
        "q": parse_smi_q_text(_bundle("nvidia-smi-q.out")),
        "csv": parse_smi_query_csv(_bundle("nvidia-smi-query-gpu.out")),
        "table": parse_smi_table(_bundle("nvidia-smi.out")),
        "nvml": report_from_nvml_snapshot(json.loads(_read(H100_BUNDLE / "nvml.json"))),
    }
    assert {r.driver_version for r in reports.values()} == {"580.159.04"}
    assert {r.cuda_version for k, r in reports.items() if k != "csv"} == {"13.0"}
    expected = {
        "index": 0,
        "pci_bus_id": "0000:00:06.0",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_bytes": 85520809984,
        "power_limit_w": 700.0,
        "mig_enabled": False,
    }
    detailed = {
        **expected,
        "uuid": "GPU-6022a71e-4498-0801-9353-3dc421998072",
        "pcie_gen_max": 5,
        "pcie_width_max": 16,
        "ecc_enabled": True,
    }
    for kind, report in reports.items():
        (gpu,) = report.gpus
        want = expected if kind == "table" else detailed
        assert {k: gpu.get(k) for k in want} == want, kind
    assert 81559 * MIB == 85520809984  # smi's MiB and NVML's bytes are the same size
    for kind in ("csv", "nvml"):
        assert reports[kind].gpus[0]["compute_capability"] == "9.0"
    nvml_gpu = reports["nvml"].gpus[0]
    assert (nvml_gpu["architecture"], nvml_gpu["cuda_cores"], nvml_gpu["memory_bus_width_bits"]) == (
        "Hopper",
        16896,
        5120,
    )
    assert nvml_gpu["sources"] == ("nvml",) and nvml_gpu["persistence_mode"] is True
    assert parse_smi_list(_bundle("nvidia-smi-L.out")) == [
        (0, "NVIDIA H100 80GB HBM3", "GPU-6022a71e-4498-0801-9353-3dc421998072")
    ]


# -- topo -m --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(NVIDIA.glob("capture_*")), ids=lambda p: p.name)
def test_topo_of_single_gpu_captures_has_no_links(path: Path) -> None:
    assert parse_topo_matrix(split_capture(_read(path))["capabilities :: topo -m"]) == ()


def test_topo_bundle_and_matrix_layout() -> None:
    assert parse_topo_matrix(_bundle("nvidia-smi-topo-m.out")) == ()
    # The captures hold single-GPU hosts only; this matrix is built in nvidia-smi's layout
    # (tab separated, underlined header, NIC and affinity columns, legend) to test pairs.
    matrix = (
        "\t\x1b[4mGPU0\tGPU1\tGPU2\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
        "GPU0\t X \tNV12\tSYS\tPXB\t0-15\t0\t\tN/A\n"
        "GPU1\tNV12\t X \tSYS\tPXB\t0-15\t0\t\tN/A\n"
        "GPU2\tSYS\tSYS\t X \tSYS\t16-31\t1\t\tN/A\n"
        "NIC0\tPXB\tPXB\tSYS\t X \n\nLegend:\n\n  X    = Self\n"
        "  NV#  = Connection traversing a bonded set of # NVLinks\n"
    )
    assert parse_topo_matrix(matrix) == (GPULink(0, 1, "NV12"), GPULink(0, 2, "SYS"), GPULink(1, 2, "SYS"))


# -- /proc/driver/nvidia/version ---------------------------------------------------------------------


def test_proc_driver_version() -> None:
    assert parse_proc_driver_version(_read(H100_BUNDLE / "proc/driver/nvidia/version")) == (
        "580.159.04",
        "open",
    )
    proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
    assert parse_proc_driver_version(proprietary) == ("535.104.05", "proprietary")
    aarch64 = "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  550.127.05  Release Build\n"
    assert parse_proc_driver_version(aarch64) == ("550.127.05", "open")
    assert parse_proc_driver_version("") == (None, None)


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<nvidia_smi_log><gpu>",
        "<other/>",
        '<!DOCTYPE x [<!ENTITY a "aaaa">]><nvidia_smi_log>&a;</nvidia_smi_log>',
    ],
)
def test_bad_xml_is_one_usage_error(text: str) -> None:
    with pytest.raises(SmiParseError) as raised:
        parse_smi_xml(text)
    assert isinstance(raised.value, UsageError) and "\n" not in str(raised.value)


def test_bad_csv_and_empty_text() -> None:
    with pytest.raises(SmiParseError):
        parse_smi_query_csv("")
    with pytest.raises(SmiParseError):
        parse_smi_query_csv(_bundle("nvidia-smi-L.out"))
    assert parse_smi_q_text("No devices were found\n") == SmiReport()
    assert (
        parse_smi_table("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        == SmiReport()
    )
    assert parse_smi_list("No devices found.") == []
    assert (
        report_from_nvml_snapshot({"error": "NVML: Driver Not Loaded", "error_kind": "driver_not_loaded"})
        == SmiReport()
    )
    assert report_from_nvml_snapshot(
        {"driver": 5, "cuda_driver": "13000", "devices": [None, {"memory": "x"}]}
    ) == SmiReport(gpus=({"index": 1, "vendor": "nvidia", "sources": ("nvml",)},))


# -- live NVML ---------------------------------------------------------------------------------------


def test_nvml_snapshot_without_library() -> None:
    snapshot = nvml.nvml_snapshot()
    if ctypes.util.find_library("nvidia-ml") is None:
        assert snapshot == {"error": "NVML: NVML Shared Library Not Found", "error_kind": "library_not_found"}
    else:  # a GPU host: the real shape
        assert snapshot.get("error_kind") in (None, *nvml.ERROR_KINDS)


def test_nvml_snapshot_without_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    snapshot = nvml.nvml_snapshot()
    assert snapshot["error_kind"] == "library_not_found" and "nvidia-ml-py" in snapshot["error"]


@pytest.mark.parametrize(
    "code, kind",
    [
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "lib_rm_version_mismatch"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver_not_loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no_permission"),
        (pynvml.NVML_ERROR_UNKNOWN, "other"),
    ],
)
def test_nvml_init_failures_are_classified(monkeypatch: pytest.MonkeyPatch, code: int, kind: str) -> None:
    def fail() -> None:
        raise pynvml.NVMLError(code)  # pynvml turns the code into its own subclass

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    snapshot = nvml.nvml_snapshot()
    assert snapshot == {"error": f"NVML: {pynvml.NVMLError(code)}", "error_kind": kind}


def test_nvml_unsupported_fields_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls not patched here reach the real bindings, which raise NVMLError without a library."""
    shutdowns = []

    def not_supported(handle: object) -> None:
        raise pynvml.NVMLError_NotSupported(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: shutdowns.append(True))
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "580.159.04")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerManagementLimit", not_supported)
    snapshot = nvml.nvml_snapshot()
    assert snapshot == {"driver": "580.159.04", "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}
    assert shutdowns == [True]
    assert report_from_nvml_snapshot(snapshot).gpus == (
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "vendor": "nvidia", "sources": ("nvml",)},
    )


@pytest.mark.parametrize("name, widths, gens", [
    # (max, current) link width and generation, as each file says them
    ("xml_a10g_drv515_v11.xml", (16, 8), (4, 1)),
    ("xml_tesla-t4_drv515_v11.xml", (16, 8), (3, 3)),
    ("xml_quadro-p2000_drv525_v12.xml", (16, 8), (3, 1)),
])
def test_xml_current_pcie_link_is_read_from_current(name: str, widths: tuple, gens: tuple) -> None:
    """Cards running at a narrower or slower link than they can: current is not max (a slot wired x8,
    or a link that trains down at idle), which is what the degraded-link advice reads."""
    gpu = _public(name).gpus[0]
    assert (gpu["pcie_width_max"], gpu["pcie_width_current"]) == widths
    assert (gpu["pcie_gen_max"], gpu["pcie_gen_current"]) == gens
# -- variants seen in the wild (each failed before its fix) ----------------------------------------


def test_driver_610_power_limits_under_gpu_ceiling_power_limit() -> None:
    """Driver 610 moved Current/Default Power Limit under "GPU Power Readings > GPU Ceiling Power Limit"."""
    for prefix in ("idle", "load"):
        section = _capture("capture_rtx2080super_windows_drv610.62.txt")[f"{prefix} :: query (-q)"]
        gpu = parse_smi_q_text(section).gpus[0]
        assert (gpu["power_limit_w"], gpu["power_default_w"]) == (250.0, 250.0)
    # the older flat layout still reads the same keys
    l40s = parse_smi_q_text(_capture("capture_l40s_drv595.80.txt")[Q_SECTION]).gpus[0]
    assert (l40s["power_limit_w"], l40s["power_default_w"]) == (350.0, 350.0)


def test_vgpu_host_table_without_cuda_version_or_persistence_column() -> None:
    report = _public("smi-vgpu-table_host_rtx-unlocked_drv525.147.01.txt")
    assert (report.driver_version, report.cuda_version) == ("525.147.01", None)
    assert [(g["index"], g["pci_bus_id"]) for g in report.gpus] == [(0, "0000:01:00.0")]
    assert "name" not in report.gpus[0]  # "NVIDIA GeForce RTX 408..." is cut short: unknown
    assert "persistence_mode" not in report.gpus[0]


def test_vgpu_guest_placeholder_vbios_is_unknown() -> None:
    gpu = _public("vgpu-guest-smi-q_rtxa6000-24q_drv535.183.06.txt").gpus[0]
    assert "vbios" not in gpu
    assert (gpu["name"], gpu["pci_device_id"], gpu["memory_bytes"]) == ("NVIDIA RTXA6000-24Q", "2230", 24576 * MIB)
    assert {"power_limit_w", "power_default_w"}.isdisjoint(gpu)
    # a real VBIOS version is still kept
    assert _public("smi-q_gtx680_drv470.256.02.txt").gpus[0]["vbios"].startswith("80.04.")


@pytest.mark.parametrize("name", ["xml_rtx3080_drv595_v13.xml", "xml_tesla-t4_drv515_v11.xml"])
def test_xml_mig_devices_none_on_gpu_without_mig_is_unknown(name: str) -> None:
    """<mig_devices>None</mig_devices> with MIG N/A: unknown, as the -q text parser says, not 0."""
    gpu = _public(name).gpus[0]
    assert "mig_enabled" not in gpu and "mig_devices" not in gpu
    # and where MIG is on, the devices are still counted
    assert _public("xml_a100-sxm4-80gb_mig_drv535_v12.xml").gpus[0]["mig_devices"] == 4


def test_arm_tables_grace_hopper_and_jetson() -> None:
    """nvidia-smi tables of a GH200 (aarch64 server) and a Jetson AGX Orin, whose integrated GPU has no PCI
    bus id ("N/A") and no memory figure: the Jetson's GPU is kept, with what the table does say."""
    gh200 = _public("smi-table_gh200-480gb_drv570.124.06.txt")
    assert (gh200.driver_version, gh200.cuda_version) == ("570.124.06", "12.8")
    (gpu,) = gh200.gpus
    assert (gpu["name"], gpu["pci_bus_id"], gpu["power_limit_w"], gpu["memory_bytes"]) == (
        "NVIDIA GH200 480GB", "0000:dd:00.0", 700.0, 97871 * 1024 * 1024)
    jetson = _public("smi-table_jetson-agx-orin-nvgpu_drv540.4.0.txt")
    assert (jetson.driver_version, jetson.cuda_version) == ("540.4.0", "12.6")
    assert jetson.gpus == ({"index": 0, "name": "Orin (nvgpu)", "vendor": "nvidia", "sources": ("nvidia-smi",)},)
