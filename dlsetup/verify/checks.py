"""Checks dlsetup adds around the payload's figures: the driver as the host profile sees it, the vendor
tool, whether the framework sees every GPU, and achieved throughput against the card's datasheet peak."""

from __future__ import annotations

import subprocess
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, TypedDict

from dlsetup.model import HostProfile
from dlsetup.parsers.amd import parse_rocminfo
from dlsetup.parsers.nvidia import parse_smi_list

#: Below this fraction of the datasheet peak a throughput figure is a warning. Tuned libraries reach
#: 70-90 % of dense matmul peak on large squares and 60-90 % of memory bandwidth with a plain copy.
PEAK_WARN_FRACTION = 0.5

#: payload check id -> the ``GpuSpec.peak_tflops`` key it is compared with
MATMUL_PEAK_KEYS = {"matmul.bf16": "bf16", "matmul.fp16": "fp16", "matmul.fp32": "fp32"}

TOOL_TIMEOUT_S = 30


class Check(TypedDict):
    """One verdict, as the payload and dlsetup both emit it."""

    id: str
    status: str  #: "pass", "warn" or "fail"
    message: str
    figures: Dict[str, Any]
    device: Optional[str]


class PeakSpec(Protocol):
    """What the comparison needs of ``dlsetup.gpudb.GpuSpec``."""

    @property
    def peak_tflops(self) -> Mapping[str, Optional[float]]:
        """Dense peak TFLOPS by "fp32", "tf32", "fp16", "bf16", "fp8"."""

    @property
    def memory_bandwidth_gbps(self) -> Optional[float]:
        """Peak memory bandwidth in GB/s."""


def make(cid: str, status: str, message: str, figures: Optional[Dict[str, Any]] = None,
         device: Optional[str] = None) -> Check:
    return Check(id=cid, status=status, message=message, figures=figures or {}, device=device)


# -- driver -------------------------------------------------------------------------------------------


def driver_checks(profile: HostProfile) -> List[Check]:
    """The kernel driver is loaded and matches its user-space library (NVIDIA), or amdgpu and KFD are up."""
    checks = []
    if profile.nvidia_gpus:
        nv = profile.nvidia
        if nv.kernel_module_loaded is False:
            checks.append(make("driver.module", "fail", "the nvidia kernel module is not loaded"))
        elif nv.reboot_required:
            checks.append(make("driver.module", "fail", f"loaded nvidia module {nv.kernel_module_version} does "
                               f"not match library {nv.library_version}: reboot to load the new module"))
        elif nv.kernel_module_loaded is None or nv.library_version is None:
            checks.append(make("driver.module", "warn", "could not tell whether the nvidia module is loaded "
                               "and matches its library"))
        else:
            flavor = f"{nv.kernel_module_flavor} " if nv.kernel_module_flavor else ""
            checks.append(make("driver.module", "pass", f"nvidia {flavor}module {nv.kernel_module_version} "
                               f"loaded, library {nv.library_version}"))
    if profile.amd_gpus:
        amd = profile.amd
        if amd.amdgpu_loaded and amd.kfd_present:
            checks.append(make("driver.amdgpu", "pass", "amdgpu loaded, /dev/kfd present"))
        elif amd.amdgpu_loaded is False or amd.kfd_present is False:
            checks.append(make("driver.amdgpu", "fail", "amdgpu is not loaded or /dev/kfd is missing"))
        else:
            checks.append(make("driver.amdgpu", "warn", "could not tell whether amdgpu and KFD are up"))
    return checks


#: vendor -> (check id, command, parser listing one item per GPU)
TOOLS: Dict[str, Tuple[str, List[str], Callable[[str], Sequence[Any]]]] = {
    "nvidia": ("driver.nvidia-smi", ["nvidia-smi", "-L"], parse_smi_list),
    "amd": ("driver.rocminfo", ["rocminfo"], parse_rocminfo),
}


def tool_check(vendor: str, expected: int) -> Check:
    """Run the vendor's tool and compare the GPUs it lists with the ``expected`` count."""
    cid, command, parse = TOOLS[vendor]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return make(cid, "fail", f"{command[0]} not found on PATH")
    except subprocess.TimeoutExpired:
        return make(cid, "fail", f"{' '.join(command)} did not answer within {TOOL_TIMEOUT_S} s")
    return judge_tool(cid, " ".join(command), done.returncode, done.stdout + done.stderr, parse, expected)


def judge_tool(cid: str, command: str, returncode: int, output: str,
               parse: Callable[[str], Sequence[Any]], expected: int) -> Check:
    """A tool's verdict from its exit status and output: it ran, and lists ``expected`` GPUs."""
    if returncode != 0:
        first = next((line.strip() for line in output.splitlines() if line.strip()), f"exit {returncode}")
        return make(cid, "fail", f"{command} failed: {first}")
    found = len(parse(output))
    status = "pass" if found == expected else "fail"
    return make(cid, status, f"{command} lists {found} of {expected} GPUs", {"gpus": found})


def tool_checks(profile: HostProfile) -> List[Check]:
    return [tool_check(vendor, len(gpus)) for vendor, gpus in
            (("nvidia", profile.nvidia_gpus), ("amd", profile.amd_gpus)) if gpus]


# -- framework ----------------------------------------------------------------------------------------


def device_count_check(profile: HostProfile, document: Dict[str, Any]) -> Check:
    """The framework sees every discrete GPU the host has."""
    expected = sum(1 for g in profile.gpus if g.vendor in ("nvidia", "amd") and not g.integrated)
    seen = sum(1 for d in document.get("devices", []) if d["device"].startswith("cuda"))
    figures = {"gpus_host": expected, "gpus_framework": seen}
    if expected == 0 and seen == 0:
        return make("framework.devices", "warn", "no GPU on this host: the models ran on the CPU", figures)
    if seen >= expected:
        return make("framework.devices", "pass", f"torch sees all {expected} GPUs", figures)
    framework = document.get("framework") or {}
    why = " (a CPU-only torch build)" if not (framework.get("cuda") or framework.get("hip")) else ""
    return make("framework.devices", "fail", f"torch sees {seen} of the host's {expected} GPUs{why}", figures)


# -- datasheet peaks ----------------------------------------------------------------------------------


def compare_with_peaks(checks: List[Check], devices: List[Dict[str, Any]],
                       lookup: Callable[[str], Optional[PeakSpec]]) -> List[Check]:
    """Matmul and bandwidth checks of GPUs, with their datasheet peak and the achieved fraction added
    (warn below PEAK_WARN_FRACTION). Checks of the CPU or of unknown cards pass through unchanged."""
    names = {d["device"]: d["name"] for d in devices if d["device"].startswith("cuda")}
    result = []
    for item in checks:
        name = names.get(item["device"] or "")
        spec = lookup(name) if name else None
        achieved, peak, unit = None, None, ""
        if spec is not None and item["id"] in MATMUL_PEAK_KEYS:
            achieved, unit = item["figures"]["tflops"], "TFLOP/s"
            peak = spec.peak_tflops.get(MATMUL_PEAK_KEYS[item["id"]])
        elif spec is not None and item["id"] == "memory.bandwidth":
            achieved, peak, unit = item["figures"]["gbps"], spec.memory_bandwidth_gbps, "GB/s"
        if achieved is None or not peak:
            result.append(item)
            continue
        fraction = achieved / peak
        status = "pass" if fraction >= PEAK_WARN_FRACTION else "warn"
        figures = {**item["figures"], "peak": peak, "fraction_of_peak": round(fraction, 4)}
        message = f"{item['message']} = {fraction:.0%} of the {name} peak {peak:g} {unit}"
        result.append(make(item["id"], status, message, figures, item["device"]))
    return result
