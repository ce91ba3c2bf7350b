"""``dlsetup check``: rules over the real H100 capture and over profiles built for other machines."""

import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import H100_BUNDLE, REPO
from dlsetup.advice import run_checks, worst
from dlsetup.model import (GPU, BlockDevice, CPUInfo, HostProfile, MdArray, MemoryInfo, Mount, NvidiaState, OSInfo,
                           StorageInfo)
from dlsetup.probe import probe

GIB = 1024**3


def by_id(findings, rule_id):
    return [f for f in findings if f.id == rule_id]


def severity(findings, rule_id):
    (f,) = by_id(findings, rule_id)
    return f.severity


@pytest.fixture(scope="module")
def h100_findings():
    return run_checks(probe(bundle=H100_BUNDLE))


def test_h100_warns_ram_under_twice_vram(h100_findings):
    (f,) = by_id(h100_findings, "memory.vs_vram")
    assert f.severity == "warn"
    assert "126 GiB RAM" in f.message and "80 GiB" in f.message and "under 2x" in f.message


def test_h100_warns_no_fast_storage(h100_findings):
    (f,) = by_id(h100_findings, "storage.fast")
    assert f.severity == "warn" and "no NVMe or SSD" in f.message


@pytest.mark.parametrize("rule_id", ["gpu.present", "gpu.supported", "gpu.vram", "gpu.tensor_cores", "gpu.pcie",
                                     "driver.loaded", "cpu.cores_per_gpu", "cpu.avx2", "cpu.avx512",
                                     "memory.total", "os.supported"])
def test_h100_passes_what_is_fine(h100_findings, rule_id):
    assert severity(h100_findings, rule_id) == "pass"


def test_h100_psu_estimate(h100_findings):
    (f,) = by_id(h100_findings, "power.psu")
    assert f.severity == "info" and "700 W" in f.message and "1200-1300 W" in f.message


def test_h100_no_fail(h100_findings):
    assert worst(h100_findings) == "warn"


# -- profiles for machines we hold no capture of --------------------------------------------------------

BASE = HostProfile(
    os=OSInfo(id="ubuntu", version_id="24.04", secure_boot="disabled"),
    cpu=CPUInfo(physical_cores=16, logical_cpus=32, sockets=1, avx2=True, avx512f=False),
    memory=MemoryInfo(total_bytes=128 * GIB),
    storage=StorageInfo(
        devices=(BlockDevice(name="nvme0n1", type="disk", media="nvme", size_bytes=2000 * 10**9),),
        mounts=(Mount(mountpoint="/", device="/dev/nvme0n1p2", free_bytes=900 * GIB),),
    ),
)


def gpu(**kw):
    base = dict(vendor="nvidia", pci_bus_id="0000:01:00.0", index=0, pci_vendor_id="10de")
    return GPU(**{**base, **kw})


RTX4090 = gpu(name="NVIDIA GeForce RTX 4090", pci_device_id="2684", compute_capability="8.9",
              memory_bytes=24 * GIB, power_limit_w=450.0, pcie_gen_max=4, pcie_width_max=16,
              pcie_gen_current=4, pcie_width_current=16)
GTX1080 = gpu(name="NVIDIA GeForce GTX 1080", pci_device_id="1b80", compute_capability="6.1", memory_bytes=8 * GIB)
K80 = gpu(name="Tesla K80", pci_device_id="102d", compute_capability="3.7", memory_bytes=12 * GIB)


def with_(profile=BASE, **changes):
    return dataclasses.replace(profile, **changes)


CASES = [
    # (case, profile, rule id, expected severity, text in the message)
    ("no gpu", BASE, "gpu.present", "warn", "no GPU found"),
    ("4090 ok", with_(gpus=(RTX4090,)), "gpu.supported", "pass", "8.9"),
    ("pascal stays on cuda 12", with_(gpus=(GTX1080,)), "gpu.supported", "warn", "not supported by CUDA 13"),
    ("kepler too old", with_(gpus=(K80,)), "gpu.supported", "fail", "too old"),
    ("pascal has no tensor cores", with_(gpus=(GTX1080,)), "gpu.tensor_cores", "warn", "no tensor"),
    ("8 GiB is small", with_(gpus=(dataclasses.replace(GTX1080, memory_bytes=6 * GIB),)), "gpu.vram", "warn", "6 GiB"),
    ("x8 link", with_(gpus=(dataclasses.replace(RTX4090, pcie_width_current=8),)), "gpu.pcie", "warn", "x8"),
    ("idle gen downshift", with_(gpus=(dataclasses.replace(RTX4090, pcie_gen_current=1),)), "gpu.pcie", "info", "gen1"),
    ("2 cores for 4 gpus", with_(gpus=(RTX4090,) * 4, cpu=CPUInfo(physical_cores=8)),
     "cpu.cores_per_gpu", "warn", "2.0 per GPU"),
    ("no avx2", with_(cpu=CPUInfo(avx2=False)), "cpu.avx2", "warn", "AVX2"),
    ("32 GiB ram", with_(memory=MemoryInfo(total_bytes=32 * GIB)), "memory.total", "warn", "32 GiB"),
    ("4x4090 needs 192 GiB", with_(gpus=(RTX4090,) * 4), "memory.vs_vram", "warn", "96 GiB of GPU memory"),
    ("hdd only",
     with_(storage=StorageInfo(devices=(BlockDevice(name="sda", type="disk", media="hdd", size_bytes=8 * 10**12),))),
     "storage.fast", "warn", "hdd"),
    ("degraded raid",
     with_(storage=StorageInfo(arrays=(MdArray(name="md0", state="active", level="raid1", degraded=True),))),
     "storage.raid", "fail", "md0"),
    ("disk nearly full",
     with_(storage=StorageInfo(mounts=(Mount(mountpoint="/", device="/dev/sda1", free_bytes=5 * GIB),))),
     "storage.free", "fail", "5 GiB"),
    ("psu for 4x4090", with_(gpus=(RTX4090,) * 4), "power.psu", "info", "2500-2750 W"),
    ("unsupported os", with_(os=OSInfo(id="fedora", version_id="41", pretty_name="Fedora Linux 41")),
     "os.supported", "fail", "Fedora"),
    ("secure boot on", with_(gpus=(RTX4090,), os=OSInfo(id="ubuntu", version_id="24.04", secure_boot="enabled")),
     "os.secure_boot", "warn", "enabled"),
    ("driver mismatch", with_(gpus=(RTX4090,), nvidia=NvidiaState(kernel_module_version="570.86.15",
                                                                  library_version="570.133.07", reboot_required=True)),
     "driver.mismatch", "fail", "570.86.15"),
    ("nouveau", with_(gpus=(RTX4090,), nvidia=NvidiaState(kernel_module_loaded=False, nouveau_loaded=True)),
     "driver.nouveau", "warn", "nouveau"),
    ("igpu only", with_(gpus=(GPU(vendor="intel", pci_bus_id="0000:00:02.0", integrated=True),)),
     "gpu.present", "warn", "integrated"),
    ("amd mi300x",
     with_(gpus=(GPU(vendor="amd", pci_bus_id="0000:05:00.0", index=0, gfx_target="gfx942", memory_bytes=192 * GIB),)),
     "gpu.supported", "pass", "gfx942"),
    ("rdna2 not in rocm list",
     with_(gpus=(GPU(vendor="amd", pci_bus_id="0000:05:00.0", index=0, gfx_target="gfx1031"),)),
     "gpu.supported", "warn", "gfx1031"),
]


@pytest.mark.parametrize("case,profile,rule_id,expected,text", CASES, ids=[c[0] for c in CASES])
def test_rule_table(case, profile, rule_id, expected, text):
    findings = by_id(run_checks(profile), rule_id)
    assert findings, f"{rule_id} produced nothing"
    assert findings[0].severity == expected, findings[0]
    assert text in findings[0].message


def test_every_finding_is_well_formed():
    for _, profile, *_ in CASES:
        for f in run_checks(profile):
            assert f.severity in ("pass", "info", "warn", "fail") and f.id and f.message
            if f.severity in ("warn", "fail"):
                assert f.hint, f"{f.id} warns without saying what to do"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dlsetup", "check", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_json_and_exit_codes(tmp_path):
    out = cli("--from-bundle", str(H100_BUNDLE), "--json")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["summary"]["warn"] >= 2 and doc["summary"]["fail"] == 0
    assert cli("--from-bundle", str(H100_BUNDLE), "--strict").returncode == 0  # warnings are not failures
    missing = cli("--from-bundle", str(tmp_path / "none"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_cli_strict_fails_on_a_failing_host(tmp_path):
    bundle = tmp_path / "fedora"
    (bundle / "etc").mkdir(parents=True)
    (bundle / "etc" / "os-release").write_text('ID=fedora\nVERSION_ID=41\nPRETTY_NAME="Fedora Linux 41"\n')
    assert cli("--from-bundle", str(bundle)).returncode == 0
    assert cli("--from-bundle", str(bundle), "--strict").returncode == 1
