"""The GPU spec table: every row sourced and well-formed, and every GPU in the real captures found."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import PUBLIC
from dlsetup import gpudb
from dlsetup.parsers.pci import lookup_pci_ids

PCI_IDS = next(
    (p for p in (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids")) if p.is_file()), None
)
PRECISIONS = {"fp32", "tf32", "fp16", "bf16", "fp8"}


#: A vGPU guest names its profile ("GRID P4-1Q": 1 GB of a Tesla P4), not a product: its PCI id names the card.
_VGPU_PROFILE = re.compile(r"-\d+[ABCQ]$")


def _captured_gpus() -> list[tuple[str, str, str]]:
    """(file, product name, pci device id) of every GPU in the public nvidia-smi XML and -q captures."""
    found = []
    for path in sorted((PUBLIC / "nvidia").glob("xml_*.xml")):
        text = path.read_text()
        for gpu in re.findall(r"<gpu id=.*?</gpu>", text, re.S):
            name = re.search(r"<product_name>([^<]*)<", gpu).group(1)
            device = re.search(r"<pci_device_id>([0-9A-Fa-f]{4})10DE<", gpu)
            found.append((path.name, name, device.group(1).lower() if device else ""))
    for path in sorted((PUBLIC / "nvidia").glob("smi-q_*.txt")):
        text = path.read_text()
        names = re.findall(r"^\s*Product Name\s*:\s*(.+?)\s*$", text, re.M)
        devices = re.findall(r"^\s*Device Id\s*:\s*0x([0-9A-F]{4})10DE\s*$", text, re.M)
        found.extend((path.name, n, d.lower()) for n, d in zip(names, devices, strict=False))
    return found


def test_every_row_is_sourced_and_well_formed() -> None:
    specs = gpudb.all_specs()
    assert len(specs) >= 50
    assert len({s.key for s in specs}) == len(specs)
    for spec in specs:
        assert spec.source.startswith("https://"), spec.key
        assert spec.vendor in {"nvidia", "amd"}, spec.key
        assert spec.pci_device_ids and all(re.fullmatch(r"[0-9a-f]{4}", d) for d in spec.pci_device_ids), (
            spec.key
        )
        assert set(spec.peak_tflops) <= PRECISIONS, spec.key
        assert all(v > 0 for v in spec.peak_tflops.values()), spec.key
        if spec.vendor == "nvidia":
            assert gpudb.architecture_for_cc(spec.compute_capability) == spec.architecture, spec.key
        elif spec.gfx_target:
            assert gpudb.architecture_for_gfx(spec.gfx_target) == spec.architecture, spec.key


def test_no_pci_id_is_listed_twice() -> None:
    pairs = [(s.vendor, d) for s in gpudb.all_specs() for d in s.pci_device_ids]
    assert len(pairs) == len(set(pairs))


def test_h100_by_pci_id() -> None:
    spec = gpudb.by_pci_id("10de", "2330")
    assert spec is not None and spec.name == "NVIDIA H100 80GB HBM3"
    assert spec.compute_capability == "9.0" and spec.architecture == "Hopper"
    assert spec.peak_tflops["bf16"] == 989.5
    assert gpudb.by_pci_id("10DE", "2330") is spec
    assert gpudb.by_pci_id("10de", "ffff") is None
    assert gpudb.by_pci_id("1002", "2330") is None


def test_datasheet_peaks_are_dense() -> None:
    """Sparse datasheet figures are halved; a figure the vendors disagree on is left out, not guessed."""
    assert dict(gpudb.by_pci_id("10de", "2331").peak_tflops) == {
        "fp32": 51.0, "tf32": 378.0, "fp16": 756.5, "bf16": 756.5, "fp8": 1513.0}
    b200 = gpudb.by_pci_id("10de", "2901")
    assert b200 is not None and dict(b200.peak_tflops) == {"fp16": 2250.0, "bf16": 2250.0, "fp8": 4500.0}
    a10g = gpudb.by_name("NVIDIA A10G")
    assert a10g is not None and a10g.memory_bandwidth_gbps is None and a10g.tdp_w is None
    # L4 and L40 datasheets print tensor figures with sparsity (L4 FP8 485*, L40 BF16 362.1*)
    assert dict(gpudb.by_name("NVIDIA L4").peak_tflops) == {
        "fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0, "fp8": 242.5}
    assert dict(gpudb.by_name("NVIDIA L40").peak_tflops) == {
        "fp32": 90.5, "tf32": 90.5, "fp16": 181.05, "bf16": 181.05, "fp8": 362.0}

def test_every_captured_product_name_resolves() -> None:
    captured = _captured_gpus()
    assert len(captured) >= 40
    for source, name, _ in captured:
        if name != "Graphics Device" and not _VGPU_PROFILE.search(name):
            assert gpudb.by_name(name) is not None, (source, name)


def test_captured_pci_ids_name_the_same_product() -> None:
    checked = 0
    for source, name, device in _captured_gpus():
        if not device:
            continue
        spec = gpudb.by_pci_id("10de", device)
        assert spec is not None, (source, device)
        if name != "Graphics Device" and not _VGPU_PROFILE.search(name):
            assert spec is gpudb.by_name(name), (source, name, device)
        checked += 1
    assert checked >= 30
    # The driver-too-old capture: the table still names the card from its PCI id.
    assert gpudb.by_pci_id("10de", "2184").name == "NVIDIA GeForce GTX 1660"


def test_h100_bundle_gpu_resolves(fixtures_dir: Path) -> None:
    bundle = fixtures_dir / "bundles" / "h100-ubuntu2404" / "sys" / "bus" / "pci" / "devices" / "0000:00:06.0"
    vendor = (bundle / "vendor").read_text().strip().removeprefix("0x")
    device = (bundle / "device").read_text().strip().removeprefix("0x")
    assert gpudb.by_pci_id(vendor, device) is gpudb.by_name("NVIDIA H100 80GB HBM3")


@pytest.mark.parametrize(
    "name, key",
    [
        ("nvidia h100 80gb hbm3", "h100-sxm5-80gb"),
        ("  NVIDIA   A100-SXM4-80GB ", "a100-sxm4-80gb"),
        ("V100-SXM2-16GB", "v100-sxm2-16gb"),
        ("Tesla T4", "t4"),
        ("T4", "t4"),
        ("AMD Instinct MI300X", "mi300x"),
    ],
)
def test_by_name_is_tolerant(name: str, key: str) -> None:
    assert gpudb.by_name(name).key == key


def test_by_name_unknown() -> None:
    assert gpudb.by_name("Graphics Device") is None
    assert gpudb.by_name("") is None


@pytest.mark.parametrize(
    "cc, arch",
    [
        ("3.0", "Kepler"),
        ("5.2", "Maxwell"),
        ("6.1", "Pascal"),
        ("7.0", "Volta"),
        ("7.2", "Volta"),
        ("7.5", "Turing"),
        ("8.0", "Ampere"),
        ("8.6", "Ampere"),
        ("8.9", "Ada Lovelace"),
        ("9.0", "Hopper"),
        ("10.0", "Blackwell"),
        ("10.3", "Blackwell"),
        ("12.0", "Blackwell"),
        ("12.1", "Blackwell"),
        ("10", "Blackwell"),
        ("3.7", "Kepler"),
        ("10.7", "Rubin"),
        ("11.0", "Thor"),
        ("8.8", None),
        ("10.1", None),
        ("9.x", None),
        ("2.1", None),
        ("", None),
        ("nonsense", None),
    ],
)
def test_architecture_for_cc(cc: str, arch: str | None) -> None:
    assert gpudb.architecture_for_cc(cc) == arch


@pytest.mark.parametrize(
    "gfx, arch",
    [
        ("gfx906", "GCN5"),
        ("gfx908", "CDNA"),
        ("gfx90a", "CDNA2"),
        ("gfx942", "CDNA3"),
        ("gfx942:sramecc+:xnack-", "CDNA3"),
        ("gfx1031", "RDNA2"),
        ("gfx1100", "RDNA3"),
        ("GFX1103", "RDNA3"),
        ("gfx1201", "RDNA4"),
        ("gfx950", "CDNA4"),
        ("gfx1151", "RDNA3.5"),
        ("gfx000", None),
    ],
)
def test_architecture_for_gfx(gfx: str, arch: str | None) -> None:
    assert gpudb.architecture_for_gfx(gfx) == arch


@pytest.mark.skipif(PCI_IDS is None, reason="no pci.ids installed (apt install pciutils or hwdata)")
def test_table_ids_agree_with_pci_ids_database() -> None:
    text = PCI_IDS.read_text(encoding="utf-8", errors="replace")
    for device, model in (("2330", "H100"), ("1db1", "V100"), ("20b2", "A100"), ("2204", "RTX 3090")):
        assert model in lookup_pci_ids(text, "10de", device)[1]
        assert model.replace("RTX ", "") in gpudb.by_pci_id("10de", device).name
    assert "MI100" in lookup_pci_ids(text, "1002", "738c")[1]
    assert gpudb.by_pci_id("1002", "738c").key == "mi100"


def test_architectures_come_from_the_compat_table(monkeypatch) -> None:
    """gpudb keeps no map of its own: a row changed in nvidia.toml changes the answer."""
    rows = gpudb.cc_architectures()
    assert ((9, 0), (9, 0), "Hopper") in rows
    monkeypatch.setattr(gpudb, "cc_architectures", lambda: (((9, 0), (9, 0), "Renamed"),))
    assert gpudb.architecture_for_cc("9.0") == "Renamed"
    assert gpudb.architecture_for_cc("8.0") is None


def test_nvml_architecture_names_are_those_of_the_compat_table() -> None:
    """NVML's architecture numbers name no compute capability, but the names they give a GPU must be the
    table's: the planner looks an architecture up by its name."""
    from dlsetup.parsers.nvidia import NVML_ARCHITECTURES

    assert set(NVML_ARCHITECTURES.values()) <= {name for _, _, name in gpudb.cc_architectures()}


@pytest.mark.parametrize(
    "vendor, device, key, arch",
    [
        ("10de", "3182", "b300", "Blackwell"),
        ("10de", "31c3", "gb300", "Blackwell"),
        ("10de", "2d05", "rtx-5060", "Blackwell"),
        ("10de", "2f06", "rtx-5060", "Blackwell"),
        ("10de", "102d", "k80", "Kepler"),
        ("10de", "1c06", "gtx-1060-6gb", "Pascal"),
        ("1002", "740c", "mi250", "CDNA2"),
        ("1002", "7408", "mi250x", "CDNA2"),
        ("1002", "75a3", "mi355x", "CDNA4"),
        ("1002", "7551", "radeon-ai-pro-r9700", "RDNA4"),
        ("1002", "66af", "radeon-vii", "GCN5"),
        # pci.ids 2026.08.22: GH200 144G HBM3e, HGX GB200, RTX PRO 6000 Server, MI300X HF/VF (cloud guests)
        ("10de", "2348", "gh200-144gb", "Hopper"),
        ("10de", "2941", "gb200", "Blackwell"),
        ("10de", "2bb5", "rtx-pro-6000-blackwell-server", "Blackwell"),
        ("1002", "74b5", "mi300x", "CDNA3"),
        ("1002", "74a9", "mi300x", "CDNA3"),
        ("1002", "74a0", "mi300a", "CDNA3"),
        ("1002", "74b9", "mi325x", "CDNA3"),
        ("10de", "2329", "h20", "Hopper"),
        ("10de", "2324", "h800", "Hopper"),
        ("10de", "20f3", "a800-80gb", "Ampere"),
        ("10de", "26ba", "l20", "Ada Lovelace"),
        ("10de", "2786", "rtx-4070", "Ada Lovelace"),
        ("10de", "2484", "rtx-3070", "Ampere"),
    ],
)
def test_rows_added_for_current_and_old_hardware(vendor: str, device: str, key: str, arch: str) -> None:
    spec = gpudb.by_pci_id(vendor, device)
    assert spec is not None and (spec.key, spec.architecture) == (key, arch)


def test_blackwell_ultra_and_strix_halo_rows() -> None:
    assert gpudb.by_pci_id("10de", "3182").compute_capability == "10.3"
    assert gpudb.by_name("NVIDIA GB10").compute_capability == "12.1"
    strix = gpudb.by_pci_id("1002", "1586")
    assert strix.integrated and strix.gfx_target == "gfx1151" and strix.memory_bytes is None
    # 2d04 covers two memory sizes: the table leaves the size out rather than guess one
    assert gpudb.by_pci_id("10de", "2d04").memory_bytes is None
