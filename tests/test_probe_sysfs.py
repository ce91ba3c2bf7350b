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


def unpack_ttar(text, dest):
    """Prometheus procfs' ttar format: Path:, then Lines: N and N lines, or SymlinkTo:, then Mode:."""
    lines = iter(text.splitlines())
    for line in lines:
        if not line.startswith("Path: "):
            continue
        path = dest / line[len("Path: "):].removeprefix("fixtures/")
        path.parent.mkdir(parents=True, exist_ok=True)
        kind, _, value = next(lines).partition(": ")
        if kind == "SymlinkTo":
            path.symlink_to(value)
        elif kind == "Lines":
            path.write_text("".join(next(lines) + "\n" for _ in range(int(value))))
        elif kind == "Directory":
            path.mkdir(exist_ok=True)


@pytest.fixture(scope="module")
def vega_desktop(tmp_path_factory):
    """/sys/class/drm of an amdgpu Vega 10 + Intel iGPU desktop, laid out as /sys/bus/pci/devices."""
    staging = tmp_path_factory.mktemp("ttar")
    unpack_ttar((SNAPSHOTS / "procfs-ttar-excerpt_sys-class-drm_amdgpu-vega10_card0-card1.ttar").read_text(), staging)
    root = tmp_path_factory.mktemp("vega")
    for card in sorted((staging / "sys" / "class" / "drm").glob("card?")):
        uevent = dict(line.split("=", 1) for line in (card / "device" / "uevent").read_text().split())
        (root / "sys" / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
        (card / "device").rename(root / "sys" / "bus" / "pci" / "devices" / uevent["PCI_SLOT_NAME"])
    return probe_host(Host.bundle(root))


def test_amdgpu_sysfs_gives_vram_link_and_driver(vega_desktop):
    amd = next(g for g in vega_desktop.gpus if g.vendor == "amd")
    assert (amd.pci_bus_id, amd.pci_device_id, amd.pci_subsystem_id) == ("0000:09:00.0", "687f", "1043:04c4")
    assert amd.kernel_driver == "amdgpu"
    assert amd.memory_bytes == 8573157376  # mem_info_vram_total
    assert (amd.pcie_gen_max, amd.pcie_width_max, amd.pcie_gen_current, amd.pcie_width_current) == (3, 16, 3, 16)
    assert amd.numa_node is None  # -1: no NUMA affinity


def test_intel_igpu_is_integrated(vega_desktop):
    intel = next(g for g in vega_desktop.gpus if g.vendor == "intel")
    assert (intel.pci_bus_id, intel.pci_device_id, intel.kernel_driver) == ("0000:00:02.0", "5917", "i915")
    assert intel.integrated is True
