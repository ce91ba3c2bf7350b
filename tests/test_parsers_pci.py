"""lspci -nnmmv listings and pci.ids look-ups, against real captures and the installed database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import PUBLIC
from dlsetup.parsers.pci import lookup_pci_ids, parse_lspci_nnmmv

PCI_IDS = next(
    (p for p in (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids")) if p.is_file()), None
)
needs_pci_ids = pytest.mark.skipif(
    PCI_IDS is None, reason="no pci.ids installed (apt install pciutils or hwdata)"
)


@pytest.fixture(scope="module")
def vmware() -> list[dict]:
    return parse_lspci_nnmmv((PUBLIC / "pci" / "lspci-nnmmv_vmware-vm_ubuntu20.10.txt").read_text())


def test_lspci_reads_every_record(vmware: list[dict]) -> None:
    assert len(vmware) == 47
    assert vmware[0] == {
        "pci_bus_id": "0000:00:00.0",
        "pci_vendor_id": "8086",
        "pci_device_id": "7190",
        "name": "440BX/ZX/DX - 82443BX/ZX/DX Host bridge",
        "pci_class": "0600",
        "pci_subsystem_id": "15ad:1976",
    }


def test_lspci_vga_device(vmware: list[dict]) -> None:
    (vga,) = [d for d in vmware if d.get("pci_class") == "0300"]
    assert vga["pci_bus_id"] == "0000:00:0f.0"
    assert (vga["pci_vendor_id"], vga["pci_device_id"], vga["name"]) == ("15ad", "0405", "SVGA II Adapter")
    assert "vendor" not in vga  # VMware is no GPU maker


def test_lspci_space_separated_record_with_domain(vmware: list[dict]) -> None:
    # The capture's last record is laid out with spaces and carries a domain ("ff:02:05.0").
    last = vmware[-1]
    assert last["pci_bus_id"] == "00ff:02:05.0"
    assert (last["pci_class"], last["pci_device_id"], last["pci_subsystem_id"]) == (
        "0106",
        "07e0",
        "15ad:07e0",
    )


def test_lspci_records_without_revision_or_subsystem(vmware: list[dict]) -> None:
    bridge = next(d for d in vmware if d["pci_bus_id"] == "0000:00:01.0")
    assert "pci_subsystem_id" not in bridge and bridge["pci_class"] == "0604"


@pytest.mark.parametrize(
    "text", ["", "junk", "Slot: zz\nVendor: x [10de]\nDevice: y [2330]\n", "Slot:\t00:01.0\nVendor: NVIDIA\n"]
)
def test_lspci_garbage(text: str) -> None:
    assert parse_lspci_nnmmv(text) == []


def test_lspci_driver_and_gpu_vendor() -> None:
    text = (
        "Slot:\t0000:00:06.0\nClass:\t3D controller [0302]\nVendor:\tNVIDIA Corporation [10de]\n"
        "Device:\tGH100 [2330]\nDriver:\tnvidia\n"
    )
    (gpu,) = parse_lspci_nnmmv(text)
    assert (gpu["vendor"], gpu["kernel_driver"], gpu["pci_class"]) == ("nvidia", "nvidia", "0302")


@needs_pci_ids
def test_lookup_real_database() -> None:
    text = PCI_IDS.read_text(encoding="utf-8", errors="replace")
    assert lookup_pci_ids(text, "10de", "1db1") == ("NVIDIA Corporation", "GV100GL [Tesla V100 SXM2 16GB]")
    assert lookup_pci_ids(text, "10DE", "1EB8") == ("NVIDIA Corporation", "TU104GL [Tesla T4]")
    assert lookup_pci_ids(text, "1002", "738c") == (
        "Advanced Micro Devices, Inc. [AMD/ATI]",
        "Arcturus GL-XL [Instinct MI100]",
    )
    assert lookup_pci_ids(text, "15ad", "0405")[1] == "SVGA II Adapter"
    # 2330 is also a device of other vendors: only NVIDIA's block is read for 10de.
    assert "H100" in lookup_pci_ids(text, "10de", "2330")[1]
    assert lookup_pci_ids(text, "10de", "fffe") == ("NVIDIA Corporation", None)
    assert lookup_pci_ids(text, "nope", "2330") == (None, None)


@needs_pci_ids
def test_lookup_stops_at_the_vendor_block() -> None:
    text = PCI_IDS.read_text(encoding="utf-8", errors="replace")
    start = time.perf_counter()
    for _ in range(20):
        lookup_pci_ids(text, "0014", "7a00")  # an early vendor: its block ends a few lines in
    assert time.perf_counter() - start < 0.2


def test_lookup_garbage() -> None:
    assert lookup_pci_ids("", "10de", "2330") == (None, None)
    assert lookup_pci_ids("10de  NVIDIA\n\t2330  GH100\n", "10de", "2330") == ("NVIDIA", "GH100")
    assert lookup_pci_ids("x10de  Not a vendor line\n", "10de", "2330") == (None, None)
