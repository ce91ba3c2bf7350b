"""Parsers for what the NVIDIA driver tools print: nvidia-smi (XML, CSV, ``-q`` text, table, ``-L``,
``topo -m``), /proc/driver/nvidia/version and the NVML snapshot of :mod:`dlsetup.probe.nvml`.

Every GPU parser returns an :class:`SmiReport` whose ``gpus`` are plain dicts keyed by
:class:`dlsetup.model.GPU` field names, so that facts from several sources can be merged per
``pci_bus_id``. A value the tool could not give ("N/A", "[Not Supported]", ...) leaves its key out:
unknown is never guessed and never an exception. Only text that is not the expected format at all
raises :class:`SmiParseError`.

Pure functions: standard library and defusedxml only, Python 3.9+ (they also run on remote hosts).
"""

from __future__ import annotations

import csv
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence
from xml.etree.ElementTree import Element, ParseError

try:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring
except ImportError:  # a remote host with only the standard library reads its own nvidia-smi output
    from xml.etree.ElementTree import fromstring

    class DefusedXmlException(ValueError):  # type: ignore[no-redef]
        """Never raised without defusedxml."""

from dlsetup.errors import UsageError
from dlsetup.model import GPULink

#: Values nvidia-smi prints when it has no answer (compared lower-case, brackets removed).
_UNKNOWN = frozenset(
    {
        "",
        "n/a",
        "not supported",
        "requested functionality has been deprecated",
        "unknown error",
        "insufficient permissions",
        "no permission",
    }
)
_MIB = 1 << 20
_SIZE_UNITS = {"b": 1, "kib": 1 << 10, "mib": _MIB, "gib": 1 << 30, "tib": 1 << 40}
_BOOLS = {"enabled": True, "on": True, "yes": True, "disabled": False, "off": False, "no": False}
#: NVML ``nvmlDeviceGetArchitecture`` values (nvml.h ``NVML_DEVICE_ARCH_*``).
NVML_ARCHITECTURES = {
    2: "Kepler",
    3: "Maxwell",
    4: "Pascal",
    5: "Volta",
    6: "Turing",
    7: "Ampere",
    8: "Ada Lovelace",
    9: "Hopper",
    10: "Blackwell",
    13: "Rubin",
}
_VERSION = re.compile(r"\d+(?:\.\d+)+")
_BUS_ID = re.compile(r"(?:([0-9a-f]{4,8}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")


class SmiParseError(UsageError):
    """The text is not the nvidia-smi output the parser was asked to read."""


@dataclass(frozen=True)
class SmiReport:
    """What one nvidia-smi (or NVML) output says about the driver and its GPUs."""

    driver_version: Optional[str] = None
    cuda_version: Optional[str] = None  #: highest CUDA the driver supports, "13.0"
    gpus: tuple[dict, ...] = field(default=())  #: dicts keyed by :class:`dlsetup.model.GPU` fields


# -- value conversion: each returns None for "unknown" -------------------------------------------


def _known(value: Optional[str]) -> Optional[str]:
    """The value stripped, or None for nvidia-smi's many ways of saying "unknown"."""
    if value is None:
        return None
    text = value.strip()
    bare = text[1:-1].strip() if text.startswith("[") and text.endswith("]") else text
    return None if bare.lower() in _UNKNOWN else text


def _number(value: Optional[str]) -> Optional[tuple[float, str]]:
    """``"81559 MiB"`` -> ``(81559.0, "mib")``; the unit is "" when there is none."""
    text = _known(value)
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z/%]*)", text or "")
    return (float(match.group(1)), match.group(2).lower()) if match else None


def _int(value: Optional[str]) -> Optional[int]:
    """``"16x"``, ``"5"`` -> int."""
    parsed = _number(value)
    return int(parsed[0]) if parsed else None


def _bytes(value: Optional[str], unit: str = "mib") -> Optional[int]:
    """A memory size; ``unit`` applies when the value carries none (``--format=csv,nounits``)."""
    parsed = _number(value)
    if not parsed:
        return None
    scale = _SIZE_UNITS.get(parsed[1] or unit.lower())
    return int(parsed[0] * scale) if scale else None


def _watts(value: Optional[str]) -> Optional[float]:
    parsed = _number(value)
    return parsed[0] if parsed and parsed[1] in ("", "w") else None


def _bool(value: Optional[str]) -> Optional[bool]:
    text = _known(value)
    return _BOOLS.get(text.lower()) if text else None


def _version(value: Optional[str]) -> Optional[str]:
    """The leading dotted version: ``"610.62 [Deprecated; ...]"`` -> ``"610.62"``."""
    match = _VERSION.match(_known(value) or "")
    return match.group(0) if match else None


def _name(value: Optional[str]) -> Optional[str]:
    """The product name; "Graphics Device" (a driver older than the GPU) and truncated names are unknown."""
    text = _known(value)
    return None if text is None or text == "Graphics Device" or text.endswith("...") else text


def _vbios(value: Optional[str]) -> Optional[str]:
    """The VBIOS version; a vGPU guest's placeholder "00.00.00.00.00" is no version."""
    text = _known(value)
    return None if text is None or set(text) <= {"0", "."} else text


def normalize_bus_id(value: Optional[str]) -> Optional[str]:
    """``"00000000:00:06.0"`` or ``"00:06.0"`` -> ``"0000:00:06.0"`` (lower case)."""
    match = _BUS_ID.fullmatch((_known(value) or "").lower())
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return f"{(domain or '0000')[-4:]}:{bus}:{device}.{function}"


def _pci_ids(value: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """nvidia-smi's combined id ``"0x233010DE"`` -> (device ``"2330"``, vendor ``"10de"``).

    A half of 0000 or ffff is no real id (sanitised captures print ``000000DE``): both unknown.
    """
    match = re.fullmatch(r"(?:0x)?([0-9a-f]{4})([0-9a-f]{4})", (_known(value) or "").lower())
    if not match or {"0000", "ffff"} & set(match.groups()):
        return None, None
    return match.group(1), match.group(2)


def _subsystem(value: Optional[str]) -> Optional[str]:
    """``"0x16C110DE"`` (subsystem device, then vendor) -> ``"10de:16c1"``."""
    device, vendor = _pci_ids(value)
    return f"{vendor}:{device}" if device else None


def _compute_capability(value: Optional[str]) -> Optional[str]:
    text = _known(value)
    return text if text and re.fullmatch(r"\d+\.\d+", text) else None


def _gpu(source: str, **facts: Any) -> dict:
    """A GPU dict: the known facts plus vendor and source."""
    device_id, vendor_id = facts.pop("pci_ids", (None, None))
    facts.update(pci_device_id=device_id, pci_vendor_id=vendor_id)
    gpu = {key: value for key, value in facts.items() if value is not None}
    gpu.update(vendor="nvidia", sources=(source,))
    return gpu


# -- nvidia-smi -q -x ---------------------------------------------------------------------------


def _first_text(element: Element, *paths: str) -> Optional[str]:
    """The first known text among ``paths`` (alternatives across driver versions)."""
    for path in paths:
        text = _known(element.findtext(path))
        if text is not None:
            return text
    return None


def _xml_gpu(index: int, gpu: Element) -> dict:
    power = gpu.find("gpu_power_readings")
    if power is None:
        power = gpu.find("power_readings")
    if power is None:
        power = Element("power_readings")
    mig_devices = gpu.find("mig_devices")
    mig_enabled = _bool(gpu.findtext("mig_mode/current_mig"))
    link = "pci/pci_gpu_link_info/"
    return _gpu(
        "nvidia-smi",
        index=index,
        pci_bus_id=normalize_bus_id(_first_text(gpu, "pci/pci_bus_id") or gpu.get("id")),
        pci_ids=_pci_ids(gpu.findtext("pci/pci_device_id")),
        pci_subsystem_id=_subsystem(gpu.findtext("pci/pci_sub_system_id")),
        name=_name(gpu.findtext("product_name")),
        architecture=_known(gpu.findtext("product_architecture")),
        memory_bytes=_bytes(gpu.findtext("fb_memory_usage/total")),
        uuid=_known(gpu.findtext("uuid")),
        serial=_known(gpu.findtext("serial")),
        vbios=_vbios(gpu.findtext("vbios_version")),
        pcie_gen_max=_int(gpu.findtext(link + "pcie_gen/max_link_gen")),
        pcie_gen_current=_int(gpu.findtext(link + "pcie_gen/current_link_gen")),
        pcie_width_max=_int(gpu.findtext(link + "link_widths/max_link_width")),
        pcie_width_current=_int(gpu.findtext(link + "link_widths/current_link_width")),
        power_limit_w=_watts(
            _first_text(power, "current_power_limit", "enforced_power_limit", "power_limit",
                        "*/current_power_limit")
        ),
        power_default_w=_watts(_first_text(power, "default_power_limit", "*/default_power_limit")),
        ecc_enabled=_bool(gpu.findtext("ecc_mode/current_ecc")),
        mig_enabled=mig_enabled,
        # "<mig_devices>None</mig_devices>" on a GPU without MIG is unknown, as in the -q text
        mig_devices=None if mig_devices is None or mig_enabled is None else len(mig_devices.findall("mig_device")),
        persistence_mode=_bool(gpu.findtext("persistence_mode")),
    )


def parse_smi_xml(text: str) -> SmiReport:
    """``nvidia-smi -q -x``: every layout from driver 418 (no DTD) to DTD v13, Linux and Windows.

    Lines around the document (the driver's "WARNING: infoROM is corrupted at gpu ..." on stdout, a shell
    prompt in a paste) are not part of it.
    """
    start = min((i for i in (text.find("<?xml"), text.find("<nvidia_smi_log")) if i >= 0), default=0)
    end = text.rfind("</nvidia_smi_log>")
    text = text[start : end + len("</nvidia_smi_log>")] if end > start else text[start:]
    try:
        root = fromstring(text)
    except (ParseError, DefusedXmlException) as exc:
        raise SmiParseError(f"nvidia-smi XML cannot be read: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise SmiParseError(f"not nvidia-smi XML: the root element is <{root.tag}>")
    return SmiReport(
        driver_version=_version(root.findtext("driver_version")),
        cuda_version=_version(root.findtext("cuda_version")),
        gpus=tuple(_xml_gpu(i, gpu) for i, gpu in enumerate(root.findall("gpu"))),
    )


# -- nvidia-smi --query-gpu=... --format=csv ------------------------------------------------------

#: ``--query-gpu`` field -> (GPU dict key, converter taking (value, unit from the header)).
_CSV_FIELDS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "index": ("index", lambda v, u: _int(v)),
    "name": ("name", lambda v, u: _name(v)),
    "gpu_name": ("name", lambda v, u: _name(v)),
    "uuid": ("uuid", lambda v, u: _known(v)),
    "gpu_uuid": ("uuid", lambda v, u: _known(v)),
    "serial": ("serial", lambda v, u: _known(v)),
    "vbios_version": ("vbios", lambda v, u: _vbios(v)),
    "pci.bus_id": ("pci_bus_id", lambda v, u: normalize_bus_id(v)),
    "gpu_bus_id": ("pci_bus_id", lambda v, u: normalize_bus_id(v)),
    "pci.device_id": ("pci_ids", lambda v, u: _pci_ids(v)),
    "pci.sub_device_id": ("pci_subsystem_id", lambda v, u: _subsystem(v)),
    "memory.total": ("memory_bytes", lambda v, u: _bytes(v, u or "mib")),
    "power.limit": ("power_limit_w", lambda v, u: _watts(v)),
    "power.default_limit": ("power_default_w", lambda v, u: _watts(v)),
    "compute_cap": ("compute_capability", lambda v, u: _compute_capability(v)),
    "pcie.link.gen.max": ("pcie_gen_max", lambda v, u: _int(v)),
    "pcie.link.gen.current": ("pcie_gen_current", lambda v, u: _int(v)),
    "pcie.link.width.max": ("pcie_width_max", lambda v, u: _int(v)),
    "pcie.link.width.current": ("pcie_width_current", lambda v, u: _int(v)),
    "mig.mode.current": ("mig_enabled", lambda v, u: _bool(v)),
    "ecc.mode.current": ("ecc_enabled", lambda v, u: _bool(v)),
    "persistence_mode": ("persistence_mode", lambda v, u: _bool(v)),
}


def _csv_column(header: str) -> tuple[str, str]:
    """``"memory.total [MiB]"`` -> ``("memory.total", "mib")``."""
    match = re.fullmatch(r"\s*([^\[]*?)\s*(?:\[([^\]]*)\])?\s*", header)
    if not match:  # a "[" without its "]": no unit
        return header.strip().lower(), ""
    return match.group(1).lower(), (match.group(2) or "").lower()


def parse_smi_query_csv(text: str, fields: Optional[Sequence[str]] = None) -> SmiReport:
    """``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``, driven by the header.

    For ``noheader`` output pass the ``--query-gpu`` field names as ``fields``. Units may be in the
    header (``memory.total [MiB]``) or in the values (``81559 MiB``); unknown fields are ignored.
    """
    rows = [row for row in csv.reader(text.splitlines(), skipinitialspace=True) if any(row)]
    if fields is None:
        # the header is the first line naming a known field: a driver warning may come first on stdout
        known = (i for i, row in enumerate(rows) if any(_csv_column(c)[0] in _CSV_FIELDS for c in row))
        first = next(known, 0)
        if not rows:
            raise SmiParseError("nvidia-smi CSV is empty: expected a header line")
        header, rows = rows[first], rows[first + 1 :]
    else:
        header = list(fields)
    columns = [_csv_column(name) for name in header]
    if len(columns) > 1:  # a line with another column count ("WARNING: infoROM is corrupted ...") is no GPU
        rows = [row for row in rows if len(row) == len(columns)]
    if not any(name in _CSV_FIELDS or name == "driver_version" for name, _ in columns):
        raise SmiParseError(f"not nvidia-smi --query-gpu CSV: unknown header {','.join(header)[:80]!r}")
    driver = None
    gpus = []
    for row in rows:
        facts: dict[str, Any] = {}
        for (name, unit), value in zip(columns, row, strict=False):
            if name == "driver_version":
                driver = driver or _version(value)
            elif name in _CSV_FIELDS:
                key, convert = _CSV_FIELDS[name]
                facts.setdefault(key, convert(value, unit))
        gpus.append(_gpu("nvidia-smi", **facts))
    return SmiReport(driver_version=driver, gpus=tuple(gpus))


# -- nvidia-smi -q (plain text) ------------------------------------------------------------------


@dataclass
class _Node:
    """One line of ``nvidia-smi -q``: ``key : value``, or a section heading with children."""

    key: str
    value: Optional[str] = None
    children: list[_Node] = field(default_factory=list)

    def find(self, *path: str) -> Optional[_Node]:
        """The first descendant along ``path`` (keys compared case-insensitively: "Ecc Mode")."""
        node: Optional[_Node] = self
        for key in path:
            wanted = key.lower()
            node = next((c for c in node.children if c.key.lower() == wanted), None) if node else None
        return node

    def get(self, *path: str) -> Optional[str]:
        node = self.find(*path)
        return node.value if node else None

    def first(self, *keys: str) -> Optional[str]:
        """The first known value among the child ``keys`` (alternatives across driver versions)."""
        return next(filter(None, (_known(self.get(key)) for key in keys)), None)


def _q_tree(text: str) -> _Node:
    """The indentation tree of ``nvidia-smi -q`` output."""
    root = _Node("")
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for line in text.splitlines():
        content = line.strip()
        if not content or content.startswith("=="):
            continue
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        match = re.fullmatch(r"(.*?)\s+:\s?(.*)", content)
        node = _Node(match.group(1), match.group(2)) if match else _Node(content)
        stack[-1][1].children.append(node)
        stack.append((indent, node))
    return root


def _q_gpu(index: int, gpu: _Node) -> dict:
    power = gpu.find("GPU Power Readings") or gpu.find("Power Readings") or _Node("")
    # driver 610 moved the limits one level down, under "GPU Ceiling Power Limit"
    ceiling = power.find("GPU Ceiling Power Limit") or _Node("")
    mig_enabled = _bool(gpu.get("MIG Mode", "Current"))
    return _gpu(
        "nvidia-smi",
        index=index,
        pci_bus_id=normalize_bus_id(gpu.get("PCI", "Bus Id") or gpu.key.split()[-1]),
        pci_ids=_pci_ids(gpu.get("PCI", "Device Id")),
        pci_subsystem_id=_subsystem(gpu.get("PCI", "Sub System Id")),
        name=_name(gpu.get("Product Name")),
        architecture=_known(gpu.get("Product Architecture")),
        memory_bytes=_bytes(gpu.get("FB Memory Usage", "Total")),
        uuid=_known(gpu.get("GPU UUID")),
        serial=_known(gpu.get("Serial Number")),
        vbios=_vbios(gpu.get("VBIOS Version")),
        pcie_gen_max=_int(gpu.get("PCI", "GPU Link Info", "PCIe Generation", "Max")),
        pcie_gen_current=_int(gpu.get("PCI", "GPU Link Info", "PCIe Generation", "Current")),
        pcie_width_max=_int(gpu.get("PCI", "GPU Link Info", "Link Width", "Max")),
        pcie_width_current=_int(gpu.get("PCI", "GPU Link Info", "Link Width", "Current")),
        power_limit_w=_watts(
            power.first("Current Power Limit", "Enforced Power Limit", "Power Limit")
            or ceiling.first("Current Power Limit", "Enforced Power Limit")
        ),
        power_default_w=_watts(power.first("Default Power Limit") or ceiling.first("Default Power Limit")),
        ecc_enabled=_bool(gpu.get("ECC Mode", "Current")),
        mig_enabled=mig_enabled,
        mig_devices=None if mig_enabled is None else sum(c.key.lower() == "mig device" for c in gpu.children),
        persistence_mode=_bool(gpu.get("Persistence Mode")),
    )


def parse_smi_q_text(text: str) -> SmiReport:
    """``nvidia-smi -q``: sections by indentation; the MIG devices are repeated "MIG Device" sections.

    Windows drivers from 610 print "KMD Version" and "CUDA UMD Version", which are preferred over the
    deprecated "Driver Version" and "CUDA Version". Output without GPUs gives a report without GPUs.
    """
    root = _q_tree(text)
    gpus = [n for n in root.children if re.fullmatch(r"GPU [0-9A-Fa-f:.]+", n.key)]
    return SmiReport(
        driver_version=_version(root.get("KMD Version")) or _version(root.get("Driver Version")),
        cuda_version=_version(root.get("CUDA UMD Version")) or _version(root.get("CUDA Version")),
        gpus=tuple(_q_gpu(i, gpu) for i, gpu in enumerate(gpus)),
    )


# -- nvidia-smi (default table) -------------------------------------------------------------------

#: The header; a vGPU host's table (``nvidia-smi vgpu``) prints no CUDA version.
_TABLE_HEADER = re.compile(
    r"NVIDIA-SMI\s+\S+\s+(?:Driver|KMD) Version:\s+(\S+)(?:\s+CUDA (?:UMD )?Version:\s+(\S+))?"
)
_TABLE_GPU = re.compile(
    r"\|\s+(\d+)\s+(.+?)\s+(On|Off|WDDM|TCC|MCDM|N/A)\s*\|\s*([0-9A-Fa-f]+:[0-9A-Fa-f:.]+|N/A)\s+\S+\s*\|"
)  # a Jetson's integrated GPU ("Orin (nvgpu)") has no PCI bus id: "N/A"
#: A GPU row of the vGPU host table: index and name, then only the bus id (no Persistence-M, no Disp.A).
_VGPU_HOST_GPU = re.compile(r"\|\s+(\d+)\s+(.+?)\s*\|\s*([0-9A-Fa-f]+:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*\|")


def parse_smi_table(text: str) -> SmiReport:
    """``nvidia-smi`` without arguments: the boxed summary table (names may be cut short with "...").

    A table pasted with a common indent (a Markdown list, a mail quote) reads as the table itself.
    """
    text = textwrap.dedent(text)
    header = _TABLE_HEADER.search(text)
    lines = text.splitlines()
    gpus = []
    for number, line in enumerate(lines):
        match = _TABLE_GPU.match(line)
        if not match:
            host = _VGPU_HOST_GPU.match(line)
            if host:
                gpus.append(_gpu("nvidia-smi", index=int(host.group(1)), name=_name(host.group(2)),
                                 pci_bus_id=normalize_bus_id(host.group(3))))
            continue
        below = " ".join(lines[number + 1 : number + 3])
        power = re.search(r"(\S+)\s*/\s*(\d+)W\s*\|", below)
        memory = re.search(r"\d+MiB\s*/\s*(\d+)MiB", below)
        mig = re.search(r"(\S+)\s*\|\s*$", lines[number + 2]) if number + 2 < len(lines) else None
        gpus.append(
            _gpu(
                "nvidia-smi",
                index=int(match.group(1)),
                name=_name(match.group(2)),
                persistence_mode=_bool(match.group(3)),
                pci_bus_id=normalize_bus_id(match.group(4)),
                power_limit_w=float(power.group(2)) if power else None,
                memory_bytes=int(memory.group(1)) * _MIB if memory else None,
                mig_enabled=_bool(mig.group(1)) if mig else None,
            )
        )
    return SmiReport(
        driver_version=_version(header.group(1)) if header else None,
        cuda_version=_version(header.group(2)) if header and header.group(2) else None,
        gpus=tuple(gpus),
    )


# -- nvidia-smi -L, topo -m ----------------------------------------------------------------------


def parse_smi_list(text: str) -> list[tuple[int, str, str]]:
    """``nvidia-smi -L`` -> ``[(index, name, uuid), ...]``; the indented MIG lines are skipped."""
    pattern = re.compile(r"GPU (\d+): (.+?) \(UUID: (GPU-[0-9A-Fa-f-]+)\)")
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in map(pattern.match, text.splitlines()) if m]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_topo_matrix(text: str) -> tuple[GPULink, ...]:
    """``nvidia-smi topo -m`` -> the GPU-GPU links (``a < b``), e.g. ``GPULink(0, 1, "NV18")``.

    NIC columns, CPU/NUMA affinity columns and the legend are ignored.
    """
    rows = []
    for line in _ANSI.sub("", text).splitlines():
        if line.strip().startswith("Legend"):
            break
        tokens = line.split()
        if tokens and re.fullmatch(r"GPU\d+", tokens[0]):
            rows.append(tokens)
    if not rows:
        return ()
    header, rows = rows[0], rows[1:]  # the header row starts with the GPU0 column name too
    columns = [(k, int(name[3:])) for k, name in enumerate(header) if re.fullmatch(r"GPU\d+", name)]
    links = []
    for tokens in rows:
        a = int(tokens[0][3:])
        for k, b in columns:
            if a < b and k + 1 < len(tokens):
                links.append(GPULink(a=a, b=b, link=tokens[k + 1]))
    return tuple(links)


# -- /proc/driver/nvidia/version -------------------------------------------------------------------

_NVRM = re.compile(r"NVRM version:\s+NVIDIA UNIX\s+(Open Kernel Module for \S+|\S+ Kernel Module)\s+(\S+)")


def parse_proc_driver_version(text: str) -> tuple[Optional[str], Optional[str]]:
    """/proc/driver/nvidia/version -> (version, flavor ``"open"`` | ``"proprietary"``).

    ``NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ...`` is the
    open module, ``NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  <date>`` the proprietary.
    """
    match = _NVRM.search(text)
    if not match:
        return None, None
    flavor = "open" if match.group(1).startswith("Open") else "proprietary"
    return _version(match.group(2)), flavor


# -- sectioned capture files ----------------------------------------------------------------------

_RULE = re.compile(r"#{40,}\s*")


def split_capture(text: str) -> dict[str, str]:
    """A sectioned capture (``capture_*.txt``) -> section name -> body (leading/trailing blank lines cut).

    Each section opens with a block of ``#`` comment lines between two rules of ``#``; its name is the
    first comment line. The names found in the capture files are "nvidia_gpu_exporter GPU capture"
    (host notes), "capabilities :: version", "capabilities :: list (-L)", "capabilities :: topo -m",
    "capabilities :: nvlink -s", "capabilities :: help (-h)", "capabilities :: help-query-gpu" and
    the other help pages, "capabilities :: query-gpu field list (derived, used for query-gpu above)",
    "capabilities :: nvml-symbols", and for each of the prefixes "idle" and "load": "<p> :: nvidia-smi
    (default table)", "<p> :: query (-q)", "<p> :: query-gpu (csv, what the exporter parses)",
    "<p> :: query-compute-apps (per-process)", "<p> :: query-accounted-apps",
    "<p> :: query-retired-pages", "<p> :: pmon (per-process monitor)" and
    "<p> :: dmon (per-device monitor, incl. PCIe rx/tx)". A repeated name keeps its first section.
    """
    lines = text.splitlines()
    sections: dict[str, list[str]] = {}
    body: Optional[list[str]] = None
    i = 0
    while i < len(lines):
        if _RULE.fullmatch(lines[i]):
            end = i + 1
            while end < len(lines) and lines[end].startswith("#") and not _RULE.fullmatch(lines[end]):
                end += 1
            if end > i + 1 and end < len(lines):  # comment lines closed by a second rule
                body = sections.setdefault(lines[i + 1].lstrip("#").strip(), [])
                i = end + 1
                continue
        if body is not None:
            body.append(lines[i])
        i += 1
    return {name: "\n".join(part).strip("\n") for name, part in sections.items()}


# -- NVML snapshot ---------------------------------------------------------------------------------


def _nvml_int(device: Mapping[str, Any], key: str) -> Optional[int]:
    value = device.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _nvml_str(device: Mapping[str, Any], key: str) -> Optional[str]:
    value = device.get(key)
    return _known(value) if isinstance(value, str) else None


def _nvml_pair(device: Mapping[str, Any], key: str) -> tuple[Optional[int], Optional[int]]:
    value = device.get(key)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    return None, None


def _milliwatts(device: Mapping[str, Any], key: str) -> Optional[float]:
    value = _nvml_int(device, key)
    return value / 1000 if value is not None else None


def _flag(value: Optional[int]) -> Optional[bool]:
    return bool(value) if value is not None else None


def _nvml_gpu(index: int, device: Mapping[str, Any]) -> dict:
    major, minor = _nvml_pair(device, "cc")
    mig_current, _ = _nvml_pair(device, "mig")
    arch = _nvml_int(device, "arch")
    return _gpu(
        "nvml",
        index=index,
        pci_bus_id=normalize_bus_id(_nvml_str(device, "pci")),
        name=_name(_nvml_str(device, "name")),
        architecture=NVML_ARCHITECTURES.get(arch) if arch is not None else None,
        memory_bytes=_nvml_int(device, "memory"),
        compute_capability=f"{major}.{minor}" if major is not None else None,
        uuid=_nvml_str(device, "uuid"),
        serial=_nvml_str(device, "serial"),
        vbios=_vbios(_nvml_str(device, "vbios")),
        pcie_gen_max=_nvml_int(device, "pcie_gen_max"),
        pcie_width_max=_nvml_int(device, "pcie_width_max"),
        pcie_gen_current=_nvml_int(device, "pcie_gen_current"),
        pcie_width_current=_nvml_int(device, "pcie_width_current"),
        power_limit_w=_milliwatts(device, "power_limit_mw"),
        power_default_w=_milliwatts(device, "power_default_mw"),
        ecc_enabled=_flag(_nvml_int(device, "ecc")),
        mig_enabled=_flag(mig_current),
        mig_devices=_nvml_int(device, "mig_device_count"),
        persistence_mode=_flag(_nvml_int(device, "persistence")),
        cuda_cores=_nvml_int(device, "cores"),
        memory_bus_width_bits=_nvml_int(device, "bus_width"),
    )


def cuda_version_from_int(value: Any) -> Optional[str]:
    """NVML's CUDA driver version integer -> ``"13.0"`` (13000) or ``"12.2"`` (12020)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    return f"{value // 1000}.{value % 1000 // 10}"


def report_from_nvml_snapshot(data: Mapping[str, Any]) -> SmiReport:
    """The dict of :func:`dlsetup.probe.nvml.nvml_snapshot` (a bundle's ``nvml.json``) as a report.

    An error snapshot (``{"error": ..., "error_kind": ...}``) gives an empty report; entries of the
    wrong type are treated as unknown.
    """
    listed = data.get("devices")
    devices: Iterable[Any] = listed if isinstance(listed, list) else ()
    driver = data.get("driver")
    return SmiReport(
        driver_version=_version(driver) if isinstance(driver, str) else None,
        cuda_version=cuda_version_from_int(data.get("cuda_driver")),
        gpus=tuple(_nvml_gpu(i, device) for i, device in enumerate(devices) if isinstance(device, dict)),
    )
