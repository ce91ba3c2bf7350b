"""Parse AMD GPU tool outputs: rocm-smi (JSON and text), rocminfo and KFD topology properties.

Every parser returns GPUs as plain dicts whose keys are :class:`~dlsetup.model.GPU` field names, holding
only what that source reported (``vendor`` is always "amd"); the probe merges the sources and builds
the :class:`~dlsetup.model.GPU` records. Values are normalised to the model's conventions: PCI ids as
4 lowercase hex digits, bus ids as "dddd:bb:dd.f", memory in bytes, ``uuid`` as ROCr prints it
("GPU-" and the 64-bit unique id in 16 hex digits, the form rocminfo and HIP use).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

_MISSING = {"", "n/a", "none", "not supported", "unknown"}
_BUS_ID = re.compile(r"^(?:(?P<domain>[0-9a-f]{1,8}):)?(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})\.(?P<fn>[0-7])$")
_PCIE_LEVEL = re.compile(r"(?P<rate>\d+(?:\.\d+)?)GT/s x(?P<width>\d+)")
#: Transfer rate per lane (GT/s) of each PCIe generation.
_PCIE_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
_SMI_TEXT = re.compile(r"^GPU\[(?P<index>\d+)\]\s*:\s*(?P<key>[^:]+?):\s*(?P<value>.*)$")
_CONCISE_ROW = re.compile(r"^(?P<index>\d+)\s+\[0x(?P<device>[0-9a-f]+)\s*:\s*0x[0-9a-f]+\]", re.IGNORECASE)
_WATTS = re.compile(r"(\d+(?:\.\d+)?)W\b")
#: rocm-smi's concise table cuts names to this many characters.
_CONCISE_NAME_WIDTH = 20
_ROCMINFO_FIELD = re.compile(r"^  (?P<key>\S[^:]*):\s*(?P<value>.*?)\s*$")
_LEADING_INT = re.compile(r"^\s*(\d+)")
_KFD_LINE = re.compile(r"^(?P<key>\w+)\s+(?P<value>-?\d+)\s*$")
_AMD_VENDOR_ID = 0x1002


@dataclass(frozen=True)
class AmdReport:
    """What ``rocm-smi`` reported: the amdgpu driver version and one dict per GPU.

    rocm-smi prints no ROCm release; that comes from the ROCm install itself, not from this output.
    """

    driver_version: Optional[str] = None  #: amdgpu version; the kernel release for the in-tree driver
    gpus: tuple[dict, ...] = ()


def gfx_from_version(version: int) -> str:
    """The gfx target name of a KFD ``gfx_target_version``: 90010 -> "gfx90a", 90402 -> "gfx942".

    The number is major * 10000 + minor * 100 + stepping; the name prints minor and stepping in hex.
    """
    major, minor, stepping = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{stepping:x}"


# -- value helpers ----------------------------------------------------------------------------------


def _value(raw: Any) -> Optional[str]:
    text = str(raw).strip() if raw is not None else ""
    return None if text.lower() in _MISSING else text


def _int(raw: Any, base: int = 10) -> Optional[int]:
    try:
        return int(str(raw).strip(), base)
    except ValueError:
        return None


def _float(raw: Any) -> Optional[float]:
    try:
        return float(str(raw).strip())
    except ValueError:
        return None


def _pci_id(number: Optional[int]) -> Optional[str]:
    """A PCI vendor or device id as 4 lowercase hex digits; 0 means none."""
    return f"{number:04x}" if number is not None and 0 < number <= 0xFFFF else None


def _hex_id(raw: Any) -> Optional[str]:
    """"0x738c" -> "738c"."""
    return _pci_id(_int(raw, 16))


def _uuid(unique_id: Optional[int]) -> Optional[str]:
    """ROCr's agent UUID for a unique id; 0 means the device has none."""
    return f"GPU-{unique_id:016x}" if unique_id else None


def _bus_id(raw: Any) -> Optional[str]:
    match = _BUS_ID.match((_value(raw) or "").lower())
    if not match:
        return None
    domain = int(match["domain"] or "0", 16)
    return f"{domain:04x}:{match['bus']}:{match['dev']}.{match['fn']}"


def _bus_id_from_bdf(domain: int, bdf: int) -> str:
    """PCI address from a KFD/ROCr BDF id: bus << 8 | device << 3 | function."""
    return f"{domain:04x}:{(bdf >> 8) & 0xFF:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 0x7}"


def _clean(gpu: dict) -> dict:
    return {key: value for key, value in gpu.items() if value is not None}


# -- rocm-smi ---------------------------------------------------------------------------------------


def _smi_gpu(index: Optional[int], fields: dict[str, str]) -> dict:
    """One GPU from rocm-smi's key/value fields (JSON or text), keys lower-cased without ":"."""
    get = fields.get
    name = _value(get("device name")) or _value(get("card series"))
    if name and _hex_id(name):  # ROCm 4.x prints the vendor id as the card series
        name = None
    numa_node = _int(get("(topology) numa node"))
    serial = _value(get("serial number"))
    pcie = _PCIE_LEVEL.search(get("pcie clock level") or "")
    unique_id = _value(get("unique id"))
    return _clean(
        {
            "vendor": "amd",
            "index": index,
            "pci_bus_id": _bus_id(get("pci bus")),
            "pci_vendor_id": f"{_AMD_VENDOR_ID:04x}",
            "pci_device_id": _hex_id(get("device id") or get("gpu id")),
            "name": name,
            "gfx_target": _value(get("gfx version")),
            "memory_bytes": _int(get("vram total memory (b)")),
            "uuid": _uuid(_int(unique_id, 16)) if unique_id else None,
            "serial": serial if serial != "0" else None,  # "0" is a placeholder, not a serial
            "vbios": _value(get("vbios version")),
            "power_limit_w": _float(get("max graphics package power (w)")),
            "pcie_gen_current": _PCIE_GEN.get(float(pcie["rate"])) if pcie else None,
            "pcie_width_current": int(pcie["width"]) if pcie else None,
            "numa_node": numa_node if numa_node is not None and numa_node >= 0 else None,
            "sources": ("rocm-smi",),
        }
    )


def _key(raw: str) -> str:
    return raw.strip().rstrip(":").strip().lower()


def parse_rocm_smi_json(text: str) -> AmdReport:
    """``rocm-smi --showallinfo --json`` (or any subset of ``--show*`` flags with ``--json``)."""
    try:
        data = json.loads(text)
    except ValueError:
        return AmdReport()
    if not isinstance(data, dict):
        return AmdReport()
    gpus = []
    for card, values in data.items():
        index = _int(card[4:]) if card.startswith("card") else None
        if index is None or not isinstance(values, dict):
            continue
        gpus.append(_smi_gpu(index, {_key(k): str(v) for k, v in values.items()}))
    system = data.get("system")
    driver = _value(system.get("Driver version")) if isinstance(system, dict) else None
    return AmdReport(driver_version=driver, gpus=tuple(gpus))


def parse_rocm_smi_text(text: str) -> AmdReport:
    """``rocm-smi`` text: the ``--showall``/``-a`` sections (``GPU[i] : key: value``) or the default
    concise table. The concise table gives model id, power cap and, when not cut short, the name.
    """
    fields: dict[int, dict[str, str]] = {}
    driver = None
    concise: dict[int, dict] = {}
    last_row: Optional[int] = None
    for line in text.splitlines():
        detail = _SMI_TEXT.match(line.strip())
        row = _CONCISE_ROW.match(line)
        if detail:
            fields.setdefault(int(detail["index"]), {}).setdefault(_key(detail["key"]), detail["value"])
        elif line.startswith("Driver version:"):
            driver = _value(line.partition(":")[2])
        elif row:
            last_row = int(row["index"])
            watts = _WATTS.findall(line)
            concise[last_row] = {
                "vendor": "amd",
                "index": last_row,
                "pci_device_id": _hex_id(row["device"]),
                "power_limit_w": float(watts[-1]) if watts else None,
                "sources": ("rocm-smi",),
            }
            continue
        elif last_row is not None and line[:1].isspace() and len(line.strip()) < _CONCISE_NAME_WIDTH:
            concise[last_row]["name"] = _value(line)
        last_row = None
    gpus = [_smi_gpu(index, values) for index, values in sorted(fields.items())]
    gpus += [_clean(concise[index]) for index in sorted(concise) if index not in fields]
    return AmdReport(driver_version=driver, gpus=tuple(gpus))


# -- rocminfo ---------------------------------------------------------------------------------------


def _agents(lines: Iterable[str]) -> list[list[str]]:
    """rocminfo's agent sections, each the lines after its "Agent N" title."""
    agents: list[list[str]] = []
    for line in lines:
        if re.match(r"^Agent \d+\s*$", line):
            agents.append([])
        elif agents:
            agents[-1].append(line)
    return agents


def _rocminfo_gpu(lines: list[str]) -> Optional[dict]:
    fields: dict[str, str] = {}
    memory = None
    segment = ""
    for line in lines:
        field = _ROCMINFO_FIELD.match(line)
        if field:
            fields.setdefault(field["key"].strip(), field["value"])
            continue
        key, _, value = line.strip().partition(":")
        if key == "Segment":
            segment = value
        elif key == "Size" and memory is None and "GLOBAL" in segment and "COARSE GRAINED" in segment:
            kib = _LEADING_INT.match(value)
            memory = int(kib[1]) * 1024 if kib else None
    if fields.get("Device Type") != "GPU":
        return None
    gfx = fields.get("Name", "")
    chip = _LEADING_INT.match(fields.get("Chip ID", ""))
    bdf = _int(fields.get("BDFID"))
    uuid = fields.get("Uuid", "")
    return _clean(
        {
            "vendor": "amd",
            # rocminfo prints no PCI domain; domain 0 is the only one on almost every host.
            "pci_bus_id": _bus_id_from_bdf(0, bdf) if bdf else None,
            "pci_vendor_id": f"{_AMD_VENDOR_ID:04x}",
            "pci_device_id": _pci_id(int(chip[1])) if chip else None,
            "name": _value(fields.get("Marketing Name")),
            "gfx_target": gfx if gfx.startswith("gfx") else None,
            "memory_bytes": memory,
            "uuid": uuid if re.fullmatch(r"GPU-[0-9a-f]{16}", uuid) else None,
            "sources": ("rocminfo",),
        }
    )


def parse_rocminfo(text: str) -> tuple[dict, ...]:
    """The GPU agents of ``rocminfo`` output, in agent order (CPU agents are skipped).

    ``memory_bytes`` is the size of the agent's global coarse-grained pool, its VRAM.
    """
    gpus = (_rocminfo_gpu(agent) for agent in _agents(text.splitlines()))
    return tuple(gpu for gpu in gpus if gpu)


# -- KFD topology -----------------------------------------------------------------------------------


def parse_kfd_properties(text: str) -> dict:
    """A GPU from ``/sys/class/kfd/kfd/topology/nodes/N/properties``; {} for a CPU node.

    The PCI domain defaults to 0 on kernels too old to list ``domain``.
    """
    props = {}
    for line in text.splitlines():
        match = _KFD_LINE.match(line.strip())
        if match:
            props[match["key"]] = int(match["value"])
    version = props.get("gfx_target_version", 0)
    if version <= 0 or props.get("simd_count", 0) <= 0:
        return {}
    location = props.get("location_id")
    return _clean(
        {
            "vendor": "amd",
            "pci_bus_id": _bus_id_from_bdf(props.get("domain", 0), location) if location else None,
            "pci_vendor_id": _pci_id(props.get("vendor_id")),
            "pci_device_id": _pci_id(props.get("device_id")),
            "gfx_target": gfx_from_version(version),
            "memory_bytes": props.get("local_mem_size") or None,
            "uuid": _uuid(props.get("unique_id")),
            "sources": ("kfd",),
        }
    )
