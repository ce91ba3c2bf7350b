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
import textwrap
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from dlsetup.model import COMPUTE_PARTITIONS, MEMORY_PARTITIONS

_MISSING = {"", "n/a", "none", "not supported", "unknown"}
_BUS_ID = re.compile(r"^(?:(?P<domain>[0-9a-f]{1,8}):)?(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})\.(?P<fn>[0-7])$")
_PCIE_LEVEL = re.compile(r"(?P<rate>\d+(?:\.\d+)?)GT/s x(?P<width>\d+)")
#: Transfer rate per lane (GT/s) of each PCIe generation.
_PCIE_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
_SMI_TEXT = re.compile(r"^GPU\[(?P<index>\d+)\]\s*:\s*(?P<key>[^:]+?):\s*(?P<value>.*)$")
_CONCISE_ROW = re.compile(r"^(?P<index>\d+)\s+\[0x(?P<device>[0-9a-f]+)\s*:\s*0x[0-9a-f]+\]", re.IGNORECASE)
#: The concise row of ROCm 6.1+: "Device  Node  IDs (DID, GUID)": ``0  1  0x73bf,  34495  ...``; a CPX
#: partition other than the first prints "N/A," for its device id.
_CONCISE_ROW_IDS = re.compile(
    r"^(?P<index>\d+)\s+(?P<node>\d+)\s+(?:0x(?P<device>[0-9a-f]+)|N/A),\s+(?P<guid>\d+)\s", re.IGNORECASE
)
_WATTS = re.compile(r"(\d+(?:\.\d+)?)W\b")
#: The concise table's "Partitions (Mem, Compute)" column: "NPS1, SPX".
_CONCISE_MODES = re.compile(r"\b(?P<memory>NPS\d)\s*,\s*(?P<compute>[A-Z]PX)\b")
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
            "compute_partition": _mode(get("compute partition"), COMPUTE_PARTITIONS),
            "memory_partition": _mode(get("memory partition"), MEMORY_PARTITIONS),
            "sources": ("rocm-smi",),
        }
    )


def _mode(raw: Any, modes: tuple[str, ...]) -> Optional[str]:
    """A partition mode as the model spells it ("spx" -> "SPX"); anything else is unknown."""
    text = (_value(raw) or "").upper()
    return text if text in modes else None


def _json_document(text: str) -> Any:
    """The JSON document in a tool's output: the first line opening one at the left margin and what
    follows it, so warnings before it (rocm-smi and amd-smi print them on stdout, Python prints
    SyntaxWarnings of amd-smi's own code) and a prompt after it are not part of it. None when there is none."""
    text = textwrap.dedent(text)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^[\[{]", text, re.MULTILINE):
        try:
            return decoder.raw_decode(text, match.start())[0]
        except ValueError:
            continue
    return None


def _key(raw: str) -> str:
    return raw.strip().rstrip(":").strip().lower()


def parse_rocm_smi_json(text: str) -> AmdReport:
    """``rocm-smi --showallinfo --json`` (or any subset of ``--show*`` flags with ``--json``)."""
    data = _json_document(text)
    if not isinstance(data, dict):
        return AmdReport()
    cards = []
    for card, values in data.items():
        number = _int(card[4:]) if card.startswith("card") else None
        if number is not None and isinstance(values, dict):
            cards.append((number, values))
    # Older rocm-smi keys cards by DRM card number (card1, card2 when card0 is another display device);
    # the device index every tool and framework uses is the card's rank.
    gpus = [
        _smi_gpu(index, {_key(k): str(v) for k, v in values.items()})
        for index, (_, values) in enumerate(sorted(cards, key=lambda card: card[0]))
    ]
    system = data.get("system")
    driver = _value(system.get("Driver version")) if isinstance(system, dict) else None
    return AmdReport(driver_version=driver, gpus=tuple(gpus))


def parse_rocm_smi_text(text: str) -> AmdReport:
    """``rocm-smi`` text: the ``--showall``/``-a`` sections (``GPU[i] : key: value``) or the default
    concise table. The concise table gives model id, power cap and, when not cut short, the name.
    Output pasted with a common indent reads as the output itself.
    """
    text = textwrap.dedent(text)
    fields: dict[int, dict[str, str]] = {}
    driver = None
    concise: dict[int, dict] = {}
    last_row: Optional[int] = None
    for line in text.splitlines():
        detail = _SMI_TEXT.match(line.strip())
        row = _CONCISE_ROW.match(line) or _CONCISE_ROW_IDS.match(line)
        if detail:
            fields.setdefault(int(detail["index"]), {}).setdefault(_key(detail["key"]), detail["value"])
        elif line.startswith("Driver version:"):
            driver = _value(line.partition(":")[2])
        elif row:
            last_row = int(row["index"])
            watts = _WATTS.findall(line)
            modes = _CONCISE_MODES.search(line)
            concise[last_row] = {
                "vendor": "amd",
                "index": last_row,
                "pci_device_id": _hex_id(row["device"]) if row["device"] else None,
                "power_limit_w": float(watts[-1]) if watts else None,
                "memory_partition": _mode(modes["memory"], MEMORY_PARTITIONS) if modes else None,
                "compute_partition": _mode(modes["compute"], COMPUTE_PARTITIONS) if modes else None,
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

    ``memory_bytes`` is the size of the agent's global coarse-grained pool, its VRAM. Output pasted with
    a common indent reads as the output itself.
    """
    gpus = (_rocminfo_gpu(agent) for agent in _agents(textwrap.dedent(text).splitlines()))
    return tuple(gpu for gpu in gpus if gpu)


# -- KFD topology -----------------------------------------------------------------------------------


def parse_kfd_node(text: str) -> dict[str, int]:
    """Every ``name value`` line of a KFD topology node's ``properties`` file, as integers."""
    props = {}
    for line in text.splitlines():
        match = _KFD_LINE.match(line.strip())
        if match:
            props[match["key"]] = int(match["value"])
    return props


#: KFD memory bank heap types that are GPU memory (frame buffer, public and private).
_KFD_FRAME_BUFFER = (1, 2)
#: Key under which a reader adds the frame-buffer bytes of a node's memory banks to its properties.
KFD_BANK_BYTES = "mem_banks_frame_buffer_bytes"


def kfd_bank_bytes(banks: Iterable[str]) -> int:
    """GPU memory of a KFD node: the ``size_in_bytes`` of its frame-buffer ``mem_banks/N/properties``."""
    total = 0
    for text in banks:
        bank = parse_kfd_node(text)
        if bank.get("heap_type") in _KFD_FRAME_BUFFER:
            total += max(bank.get("size_in_bytes", 0), 0)
    return total


def _kfd_is_gpu(props: dict[str, int]) -> bool:
    """A GPU node has SIMDs and a device id; a CPU node has neither (an APU node has both and cores)."""
    return props.get("simd_count", 0) > 0 and props.get("device_id", 0) > 0


def kfd_gpu(props: dict[str, int]) -> dict:
    """The GPU dict of one parsed KFD node; {} for a CPU node.

    Kernels before 5.x print no ``gfx_target_version`` (nor ``domain``): the GPU is still one, its gfx
    target then comes from the GPU table by device id. The PCI domain defaults to 0.
    """
    if not _kfd_is_gpu(props):
        return {}
    version = props.get("gfx_target_version", 0)
    location = props.get("location_id")
    return _clean(
        {
            "vendor": "amd",
            "pci_bus_id": _bus_id_from_bdf(props.get("domain", 0), location) if location else None,
            "pci_vendor_id": _pci_id(props.get("vendor_id")),
            "pci_device_id": _pci_id(props.get("device_id")),
            "gfx_target": gfx_from_version(version) if version > 0 else None,
            "memory_bytes": props.get("local_mem_size") or props.get(KFD_BANK_BYTES) or None,
            "uuid": _uuid(props.get("unique_id")),
            "sources": ("kfd",),
        }
    )


def parse_kfd_properties(text: str) -> dict:
    """A GPU from ``/sys/class/kfd/kfd/topology/nodes/N/properties``; {} for a CPU node."""
    return kfd_gpu(parse_kfd_node(text))


def _partition_mode(count: int, xcc_per_partition: Optional[int]) -> Optional[str]:
    """The compute partition mode of a GPU split into ``count`` logical devices.

    One XCC per partition is CPX whatever the chip's XCC count (4 on MI308X, 8 on MI300X); otherwise the
    mode names the split: 2 DPX, 3 TPX, 4 QPX. One device is SPX only where the chip can be split at all
    (several XCCs); a single-XCC GPU is simply whole (None).
    """
    if count == 1:
        return "SPX" if (xcc_per_partition or 0) > 1 else None
    if xcc_per_partition == 1:
        return "CPX"
    return {2: "DPX", 3: "TPX", 4: "QPX"}.get(count)


def kfd_physical_gpus(nodes: list[tuple[int, dict[str, int]]]) -> list[dict]:
    """GPU dicts, one per physical GPU, from parsed KFD nodes ``(node number, properties)``.

    A partitioned GPU (MI300-class in DPX/QPX/CPX mode) shows one KFD node per partition, all with the
    card's ``unique_id`` and ``location_id`` = the card's PCI address plus the partition number (invented
    functions 0000:0a:00.1, .2, ...). They are grouped back into the card (by unique id, else by the
    address without its function): its bus id is the lowest, ``partitions`` lists the logical devices in
    node order, and ``compute_partition`` names the mode.
    """
    groups: dict[tuple, list[tuple[int, dict[str, int]]]] = {}
    for number, props in sorted(nodes, key=lambda node: node[0]):
        if not _kfd_is_gpu(props):
            continue
        unique = props.get("unique_id", 0)
        location = props.get("location_id", 0)
        if unique:
            key: tuple = ("uid", unique)
        else:
            key = ("pci", props.get("domain", 0), location >> 3) if location else ("node", number)
        groups.setdefault(key, []).append((number, props))
    gpus = []
    index = 0
    for members in groups.values():
        members.sort(key=lambda member: member[1].get("location_id", 0))
        first = members[0][1]
        gpu = kfd_gpu(first)
        partitions = []
        for _, props in members:
            part_location = props.get("location_id")
            simd_per_cu = props.get("simd_per_cu") or 0
            partitions.append(
                {
                    "index": index,
                    "pci_bus_id": _bus_id_from_bdf(props.get("domain", 0), part_location) if part_location else None,
                    "compute_units": props["simd_count"] // simd_per_cu if simd_per_cu else None,
                    "render_minor": props.get("drm_render_minor"),
                    "memory_bytes": props.get("local_mem_size") or props.get(KFD_BANK_BYTES) or None,
                }
            )
            index += 1
        xcc = first.get("num_xcc")
        mode = _partition_mode(len(members), xcc)
        if mode:
            gpu["compute_partition"] = mode
        if len(members) > 1:
            gpu["partitions"] = tuple(partitions)
            shares = [p["memory_bytes"] for p in partitions]
            if all(shares):  # each partition holds its share of the card's memory
                gpu["memory_bytes"] = sum(shares)
        gpus.append(gpu)
    return gpus


# -- amd-smi (ROCm 6.x / 7.x) -----------------------------------------------------------------------

_MIB = 1 << 20
_KERNEL_RELEASE = re.compile(r"Linux\s*version\s*(\d+\.\d+[^\s(]*)", re.IGNORECASE)


def _amd_smi_entries(data: Any) -> list[dict]:
    """The per-GPU objects of any amd-smi JSON: a list (ROCm 6.0-6.3) or ``{"gpu_data": [...]}`` (6.4+)."""
    if isinstance(data, dict):
        data = data.get("gpu_data", data.get("gpus"))
    if not isinstance(data, list):
        return []
    return [entry for entry in data if isinstance(entry, dict)]


def _measure(raw: Any) -> Optional[tuple[float, str]]:
    """``{"value": 300, "unit": "W"}`` or ``"300 W"`` -> (300.0, "w"); "N/A" -> None."""
    if isinstance(raw, dict):
        number, unit = _float(raw.get("value")), str(raw.get("unit") or "")
    else:
        match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z/]*)\s*", str(raw) if raw is not None else "")
        number, unit = (float(match[1]), match[2]) if match else (None, "")
    return (number, unit.lower()) if number is not None else None


#: amd-smi memory units: its "MB" and "GB" are binary (65520 MB on a 64 GiB MI210).
_AMD_SMI_UNITS = {"": _MIB, "b": 1, "kb": 1 << 10, "mb": _MIB, "gb": 1 << 30}


def _amd_smi_bytes(measure: Optional[tuple[float, str]]) -> Optional[int]:
    scale = _AMD_SMI_UNITS.get(measure[1]) if measure else None
    return int(measure[0] * scale) if measure and scale and measure[0] > 0 else None


def _section(entry: dict, *names: str) -> dict:
    for name in names:
        value = entry.get(name)
        if isinstance(value, dict):
            return value
    return {}


def _amd_smi_driver(raw: Any) -> Optional[str]:
    """The amdgpu version; the in-tree driver reports /proc/version squashed ("Linuxversion6.14.0-24-...")."""
    text = _value(raw)
    if text is None:
        return None
    kernel = _KERNEL_RELEASE.match(text)
    return kernel[1] if kernel else text


def _amd_smi_gpu(entry: dict) -> dict:
    asic = _section(entry, "asic")
    bus = _section(entry, "bus")
    vbios = _section(entry, "vbios", "ifwi")
    limit = _section(entry, "limit")
    vram = _section(entry, "vram")
    numa = _section(entry, "numa")
    board = _section(entry, "board")
    partition = _section(entry, "partition")
    memory = _measure(vram.get("size"))
    total_vram = _measure(_section(entry, "mem_usage").get("total_vram"))
    power = _measure(limit.get("socket_power")) or _measure(limit.get("max_power"))
    speed = _measure(bus.get("max_pcie_speed"))
    width = _int(bus.get("max_pcie_width"))
    numa_node = _int(numa.get("node"))
    serial = _value(asic.get("asic_serial")) or _value(board.get("product_serial"))
    index = entry.get("gpu")
    return _clean(
        {
            "vendor": "amd",
            "index": index if isinstance(index, int) and not isinstance(index, bool) else None,
            "pci_bus_id": _bus_id(bus.get("bdf") or entry.get("bdf")),
            "pci_vendor_id": _hex_id(asic.get("vendor_id")) or f"{_AMD_VENDOR_ID:04x}",
            "pci_device_id": _hex_id(asic.get("device_id")),
            "name": _value(asic.get("market_name")),
            "gfx_target": _value(asic.get("target_graphics_version")),
            "memory_bytes": _amd_smi_bytes(memory or total_vram),
            "uuid": None,  # amd-smi's uuid is not ROCr's "GPU-<unique id>"; the KFD node gives that
            "serial": serial if serial not in (None, "0", "0x0") else None,
            "vbios": _value(vbios.get("version")) or _value(vbios.get("part_number")),
            "power_limit_w": power[0] if power and power[1] == "w" and power[0] > 0 else None,
            "pcie_gen_max": _PCIE_GEN.get(speed[0]) if speed and speed[1] == "gt/s" else None,
            "pcie_width_max": width if width and width > 0 else None,
            "numa_node": numa_node if numa_node is not None and numa_node >= 0 else None,
            "compute_partition": _mode(
                partition.get("compute_partition") or partition.get("accelerator_partition")
                or entry.get("compute_partition"),
                COMPUTE_PARTITIONS,
            ),
            "memory_partition": _mode(partition.get("memory_partition") or entry.get("memory_partition"),
                                      MEMORY_PARTITIONS),
            "sources": ("amd-smi",),
        }
    )


def parse_amd_smi_json(text: str) -> AmdReport:
    """``amd-smi static --json`` (also ``metric`` and ``partition`` ``--json``) of ROCm 6.x and 7.x.

    Both layouts are read: the plain list of ROCm 6.0-6.3 and ``{"gpu_data": [...]}`` of later releases.
    Values come as ``{"value": v, "unit": u}`` or as strings with units; "N/A" is unknown. Lines around
    the JSON (amd-smi prints warnings first when a device is not accessible) are skipped.
    """
    entries = _amd_smi_entries(_json_document(text))
    drivers = (
        _amd_smi_driver(_section(e, "driver").get("version") or _section(e, "driver").get("driver_version"))
        for e in entries
    )
    return AmdReport(driver_version=next((d for d in drivers if d), None),
                     gpus=tuple(_amd_smi_gpu(e) for e in entries))
