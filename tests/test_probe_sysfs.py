"""The PCI reader on real sysfs snapshots from other machines (ghw's captures), read as bundles."""

import tarfile

import pytest

from conftest import PUBLIC
from dlsetup.probe import Host, probe_host

SNAPSHOTS = PUBLIC / "pci"


def extract(name, dest):
    with tarfile.open(SNAPSHOTS / name) as tar:
        tar.extractall(dest, filter="tar")
    return dest


@pytest.fixture(scope="module")
def p100_vm(tmp_path_factory):
    root = extract("ghw-sysfs-snapshot_vm_tesla-p100_virtio-gpu.tar.gz", tmp_path_factory.mktemp("p100"))
    return probe_host(Host.bundle(root))


@pytest.fixture(scope="module")
def radeon_desktop(tmp_path_factory):
    root = extract("ghw-sysfs-snapshot_ryzen5-1600_radeon-hd6670.tar.gz", tmp_path_factory.mktemp("hd6670"))
    return probe_host(Host.bundle(root))


def test_p100_found_on_pci_and_named_from_table(p100_vm):
    # the virtio-gpu (1af4:1050) is display class too, but not a compute vendor
    (gpu,) = p100_vm.gpus
    assert (gpu.vendor, gpu.pci_bus_id, gpu.pci_device_id, gpu.pci_class) == ("nvidia", "0000:06:00.0", "15f8", "0302")
    assert gpu.kernel_driver == "nvidia"
    assert gpu.name and "P100" in gpu.name
    assert gpu.compute_capability == "6.0" and gpu.architecture == "Pascal"
    assert gpu.sources == ("pci", "table")


def test_p100_vm_cpu_and_memory_from_snapshot(p100_vm):
    assert p100_vm.cpu.logical_cpus and p100_vm.memory.total_bytes
    assert p100_vm.nvidia.nvml_version is None  # no NVML capture in a sysfs snapshot


def test_radeon_without_table_entry_is_still_found(radeon_desktop):
    (gpu,) = radeon_desktop.gpus
    assert (gpu.vendor, gpu.pci_vendor_id, gpu.pci_device_id) == ("amd", "1002", "6758")
    assert gpu.pci_bus_id == "0000:0a:00.0"
    assert gpu.gfx_target is None  # a TeraScale card: no KFD node, no ROCm
