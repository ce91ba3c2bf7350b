"""CPU and memory parsers against real /proc/cpuinfo, lscpu and dmidecode output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import H100_BUNDLE, PUBLIC, missing_tool
from dlsetup.parsers.cpu import merge_cpu, parse_lscpu, parse_lscpu_json, parse_proc_cpuinfo
from dlsetup.parsers.dmi import parse_dmidecode_memory, parse_memory_devices
from dlsetup.parsers.system import parse_meminfo

CPU = PUBLIC / "cpu"
MiB = 1 << 20


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_h100_bundle_all_sources_agree() -> None:
    lscpu = parse_lscpu(_read(H100_BUNDLE / "cmd" / "lscpu.out"))
    as_json = parse_lscpu_json(_read(H100_BUNDLE / "cmd" / "lscpu-J.out"))
    cpuinfo = parse_proc_cpuinfo(_read(H100_BUNDLE / "proc" / "cpuinfo"))
    assert lscpu == as_json
    merged = merge_cpu(lscpu, as_json, cpuinfo)
    assert merged["model"] == "Intel(R) Xeon(R) Processor"
    assert merged["vendor"] == "GenuineIntel"
    assert merged["logical_cpus"] == 16 and merged["physical_cores"] == 16
    assert merged["sockets"] == 1 and merged["numa_nodes"] == 1
    assert merged["l3_cache_bytes"] == 314572800 and merged["l2_cache_bytes"] == 32 * MiB
    assert merged["avx2"] is True and merged["avx512f"] is True and merged["amx"] is True
    assert "avx512_bf16" in merged["avx512_extensions"] and "avx512_fp16" in merged["avx512_extensions"]
    assert merged["hypervisor"] == "KVM"
    assert "base_mhz" not in merged and "max_mhz" not in merged  # neither is stated on that VM
    assert merged.get("hybrid") is None  # one thread per core: cannot tell


def test_cpuinfo_dual_epyc() -> None:
    info = parse_proc_cpuinfo(_read(CPU / "proc-cpuinfo_2x-amd-epyc-7451_96threads.txt"))
    assert info["model"] == "AMD EPYC 7451 24-Core Processor"
    assert (info["logical_cpus"], info["sockets"], info["physical_cores"]) == (96, 2, 48)
    assert info["avx2"] is True and info["avx512f"] is False and info["avx512_extensions"] == ()
    assert info["hybrid"] is False
    assert (
        "l3_cache_bytes" not in info and "l2_cache_bytes" not in info
    )  # "cache size: 512 KB" is per-core L2
    assert "base_mhz" not in info


def test_cpuinfo_four_socket_xeon_base_clock() -> None:
    info = parse_proc_cpuinfo(_read(CPU / "proc-cpuinfo_4x-intel-xeon-x7550_64threads.txt"))
    assert info["model"] == "Intel(R) Xeon(R) CPU X7550 @ 2.00GHz"
    assert info["base_mhz"] == 2000.0
    assert (info["logical_cpus"], info["sockets"], info["physical_cores"]) == (64, 4, 32)
    assert info["avx2"] is False


def test_cpuinfo_hybrid_alder_lake() -> None:
    info = parse_proc_cpuinfo(_read(CPU / "proc-cpuinfo_intel-i7-1270P_hybrid-PE.txt"))
    assert info["hybrid"] is True
    assert (info["logical_cpus"], info["physical_cores"]) == (16, 12)
    assert "base_mhz" not in info  # "12th Gen Intel(R) Core(TM) i7-1270P" states no clock


def test_cpuinfo_uniform_smt_laptop_is_not_hybrid() -> None:
    info = parse_proc_cpuinfo(_read(CPU / "proc-cpuinfo_intel-i7-1165g7_linux6.2.txt"))
    assert info["hybrid"] is False
    assert info["base_mhz"] == 2800.0
    assert info["avx512f"] is True and "avx512_vp2intersect" in info["avx512_extensions"]
    assert info["amx"] is False


def test_cpuinfo_offline_sibling_makes_hybrid_unknown() -> None:
    blocks = _read(CPU / "proc-cpuinfo_intel-i7-1165g7_linux6.2.txt").strip().split("\n\n")
    without_cpu1 = "\n\n".join(b for b in blocks if not b.startswith("processor\t: 1\n"))
    info = parse_proc_cpuinfo(without_cpu1)
    assert info["logical_cpus"] == 7 and "hybrid" not in info


def test_lscpu_new_format_with_parsable_section() -> None:
    info = parse_lscpu(_read(CPU / "lscpu_2x-amd-epyc-7451_plus-parsable.txt"))
    assert (info["logical_cpus"], info["sockets"], info["physical_cores"], info["numa_nodes"]) == (
        96,
        2,
        48,
        8,
    )
    assert info["l3_cache_bytes"] == 128 * MiB and info["l2_cache_bytes"] == 24 * MiB
    assert info["max_mhz"] == 2300.0


def test_lscpu_reads_only_the_first_parsable_table() -> None:
    # The file holds `lscpu -p` and `lscpu -p --physical`, which number cores differently.
    info = parse_lscpu(_read(CPU / "lscpu_4x-intel-xeon-x7550_plus-parsable.txt"))
    assert (info["sockets"], info["physical_cores"], info["logical_cpus"]) == (4, 32, 64)
    assert info["l3_cache_bytes"] == 72 * MiB
    assert info["numa_nodes"] == 3
    assert info["base_mhz"] == 2000.0 and info["max_mhz"] == 1996.0  # ACPI rounding, kept


def test_lscpu_new_format_totals_without_instances() -> None:
    info = parse_lscpu(_read(CPU / "lscpu_2x-epyc-7742_256t_8numa.txt"))
    assert (info["logical_cpus"], info["physical_cores"], info["numa_nodes"]) == (256, 128, 8)
    assert info["l3_cache_bytes"] == 512 * MiB and info["l2_cache_bytes"] == 64 * MiB


@pytest.mark.parametrize(
    "name", ["lscpu_2x-epyc-7742_smt-off_oldformat.txt", "lscpu_2x-xeon-platinum-8280_112t.txt"]
)
def test_lscpu_old_format_leaves_unknown_totals_out(name: str) -> None:
    info = parse_lscpu(_read(CPU / name))
    assert "l3_cache_bytes" not in info and "l2_cache_bytes" not in info
    assert info["sockets"] == 2


def test_lscpu_old_format_topology() -> None:
    epyc = parse_lscpu(_read(CPU / "lscpu_2x-epyc-7742_smt-off_oldformat.txt"))
    assert (epyc["logical_cpus"], epyc["physical_cores"]) == (128, 128)
    xeon = parse_lscpu(_read(CPU / "lscpu_2x-xeon-platinum-8280_112t.txt"))
    assert (xeon["physical_cores"], xeon["base_mhz"], xeon["max_mhz"]) == (56, 2700.0, 4000.0)
    assert xeon["avx512f"] is True


def test_lscpu_bogus_max_mhz_is_dropped() -> None:
    info = parse_lscpu(_read(CPU / "lscpu_threadripper-3970x_bogus-maxmhz.txt"))  # "CPU max MHz: 6605.0781"
    assert "max_mhz" not in info
    assert info["l3_cache_bytes"] == 128 * MiB and info["physical_cores"] == 32


def test_lscpu_xen_guest_bogus_topology() -> None:
    info = parse_lscpu(_read(CPU / "lscpu_xeon-platinum-8280_xen-guest_bogus-topology.txt"))
    assert info["hypervisor"] == "Xen"
    assert info["logical_cpus"] == 112
    assert "physical_cores" not in info  # "Thread(s) per core: 112" is not a real topology


def test_lscpu_threadripper_pro() -> None:
    info = parse_lscpu(_read(CPU / "lscpu_threadripper-pro-3995wx_128t.txt"))
    assert info["model"] == "AMD Ryzen Threadripper PRO 3995WX 64-Cores"
    assert (info["logical_cpus"], info["physical_cores"], info["max_mhz"]) == (128, 64, 2700.0)
    assert info["l3_cache_bytes"] == 256 * MiB


def test_merge_first_non_none_wins() -> None:
    merged = merge_cpu(
        {"model": "a", "max_mhz": None, "avx512_extensions": ()},
        {"model": "b", "max_mhz": 3.0, "avx512_extensions": ("x",)},
    )
    assert merged == {"model": "a", "max_mhz": 3.0, "avx512_extensions": ("x",)}


@pytest.mark.parametrize(
    "text", ["", "garbage\x00\n: :\n\n", "processor : x\ncore id\n", "L3 cache: lots\n1,2,3\n"]
)
def test_garbage_never_raises(text: str) -> None:
    assert isinstance(parse_proc_cpuinfo(text), dict)
    assert isinstance(parse_lscpu(text), dict)
    assert parse_lscpu_json(text) == {}
    assert parse_lscpu_json('{"lscpu": [{"field": 3}, "x", {"field": "CPU(s):", "data": "many"}]}') == {}
    assert parse_dmidecode_memory(text) == {}


def _live_dmidecode() -> str:
    if shutil.which("dmidecode") is None:
        missing_tool("dmidecode is not installed (apt-get install dmidecode)")
    result = subprocess.run(["dmidecode", "-t", "memory"], capture_output=True, text=True, check=False)
    if "Memory Device" not in result.stdout:
        pytest.skip("dmidecode prints no memory table on this machine (no SMBIOS, or not root)")
    return result.stdout


def test_dmidecode_live_matches_meminfo() -> None:
    text = _live_dmidecode()
    summary = parse_dmidecode_memory(text)
    devices = parse_memory_devices(text)
    assert summary["dimm_count"] == len(devices) >= 1
    total = parse_meminfo(Path("/proc/meminfo").read_text())["MemTotal"]
    assert sum(d["size_bytes"] for d in devices) >= total
    assert summary["dimm_speed_mts"] is None or 100 <= summary["dimm_speed_mts"] <= 20000


# -- Arm hosts (real outputs; each failed before its fix) ------------------------------------------


def test_arm_big_little_lscpu_counts_every_cluster():
    """Four "Model name" blocks (one per core type), core ids restarting per cluster in ``lscpu -p``."""
    text = (PUBLIC / "cpu" / "lscpu_arm-biglittle_A510-A710-A715-X3_plus-parsable.txt").read_text()
    info = parse_lscpu(text)
    assert info["physical_cores"] == 8 and info["logical_cpus"] == 8
    assert info["model"] == "Cortex-A510 + Cortex-A710 + Cortex-A715 + Cortex-X3"
    assert (info["hybrid"], info["clusters"], info["sockets"]) == (True, 4, 1)
    assert info["max_mhz"] == 3187.2  # the fastest core type (X3), not the first block's A510
    assert info["vendor"] == "ARM"


@pytest.mark.parametrize(
    "name, cores, clusters",
    [("lscpu_nvidia-tegra-carmel-6c_socket3-clusters.txt", 6, 3), ("lscpu_cortex-a57-4c_socket2-clusters.txt", 4, 2)],
)
def test_soc_arm_sockets_are_clusters(name, cores, clusters):
    """Old lscpu calls the clusters of a Jetson / Cortex-A SoC "Socket(s)": one package, several clusters."""
    info = parse_lscpu((PUBLIC / "cpu" / name).read_text())
    counts = (info["sockets"], info["clusters"], info["physical_cores"], info["logical_cpus"])
    assert counts == (1, clusters, cores, cores)


def test_arm_server_sockets_stay_sockets():
    info = parse_lscpu((PUBLIC / "cpu" / "lscpu_2x-kunpeng-920-48c_4numa.txt").read_text())
    assert (info["sockets"], info["physical_cores"], info["numa_nodes"], info["model"]) == (2, 96, 4, "Kunpeng-920")
    assert "clusters" not in info and "hybrid" not in info
