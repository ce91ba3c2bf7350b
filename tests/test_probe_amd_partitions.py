"""AMD hosts read as bundles built from real captures: partitions, amd-smi preferred over rocm-smi, the GPU
table for PCI ids seen in the wild (tests/fixtures/public/SOURCES.tsv cites each file)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import PUBLIC
from dlsetup.advice import run_checks
from dlsetup.probe import probe_host
from dlsetup.probe.host import Host

AMD = PUBLIC / "amd"


def _bundle(tmp_path: Path, topology: Path | None = None, **commands: str) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    if topology is not None:
        shutil.copytree(topology, root / "sys" / "class" / "kfd" / "kfd" / "topology")
    (root / "cmd").mkdir()
    for name, fixture in commands.items():
        shutil.copy(AMD / fixture, root / "cmd" / f"{name.replace('_', '-')}.out")
    return root


def test_mi308x_cpx_bundle_reports_eight_physical_gpus_and_their_partitions(tmp_path):
    profile = probe_host(Host.bundle(_bundle(tmp_path, AMD / "kfd-topology_8x-mi308x-cpx")))
    assert len(profile.gpus) == 8 and len(profile.amd_gpus) == 8
    assert profile.visible_gpu_count == 32
    assert {(g.name, g.architecture, g.gfx_target, g.compute_partition, len(g.partitions)) for g in profile.gpus} == {
        ("AMD Instinct MI308X", "CDNA3", "gfx942", "CPX", 4)
    }
    assert [g.index for g in profile.gpus] == list(range(8))
    assert all(190 << 30 < g.memory_bytes <= 192 << 30 for g in profile.gpus)  # from the KFD memory banks
    assert [p.index for g in profile.gpus for p in g.partitions] == list(range(32))
    # the profile survives its JSON form
    from dlsetup.model import HostProfile

    assert HostProfile.from_dict(profile.to_dict()).gpus == profile.gpus
    # check says what a framework will see
    (finding,) = [f for f in run_checks(profile) if f.id == "gpu.partitions"]
    assert finding.severity == "info"
    assert "8 physical GPU(s) in CPX mode: frameworks see 32 device(s) (4 per card" in finding.message


def test_whole_gpus_give_no_partition_advice(tmp_path):
    profile = probe_host(Host.bundle(_bundle(tmp_path, rocm_smi_json="rocm-smi_4x-mi100_rocm6.0.2.json")))
    assert len(profile.gpus) == 4 and profile.visible_gpu_count == 4
    assert not [f for f in run_checks(profile) if f.id == "gpu.partitions"]


def test_mi250_740c_from_rocm_smi_gets_architecture_and_gfx_target(tmp_path):
    profile = probe_host(Host.bundle(_bundle(tmp_path, rocm_smi_json="rocm-smi-a-json_mi250-740c_rocm5.json")))
    (gpu,) = profile.gpus
    assert (gpu.pci_device_id, gpu.architecture, gpu.gfx_target) == ("740c", "CDNA2", "gfx90a")


def test_amd_smi_is_preferred_over_rocm_smi(tmp_path):
    root = _bundle(tmp_path, amd_smi_static_json="amd-smi-static-json_mi210_gfx90a.json",
                   rocm_smi_json="rocm-smi_4x-mi100_rocm6.0.2.json")
    profile = probe_host(Host.bundle(root))
    # rocm-smi's four MI100s are not read once amd-smi answered; the amd-smi MI210 carries no bus id
    # in this output and is placed only on a PCI device of its id (none in this bundle)
    assert [g for g in profile.gpus if g.pci_device_id == "738c"] == []
    (root / "cmd" / "amd-smi-static-json.out").write_text("amd-smi: command failed\n")
    assert [g.pci_device_id for g in probe_host(Host.bundle(root)).gpus] == ["738c"] * 4


def test_old_kernel_kfd_node_gets_its_gfx_target_from_the_table(tmp_path):
    root = tmp_path / "bundle"
    node = root / "sys" / "class" / "kfd" / "kfd" / "topology" / "nodes" / "1"
    node.mkdir(parents=True)
    shutil.copy(AMD / "kfd-topology-node-properties_mi25-vega10_old-kernel-no-gfx-target.txt", node / "properties")
    (gpu,) = probe_host(Host.bundle(root)).gpus
    assert (gpu.pci_bus_id, gpu.pci_device_id, gpu.gfx_target, gpu.architecture) == (
        "0000:19:00.0", "6860", "gfx900", "GCN5")
    assert gpu.memory_bytes == 17163091968 and gpu.partitions == () and gpu.compute_partition is None


def test_amd_smi_without_bus_id_lands_on_the_kfd_gpu_of_its_model(tmp_path):
    """amd-smi (ROCm 7, MI210) printed no bus.bdf: its facts join the MI210 the KFD topology placed."""
    root = _bundle(tmp_path, amd_smi_static_json="amd-smi-static-json_mi210_gfx90a.json")
    node = root / "sys" / "class" / "kfd" / "kfd" / "topology" / "nodes" / "2"
    node.mkdir(parents=True)
    shutil.copy(AMD / "kfd-topology-node-properties_mi210_gfx90a.txt", node / "properties")
    (gpu,) = probe_host(Host.bundle(root)).gpus
    assert (gpu.pci_bus_id, gpu.name, gpu.power_limit_w, gpu.numa_node, gpu.pcie_gen_max) == (
        "0000:63:00.0", "AMD Instinct MI210", 300.0, 1, 4)
    assert gpu.sources[:2] == ("kfd", "amd-smi")


def test_amd_smi_gpu_without_bus_id_joins_the_first_of_several_of_its_model(tmp_path):
    """amd-smi's GPU 0 (MI210, no bus.bdf) on a host whose KFD topology holds eight MI210s: device 0 is
    the first in PCI order; the other seven get nothing from it."""
    root = _bundle(tmp_path, AMD / "kfd-topology_8x-mi210-xgmi",
                   amd_smi_static_json="amd-smi-static-json_mi210_gfx90a.json")
    gpus = probe_host(Host.bundle(root)).gpus
    assert len(gpus) == 8 and {g.pci_device_id for g in gpus} == {"740f"}
    assert gpus[0].pci_bus_id == "0000:03:00.0" and "amd-smi" in gpus[0].sources and gpus[0].power_limit_w == 300.0
    assert not any("amd-smi" in g.sources for g in gpus[1:])
    assert [g.index for g in gpus] == list(range(8))
