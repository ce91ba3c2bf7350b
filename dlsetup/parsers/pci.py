"""PCI names and listings: the ``pci.ids`` database and ``lspci -nnmmv`` output.

``pci.ids`` (https://pci-ids.ucw.cz/, shipped by pciutils/hwdata at ``/usr/share/misc/pci.ids`` or
``/usr/share/hwdata/pci.ids``) lists vendors sorted by id, each followed by its tab-indented devices::

    10de  NVIDIA Corporation
        2330  GH100 [H100 SXM5 80GB]
                10de 16c1  H100 SXM5 80GB
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: lspci PCI vendor ids of the GPU makers, as GPU.vendor names them.
GPU_VENDORS = {"10de": "nvidia", "1002": "amd", "8086": "intel"}

_BRACKETED_ID = re.compile(r"^(?P<name>.*?)\s*\[(?P<id>[0-9a-fA-F]{4})\]$")
_SLOT = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})\.(?P<fn>[0-7])$"
)
_HEX4 = re.compile(r"^[0-9a-f]{4}$")


def lookup_pci_ids(text: str, vendor_id: str, device_id: str) -> tuple[str | None, str | None]:
    """(vendor name, device name) for an id pair in a ``pci.ids`` text; None for what is not listed.

    The scan stops at the end of the vendor's block, so the class list and later vendors are not read.
    """
    vendor_id, device_id = vendor_id.lower(), device_id.lower()
    if not (_HEX4.match(vendor_id) and _HEX4.match(device_id)):
        return None, None
    start = 0
    while True:  # the vendor line: at a line start, not indented (so not a device of another vendor)
        start = text.find(vendor_id + "  ", start)
        if start < 0:
            return None, None
        if start == 0 or text[start - 1] == "\n":
            break
        start += 1
    lines = _lines_from(text, start)
    vendor = next(lines)[6:].strip() or None
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        if not line.startswith("\t"):
            break  # next vendor
        if not line.startswith("\t\t") and line[1:5].lower() == device_id:
            return vendor, line[5:].strip() or None
    return vendor, None


def _lines_from(text: str, start: int) -> Iterator[str]:
    """The lines of ``text`` from offset ``start``, split lazily (pci.ids is over a megabyte)."""
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield text[start:end].rstrip("\r")
        start = end + 1


def _bus_id(slot: str) -> str | None:
    """``bb:dd.f`` or ``dddd:bb:dd.f`` normalised to ``dddd:bb:dd.f`` lowercase."""
    match = _SLOT.match(slot.strip())
    if not match:
        return None
    domain = int(match["domain"] or "0", 16)
    return f"{domain:04x}:{match['bus']}:{match['dev']}.{match['fn']}".lower()


def _split(value: str | None) -> tuple[str | None, str | None]:
    """``"NVIDIA Corporation [10de]"`` -> ("NVIDIA Corporation", "10de")."""
    text = (value or "").strip()
    match = _BRACKETED_ID.match(text)
    if not match:
        return text or None, None
    return match["name"] or None, match["id"].lower()


def _device(fields: dict[str, str]) -> dict[str, object] | None:
    bus_id = _bus_id(fields.get("Slot", ""))
    _, vendor_id = _split(fields.get("Vendor"))
    name, device_id = _split(fields.get("Device"))
    if bus_id is None or vendor_id is None or device_id is None:
        return None
    device: dict[str, object] = {
        "pci_bus_id": bus_id,
        "pci_vendor_id": vendor_id,
        "pci_device_id": device_id,
        "name": name,
    }
    _, class_id = _split(fields.get("Class"))
    if class_id:
        device["pci_class"] = class_id
    _, subvendor = _split(fields.get("SVendor"))
    _, subdevice = _split(fields.get("SDevice"))
    if subvendor and subdevice:
        device["pci_subsystem_id"] = f"{subvendor}:{subdevice}"
    if fields.get("Driver"):
        device["kernel_driver"] = fields["Driver"]
    if vendor_id in GPU_VENDORS and (class_id or "").startswith("03"):
        device["vendor"] = GPU_VENDORS[vendor_id]
    return device


def parse_lspci_nnmmv(text: str) -> list[dict[str, object]]:
    """Every device of ``lspci -nnmmv`` (``-k`` adds ``Driver``), as GPU field names.

    Keys: ``pci_bus_id`` ("0000:00:0f.0"), ``pci_vendor_id``, ``pci_device_id``, ``name`` (the device
    name lspci prints), ``pci_class`` ("0300"), ``pci_subsystem_id`` ("15ad:0405"), ``kernel_driver``,
    and ``vendor`` ("nvidia", "amd", "intel") for display controllers of GPU makers. The revision is
    not kept: the model has no field for it. Records without a slot, vendor or device id are skipped.
    """
    devices = []
    for record in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        device = _device(fields)
        if device is not None:
            devices.append(device)
    return devices
