"""What NVML (nvidia-ml-py) says about a live host, as plain JSON-ready data.

:func:`nvml_snapshot` returns the shape a bundle stores as ``nvml.json``, read back by
:func:`dlsetup.parsers.nvidia.report_from_nvml_snapshot`::

    {"driver": "580.159.04",        # nvmlSystemGetDriverVersion
     "cuda_driver": 13000,          # nvmlSystemGetCudaDriverVersion (13.0)
     "nvml": "13.580.159.04",       # nvmlSystemGetNVMLVersion
     "devices": [{
        "name", "uuid", "serial", "vbios",
        "memory": bytes,            # nvmlDeviceGetMemoryInfo().total
        "cc": [major, minor],       # CUDA compute capability
        "pci": "00000000:00:06.0",  # nvmlDeviceGetPciInfo().busId
        "pcie_gen_max", "pcie_width_max", "pcie_gen_current", "pcie_width_current",
        "power_limit_mw",           # nvmlDeviceGetPowerManagementLimit
        "power_default_mw",         # nvmlDeviceGetPowerManagementDefaultLimit
        "mig": [current, pending],  # 1 enabled, 0 disabled
        "mig_device_count",         # MIG devices that exist now (0 with MIG off)
        "ecc": current ECC mode (1/0), "persistence": 1/0,
        "arch": NVML_DEVICE_ARCH_* number, "cores": CUDA cores, "bus_width": memory bus bits,
        "max_mem_clock": MHz, "temp": degrees C}]}

Every per-device value is read on its own: one that the GPU or driver does not support
(``NVMLError_NotSupported`` and the like) leaves its key out. A device whose handle cannot be had is an
empty dict, so list positions stay NVML indices. When NVML cannot start the result is
``{"error": "<message>", "error_kind": "<kind>"}`` with kind one of :data:`ERROR_KINDS`.

Standard library only at import time; nvidia-ml-py is imported when a snapshot is taken.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

#: ``error_kind`` values: NVML library absent, kernel driver not loaded, the kernel module and the
#: library differ ("Driver/library version mismatch": reboot required), not allowed, anything else.
ERROR_KINDS = (
    "library_not_found",
    "driver_not_loaded",
    "lib_rm_version_mismatch",
    "no_permission",
    "other",
)


def _error(message: str, kind: str) -> dict:
    return {"error": message, "error_kind": kind}


def _init_error(nv: Any, exc: Exception) -> dict:
    kinds = {
        nv.NVML_ERROR_LIBRARY_NOT_FOUND: "library_not_found",
        nv.NVML_ERROR_DRIVER_NOT_LOADED: "driver_not_loaded",
        nv.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "lib_rm_version_mismatch",
        nv.NVML_ERROR_NO_PERMISSION: "no_permission",
    }
    return _error(f"NVML: {exc}", kinds.get(getattr(exc, "value", None), "other"))


def nvml_snapshot() -> dict:
    """Read the driver and every GPU through NVML; see the module docstring for the shape."""
    try:
        import pynvml as nv
    except ImportError as exc:
        return _error(f"nvidia-ml-py is not installed: {exc}", "library_not_found")
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        return _init_error(nv, exc)
    try:
        return _snapshot(nv)
    finally:
        try:
            nv.nvmlShutdown()
        except nv.NVMLError:
            pass  # nothing left to release


def _snapshot(nv: Any) -> dict:
    def attempt(call: Callable[..., Any], *args: Any) -> Any:
        try:
            value = call(*args)
        except nv.NVMLError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    count = attempt(nv.nvmlDeviceGetCount) or 0
    return _without_none(
        {
            "driver": attempt(nv.nvmlSystemGetDriverVersion),
            "cuda_driver": attempt(nv.nvmlSystemGetCudaDriverVersion),
            "nvml": attempt(nv.nvmlSystemGetNVMLVersion),
            "devices": [
                _device(nv, attempt, attempt(nv.nvmlDeviceGetHandleByIndex, i)) for i in range(count)
            ],
        }
    )


def _device(nv: Any, attempt: Callable[..., Any], handle: Any) -> dict:
    if handle is None:
        return {}
    memory = attempt(nv.nvmlDeviceGetMemoryInfo, handle)
    pci = attempt(nv.nvmlDeviceGetPciInfo, handle)
    cc = attempt(nv.nvmlDeviceGetCudaComputeCapability, handle)
    mig = attempt(nv.nvmlDeviceGetMigMode, handle)
    ecc = attempt(nv.nvmlDeviceGetEccMode, handle)
    bus_id = pci.busId if pci is not None else None
    return _without_none(
        {
            "name": attempt(nv.nvmlDeviceGetName, handle),
            "uuid": attempt(nv.nvmlDeviceGetUUID, handle),
            "serial": attempt(nv.nvmlDeviceGetSerial, handle),
            "memory": memory.total if memory is not None else None,
            "cc": list(cc) if cc is not None else None,
            "pci": bus_id.decode() if isinstance(bus_id, bytes) else bus_id,
            "pcie_gen_max": attempt(nv.nvmlDeviceGetMaxPcieLinkGeneration, handle),
            "pcie_width_max": attempt(nv.nvmlDeviceGetMaxPcieLinkWidth, handle),
            "pcie_gen_current": attempt(nv.nvmlDeviceGetCurrPcieLinkGeneration, handle),
            "pcie_width_current": attempt(nv.nvmlDeviceGetCurrPcieLinkWidth, handle),
            "power_limit_mw": attempt(nv.nvmlDeviceGetPowerManagementLimit, handle),
            "power_default_mw": attempt(nv.nvmlDeviceGetPowerManagementDefaultLimit, handle),
            "mig": list(mig) if mig is not None else None,
            "mig_device_count": _mig_device_count(nv, attempt, handle, mig),
            "ecc": ecc[0] if ecc is not None else None,
            "arch": attempt(nv.nvmlDeviceGetArchitecture, handle),
            "cores": attempt(nv.nvmlDeviceGetNumGpuCores, handle),
            "bus_width": attempt(nv.nvmlDeviceGetMemoryBusWidth, handle),
            "max_mem_clock": attempt(nv.nvmlDeviceGetMaxClockInfo, handle, nv.NVML_CLOCK_MEM),
            "vbios": attempt(nv.nvmlDeviceGetVbiosVersion, handle),
            "persistence": attempt(nv.nvmlDeviceGetPersistenceMode, handle),
            "temp": attempt(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU),
        }
    )


def _mig_device_count(nv: Any, attempt: Callable[..., Any], handle: Any, mig: Any) -> Optional[int]:
    """MIG devices that exist now: 0 with MIG off, None when MIG is unsupported or unreadable."""
    if mig is None:
        return None
    if not mig[0]:
        return 0
    slots = attempt(nv.nvmlDeviceGetMaxMigDeviceCount, handle)
    if slots is None:
        return None
    return sum(attempt(nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, i) is not None for i in range(slots))


def _without_none(data: dict) -> dict:
    return {key: value for key, value in data.items() if value is not None}
