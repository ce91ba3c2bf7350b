"""AMD parsers against real rocm-smi, rocminfo and KFD captures (tests/conftest.py: PUBLIC)."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import PUBLIC
from dlsetup.model import GPU
from dlsetup.parsers.amd import (
    KFD_BANK_BYTES,
    gfx_from_version,
    kfd_bank_bytes,
    kfd_physical_gpus,
    parse_amd_smi_json,
    parse_kfd_node,
    parse_kfd_properties,
    parse_rocm_smi_json,
    parse_rocm_smi_text,
    parse_rocminfo,
)

AMD = PUBLIC / "amd"
GPU_FIELDS = {f.name for f in dataclasses.fields(GPU)}
MI300X_VRAM = 201310208 * 1024  # rocminfo's coarse-grained pool, KB
MI300X_UUIDS = ["GPU-8d1457e2c20f59d2", "GPU-b4fa34630e85d42a", "GPU-e8986800e182538a", "GPU-eff71edc82169115"]
MI300X_BUSES = ["0000:26:00.0", "0000:46:00.0", "0000:65:00.0", "0000:85:00.0"]


def _read(name: str) -> str:
    return (AMD / name).read_text()


def _kfd_tree(path) -> list[tuple[int, dict]]:
    nodes = path / "nodes" if (path / "nodes").is_dir() else path
    found = []
    for node in nodes.iterdir():
        props = parse_kfd_node((node / "properties").read_text())
        banks = sorted((node / "mem_banks").glob("*/properties"))
        props[KFD_BANK_BYTES] = kfd_bank_bytes(b.read_text() for b in banks)
        found.append((int(node.name), props))
    return found


def _gpus(path) -> tuple[dict, ...]:
    if path.is_dir():
        return tuple(kfd_physical_gpus(_kfd_tree(path)))
    text = path.read_text()
    if path.name.startswith("amd-smi"):
        return parse_amd_smi_json(text).gpus
    if path.name.startswith("kfd-"):
        gpu = parse_kfd_properties(text)
        return (gpu,) if gpu else ()
    if path.name.startswith("rocminfo"):
        return parse_rocminfo(text)
    parse = parse_rocm_smi_json if path.suffix == ".json" else parse_rocm_smi_text
    return parse(text).gpus


@pytest.mark.parametrize("path", sorted(AMD.iterdir()), ids=lambda p: p.name)
def test_every_capture_parses_into_gpu_fields(path):
    gpus = _gpus(path)
    if "cpu-node" in path.name:
        assert gpus == ()
        return
    if "amd-smi-metric" in path.name:  # metrics only: no device id (test_amd_smi_metric_power_is_not_a_power_limit)
        assert [g.get("pci_device_id") for g in gpus] == [None]
        return
    assert gpus
    for gpu in gpus:
        assert set(gpu) <= GPU_FIELDS
        assert gpu["vendor"] == "amd"
        assert gpu["pci_device_id"] in {"738c", "66a1", "73df", "74a1", "740f", "740c", "6860", "6861", "74a2",
                                        "73bf", "73a3"}
        assert len(gpu["sources"]) == 1


def test_mi300x_rocminfo_skips_cpu_agents():
    gpus = parse_rocminfo(_read("rocminfo_4x-mi300x_2x-epyc9474f.txt"))
    assert [g["uuid"] for g in gpus] == MI300X_UUIDS
    assert [g["pci_bus_id"] for g in gpus] == MI300X_BUSES
    assert {(g["gfx_target"], g["name"], g["memory_bytes"], g["pci_device_id"]) for g in gpus} == {
        ("gfx942", "AMD Instinct MI300X", MI300X_VRAM, "74a1")
    }


def test_mi300x_rocm_smi_showall_agrees_with_rocminfo():
    report = parse_rocm_smi_text(_read("rocm-smi_showall_4x-mi300x.txt"))
    assert report.driver_version == "6.7.0"
    assert [g["index"] for g in report.gpus] == [0, 1, 2, 3]
    assert [g["uuid"] for g in report.gpus] == MI300X_UUIDS
    assert [g["pci_bus_id"] for g in report.gpus] == MI300X_BUSES
    first = report.gpus[0]
    assert (first["name"], first["vbios"], first["serial"], first["power_limit_w"]) == (
        "AMD Instinct MI300X OAM", "113-MI3SRIOV-001", "692347006052", 750.0
    )  # fmt: skip


def test_mi300x_rocm_smi_concise():
    report = parse_rocm_smi_text(_read("rocm-smi_concise_4x-mi300x.txt"))
    assert report.driver_version is None
    assert [(g["index"], g["pci_device_id"], g["name"], g["power_limit_w"]) for g in report.gpus] == [
        (i, "74a1", "AMD Instinct MI300X", 750.0) for i in range(4)
    ]


@pytest.mark.parametrize(
    ("name", "count", "driver", "buses", "pcie_gen"),
    [
        ("rocm-smi_4x-mi100_rocm6.0.2.json", 4, "6.3.6",
         ["0000:83:00.0", "0000:a3:00.0", "0000:c3:00.0", "0000:e3:00.0"], 4),
        ("rocm-smi_6x-mi100_rocm5.7.1.json", 6, "6.2.4",
         ["0000:1e:00.0", "0000:22:00.0", "0000:3f:00.0", "0000:43:00.0", "0000:46:00.0", "0000:49:00.0"], 3),
    ],
)  # fmt: skip
def test_mi100_across_rocm_versions(name, count, driver, buses, pcie_gen):
    report = parse_rocm_smi_json(_read(name))
    assert report.driver_version == driver and len(report.gpus) == count
    assert [g["pci_bus_id"] for g in report.gpus] == buses
    for index, gpu in enumerate(report.gpus):
        assert gpu["index"] == index and gpu["pci_device_id"] == "738c"  # "Device ID" (6.0) and "GPU ID" (5.7)
        assert gpu["name"] == "Arcturus GL-XL [Instinct MI100]"
        assert (gpu["memory_bytes"], gpu["power_limit_w"]) == (34342961152, 290.0)
        assert (gpu["pcie_gen_current"], gpu["pcie_width_current"]) == (pcie_gen, 16)


def test_mi100_unique_id_and_placeholder_serial():
    new = parse_rocm_smi_json(_read("rocm-smi_4x-mi100_rocm6.0.2.json")).gpus[0]
    old = parse_rocm_smi_json(_read("rocm-smi_6x-mi100_rocm5.7.1.json")).gpus[0]
    assert new["uuid"] == "GPU-79ccd55167a2124a" and "serial" not in new  # "N/A"
    assert "uuid" not in old and "serial" not in old  # "N/A" and "0"
    assert (new["numa_node"], old["numa_node"]) == (1, 0)


def test_rx6700xt_both_rocm_versions():
    old = parse_rocm_smi_json(_read("rocm-smi_rx6700xt_rocm4.3.json")).gpus
    new = parse_rocm_smi_json(_read("rocm-smi_rx6700xt_rocm6.1.2.json")).gpus
    assert len(old) == len(new) == 1
    old, new = old[0], new[0]
    for gpu in (old, new):
        assert (gpu["pci_bus_id"], gpu["pci_device_id"], gpu["memory_bytes"]) == ("0000:07:00.0", "73df", 12868124672)
    assert "name" not in old and "gfx_target" not in old  # 4.3 prints "0x1002" as the card series
    assert (new["name"], new["gfx_target"]) == ("Navi 22 [Radeon RX 6700/6700 XT / 6800M]", "gfx1031")
    assert new["numa_node"] == 0  # "Numa Affinity" -1 is not read as a node


def test_mi50_vega20():
    report = parse_rocm_smi_json(_read("rocm-smi_mi50-vega20_2021.json"))
    (gpu,) = report.gpus
    assert report.driver_version == "5.9.17"
    assert (gpu["name"], gpu["pci_device_id"], gpu["pci_bus_id"]) == \
        ("Radeon Instinct MI50 32GB", "66a1", "0000:63:00.0")
    assert (gpu["memory_bytes"], gpu["serial"], gpu["power_limit_w"]) == (34342961152, "692024000810", 225.0)
    assert gpu["uuid"] == "GPU-02f048617326b1ea"  # zero-padded to 16 digits as ROCr prints it


def test_kfd_mi210():
    gpu = parse_kfd_properties(_read("kfd-topology-node-properties_mi210_gfx90a.txt"))
    assert gpu == {
        "vendor": "amd",
        "pci_bus_id": "0000:63:00.0",  # location_id 25344 = 0x6300
        "pci_vendor_id": "1002",
        "pci_device_id": "740f",
        "gfx_target": "gfx90a",
        "uuid": f"GPU-{1801979520617338022:016x}",
        "sources": ("kfd",),
    }


def test_kfd_mi300x_cpx_partition():
    gpu = parse_kfd_properties(_read("kfd-topology-node-properties_mi300x-cpx-partition_gfx942.txt"))
    assert (gpu["gfx_target"], gpu["pci_device_id"], gpu["pci_bus_id"]) == ("gfx942", "74a1", "0000:05:00.0")
    assert "memory_bytes" not in gpu  # local_mem_size 0: unknown here


def test_kfd_cpu_node_is_not_a_gpu():
    assert parse_kfd_properties(_read("kfd-topology-node-properties_cpu-node_epyc-96c.txt")) == {}


@pytest.mark.parametrize(
    ("version", "target"),
    [(90010, "gfx90a"), (90402, "gfx942"), (110000, "gfx1100"), (100301, "gfx1031"), (90008, "gfx908"),
     (90006, "gfx906")],
)
def test_gfx_from_version(version, target):
    assert gfx_from_version(version) == target


@pytest.mark.parametrize("text", ["", "{", "[]", '{"card0": "x", "cardX": {}, "system": 3}', "GPU[x] : y\n\x00"])
def test_garbage_never_raises(text):
    assert parse_rocm_smi_json(text).gpus == ()
    assert parse_rocm_smi_text(text).gpus == ()
    assert parse_rocminfo(text) == ()
    assert parse_kfd_properties(text) == {}


def test_odd_values_are_dropped():
    text = '{"card1": {"GPU ID": "zz", "PCI Bus": "bogus", "VRAM Total Memory (B)": "N/A", "pcie clock level": "?"}}'
    # the only card, whatever its DRM card number, is device 0
    expected = {"vendor": "amd", "index": 0, "pci_vendor_id": "1002", "sources": ("rocm-smi",)}
    assert parse_rocm_smi_json(text).gpus == (expected,)


# -- variants seen in the wild (each failed before its fix) ----------------------------------------


def test_kfd_node_of_an_older_kernel_without_gfx_target_version_is_a_gpu():
    gpu = parse_kfd_properties(_read("kfd-topology-node-properties_mi25-vega10_old-kernel-no-gfx-target.txt"))
    assert gpu == {
        "vendor": "amd", "pci_bus_id": "0000:19:00.0", "pci_vendor_id": "1002", "pci_device_id": "6860",
        "memory_bytes": 17163091968, "uuid": "GPU-c34ec50444dd0a6c", "sources": ("kfd",),
    }
    # and a CPU node of the same kind of file stays no GPU
    assert parse_kfd_properties(_read("kfd-topology-node-properties_cpu-node_epyc-96c.txt")) == {}


def test_mi308x_cpx_topology_is_eight_cards_of_four_partitions():
    gpus = kfd_physical_gpus(_kfd_tree(AMD / "kfd-topology_8x-mi308x-cpx"))
    assert len(gpus) == 8
    assert [g["pci_bus_id"] for g in gpus] == [
        "0000:0a:00.0", "0000:80:00.0", "0000:a4:00.0", "0000:c8:00.0",
        "0001:0b:00.0", "0001:81:00.0", "0001:a5:00.0", "0001:c9:00.0",
    ]
    assert {(g["pci_device_id"], g["gfx_target"], g["compute_partition"], len(g["partitions"])) for g in gpus} == {
        ("74a2", "gfx942", "CPX", 4)
    }
    assert len({g["uuid"] for g in gpus}) == 8
    first = gpus[0]["partitions"]
    assert [p["pci_bus_id"] for p in first] == ["0000:0a:00.0", "0000:0a:00.1", "0000:0a:00.2", "0000:0a:00.3"]
    assert [p["render_minor"] for p in first] == [128, 129, 130, 131]
    assert {p["compute_units"] for g in gpus for p in g["partitions"]} == {20}
    # each partition's frame-buffer bank holds a quarter of the card's 192 GiB (16 MiB reserved on one)
    assert {p["memory_bytes"] for g in gpus for p in g["partitions"]} == {48 << 30, (48 << 30) - (16 << 20)}
    assert {g["memory_bytes"] for g in gpus} <= {192 << 30, (192 << 30) - (16 << 20)}
    # partitions keep the framework's device order across cards
    assert [p["index"] for g in gpus for p in g["partitions"]] == list(range(32))


def test_mi300x_cpx_partition_node_reads_as_one_card():
    # one node alone cannot show a split: no mode is claimed
    node = parse_kfd_node(_read("kfd-topology-node-properties_mi300x-cpx-partition_gfx942.txt"))
    gpu = kfd_physical_gpus([(2, node)])
    assert gpu[0]["pci_bus_id"] == "0000:05:00.0" and "compute_partition" not in gpu[0]
    # a single whole GPU with one XCC is not "partitioned"
    whole = kfd_physical_gpus([(2, parse_kfd_node(_read("kfd-topology-node-properties_mi210_gfx90a.txt")))])
    assert "partitions" not in whole[0] and "compute_partition" not in whole[0]


def test_rocm_smi_mi250_740c():
    report = parse_rocm_smi_json(_read("rocm-smi-a-json_mi250-740c_rocm5.json"))
    assert report.driver_version == "6.2.4"
    (gpu,) = report.gpus
    assert (gpu["index"], gpu["pci_device_id"], gpu["pci_bus_id"], gpu["power_limit_w"]) == (
        0, "740c", "0000:2f:00.0", 560.0)


def test_amd_smi_static_json_mi210():
    report = parse_amd_smi_json(_read("amd-smi-static-json_mi210_gfx90a.json"))
    assert report.driver_version == "6.14.0-24-generic"  # in-tree amdgpu: the kernel release
    (gpu,) = report.gpus
    assert gpu == {
        "vendor": "amd", "index": 0, "pci_vendor_id": "1002", "pci_device_id": "740f", "name": "AMD Instinct MI210",
        "gfx_target": "gfx90a", "memory_bytes": 65520 << 20, "power_limit_w": 300.0, "pcie_gen_max": 4,
        "pcie_width_max": 16, "numa_node": 1, "sources": ("amd-smi",),
    }
    # the same output behind amd-smi's permission warnings, and the ROCm 6.0-6.3 list layout
    text = _read("amd-smi-static-json_mi210_gfx90a.json")
    assert parse_amd_smi_json("Permission denied: /dev/kfd\n" + text).gpus == report.gpus
    import json

    listed = json.dumps(json.loads(text)["gpu_data"])
    assert parse_amd_smi_json(listed).gpus == report.gpus


def test_rocm_smi_partition_modes():
    concise = parse_rocm_smi_text(_read("rocm-smi_concise_4x-mi300x.txt")).gpus
    assert {(g["memory_partition"], g["compute_partition"]) for g in concise} == {("NPS1", "SPX")}
    showall = parse_rocm_smi_text(_read("rocm-smi_showall_4x-mi300x.txt")).gpus
    assert {g["compute_partition"] for g in showall} == {"SPX"}


def test_rocm_smi_concise_table_of_rocm_6_1_with_node_and_ids_columns():
    gpus = parse_rocm_smi_text(_read("rocm-smi_concise-node-ids_rx6800-rx6950_rocm6.1.txt")).gpus
    rows = [(g["index"], g["pci_device_id"], g["power_limit_w"]) for g in gpus]
    assert rows == [(0, "73bf", 150.0), (1, "73a3", 213.0)]
    assert all("compute_partition" not in g for g in gpus)  # "N/A, N/A, 0": not partitioned


def test_rocm_smi_cards_keyed_out_of_order_are_indexed_by_card_number():
    """A real 4x MI100 rocm-smi --json (ROCm 4/5 era) whose keys come card0, card3, card2, card1: the device
    index is the card's rank, in index order, each card keeping its own bus id and unique id."""
    report = parse_rocm_smi_json((AMD / "rocm-smi-json_4x-mi100_card-keys-unordered.json").read_text())
    assert [(g["index"], g["pci_bus_id"], g["uuid"]) for g in report.gpus] == [
        (0, "0000:63:00.0", "GPU-7ef570db1b346018"),
        (1, "0000:43:00.0", "GPU-6be2ee3b2b314cfc"),
        (2, "0000:26:00.0", "GPU-a8a0e90b7ea1c0ad"),
        (3, "0000:03:00.0", "GPU-2f94151ef4b53e39"),
    ]
    assert {g["pci_device_id"] for g in report.gpus} == {"738c"}


def test_amd_smi_metric_power_is_not_a_power_limit():
    """``amd-smi metric -p --json`` (AMD's own example): the socket power it reports is the draw, not a
    limit, and nothing else about the GPU is in it."""
    (gpu,) = parse_amd_smi_json((AMD / "amd-smi-metric-p-json_rocm6.1_changelog.json").read_text()).gpus
    assert gpu == {"vendor": "amd", "index": 0, "pci_vendor_id": "1002", "sources": ("amd-smi",)}
