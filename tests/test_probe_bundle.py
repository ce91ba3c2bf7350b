"""``dlsetup probe`` on saved bundles: the real H100 capture, damaged copies of it, and the round trip."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import H100_BUNDLE, REPO
from dlsetup.model import HostProfile, json_schema
from dlsetup.probe import probe

EXPECTED = json.loads((H100_BUNDLE / "expected.json").read_text()) if H100_BUNDLE.is_dir() else {}


@pytest.fixture(scope="module")
def h100() -> HostProfile:
    return probe(bundle=H100_BUNDLE)


def run_cli(*args, check=False):
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, cwd=REPO,
                          check=check)


def test_os_matches_capture(h100):
    assert h100.os.id == EXPECTED["os"]["id"] == "ubuntu"
    assert h100.os.version_id == EXPECTED["os"]["version_id"] == "24.04"
    assert h100.os.codename == "noble"
    assert h100.os.kernel == "6.18.44-fc-v657-gpu"
    assert h100.os.arch.upper() == EXPECTED["cpu"]["arch"].replace("X86_64", "X86_64")
    assert h100.os.secure_boot == "unknown"  # no efivars and no mokutil in the capture
    assert h100.os.virtualization == "KVM"
    assert h100.hostname == "vm"


def test_cpu_matches_capture(h100):
    cpu = EXPECTED["cpu"]
    assert h100.cpu.model == cpu["model"]
    assert h100.cpu.logical_cpus == cpu["logical_cpus"] == 16
    assert h100.cpu.avx512f is cpu["avx512f"] is True
    assert h100.cpu.l3_cache_bytes == cpu["l3_cache_bytes"]
    assert h100.cpu.sockets == 1 and h100.cpu.numa_nodes == 1
    assert h100.cpu.avx2 is True and h100.cpu.amx is True
    assert "avx512_bf16" in h100.cpu.avx512_extensions


def test_memory_matches_capture(h100):
    assert h100.memory.total_bytes == 131981020 * 1024
    # psutil at capture time: the same MemTotal
    assert h100.memory.total_bytes == EXPECTED["memory"]["total_bytes"]


@pytest.mark.parametrize("field", ["name", "uuid", "memory_bytes", "compute_capability", "pcie_gen_max",
                                   "pcie_width_max", "power_limit_w", "cuda_cores", "memory_bus_width_bits",
                                   "mig_enabled", "ecc_enabled"])
def test_gpu_field_matches_capture(h100, field):
    (gpu,) = h100.gpus
    assert getattr(gpu, field) == EXPECTED["gpus"][0][field]


def test_gpu_identity(h100):
    (gpu,) = h100.gpus
    assert gpu.vendor == "nvidia"
    assert gpu.pci_bus_id == "0000:00:06.0"
    assert EXPECTED["gpus"][0]["pci_bus_id"].lower().endswith(gpu.pci_bus_id[4:])
    assert (gpu.pci_vendor_id, gpu.pci_device_id, gpu.pci_class) == ("10de", "2330", "0302")
    assert gpu.architecture == "Hopper"
    assert gpu.index == 0
    assert {"pci", "nvml", "nvidia-smi"} <= set(gpu.sources)


def test_nvidia_state_matches_capture(h100):
    nv = h100.nvidia
    assert nv.kernel_module_loaded is True
    assert nv.kernel_module_version == EXPECTED["nvidia"]["driver_version"] == "580.159.04"
    assert nv.kernel_module_flavor == "open"
    assert nv.library_version == "580.159.04"
    assert nv.nvml_version == "13.580.159.04"
    assert nv.cuda_driver_version == EXPECTED["nvidia"]["cuda_driver_version"] == "13.0"
    assert nv.nvcc_version == "13.0.88"
    assert nv.reboot_required is False


def test_storage_matches_capture(h100):
    disks = {d.name: d for d in h100.storage.devices}
    assert disks["vda"].media == "virtual" and disks["vda"].mountpoints == ("/",)
    assert disks["vda"].size_bytes == 274877906944
    assert disks["vdb"].mountpoints == ("/usr/local/nvidia",)
    assert h100.storage.arrays == ()
    mounts = {m.mountpoint: m for m in h100.storage.mounts}
    assert set(mounts) == {"/"}  # tmpfs and the squashfs driver image are not storage
    assert mounts["/"].free_bytes == 67092172 * 1024


def test_json_output_validates_against_schema(h100):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(h100.to_dict(), json_schema())


def test_json_roundtrip(h100):
    assert HostProfile.from_dict(json.loads(json.dumps(h100.to_dict()))) == h100


def test_committed_schema_is_current():
    committed = json.loads((REPO / "dlsetup" / "schema" / "host-profile.schema.json").read_text())
    assert committed == json_schema(), "regenerate: python -m dlsetup.model > dlsetup/schema/host-profile.schema.json"


def test_cli_json_reports_expected_values():
    out = run_cli("probe", "--from-bundle", str(H100_BUNDLE), "--json", check=True)
    doc = json.loads(out.stdout)
    gpu = doc["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["compute_capability"] == "9.0"
    assert doc["nvidia"]["kernel_module_version"] == "580.159.04"


def test_cli_human_output_names_the_gpu():
    out = run_cli("probe", "--from-bundle", str(H100_BUNDLE), check=True)
    assert "NVIDIA H100 80GB HBM3" in out.stdout and "580.159.04" in out.stdout


def test_missing_bundle_is_one_line_exit_2(tmp_path):
    out = run_cli("probe", "--from-bundle", str(tmp_path / "nope"), "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "bundle directory not found" in out.stderr


def test_empty_bundle_gives_unknowns(tmp_path):
    profile = probe(bundle=tmp_path)
    assert profile.gpus == () and profile.cpu.model is None and profile.os.id is None
    assert profile.memory.total_bytes is None and profile.os.secure_boot == "unknown"
    assert profile.nvidia.kernel_module_loaded is None


def _damaged_copy(tmp_path, garbage: bytes):
    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle)
    for path in bundle.rglob("*"):
        if path.is_file() and path.name != "commands.json":
            path.write_bytes(garbage)
    return bundle


@pytest.mark.parametrize("garbage", [b"", b"\x00\xff\xfe garbage \n:::\n", b"<?xml version='1.0'?><nvidia_smi_log>",
                                     b"{\"devices\": [{\"cc\": \"x\"}], \"driver\": 5}", b"\n" * 3 + b"= = =\n"])
def test_garbage_bundle_never_tracebacks(tmp_path, garbage):
    bundle = _damaged_copy(tmp_path, garbage)
    out = run_cli("probe", "--from-bundle", str(bundle), "--json")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    doc = json.loads(out.stdout)
    assert doc["cpu"]["model"] is None and doc["os"]["id"] is None


def test_garbage_bundle_still_finds_gpu_on_pci(tmp_path):
    """With every driver output destroyed, PCI ids alone still find and name the H100."""
    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle)
    for victim in ("nvml.json", "cmd/nvidia-smi-q-x.out", "cmd/nvidia-smi-q.out"):
        (bundle / victim).write_text("garbage")
    (gpu,) = probe(bundle=bundle).gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.compute_capability == "9.0"
    assert gpu.uuid is None and "table" in gpu.sources


def test_text_nvidia_smi_q_stands_in_for_a_broken_xml(tmp_path):
    """Without NVML and the XML report, the bundle's plain ``nvidia-smi -q`` still gives the driver's facts."""
    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle)
    for victim in ("nvml.json", "cmd/nvidia-smi-q-x.out"):
        (bundle / victim).write_text("garbage")
    profile = probe(bundle=bundle)
    (gpu,) = profile.gpus
    truth = json.loads((H100_BUNDLE / "expected.json").read_text())
    assert gpu.uuid == truth["gpus"][0]["uuid"] and "nvidia-smi" in gpu.sources
    assert profile.nvidia.library_version == truth["nvidia"]["driver_version"]


@pytest.mark.parametrize(("machine_id", "uuid", "expected"), [
    ("3d1219c7c4c5404aaa1f6d2a48adfda4\n", "4C4C4544-0042-3510-8052-B4C04F4A4E32\n",
     ("3d1219c7c4c5404aaa1f6d2a48adfda4", "4c4c4544-0042-3510-8052-b4c04f4a4e32")),
    ("uninitialized\n", "03000200-0400-0500-0006-000700080009\n", (None, None)),  # first boot; placeholder
    ("", "00000000-0000-0000-0000-000000000000", (None, None)),
    ("not-an-id", "garbage", (None, None)),
])
def test_machine_identity_is_read_and_saved_with_the_bundle(tmp_path, machine_id, uuid, expected):
    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle)
    (bundle / "etc" / "machine-id").write_text(machine_id)
    (bundle / "sys" / "class" / "dmi" / "id").mkdir(parents=True, exist_ok=True)
    (bundle / "sys" / "class" / "dmi" / "id" / "product_uuid").write_text(uuid)
    profile = probe(bundle=bundle, save_bundle=tmp_path / "saved")
    assert (profile.machine.machine_id, profile.machine.product_uuid) == expected
    assert profile.probed_at is None  # a bundle is no live probe: no time is invented for it
    again = probe(bundle=tmp_path / "saved")
    assert again.machine == profile.machine
