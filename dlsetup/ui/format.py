"""Formatting helpers shared by the views."""

from __future__ import annotations

from typing import Any, Optional

UNKNOWN = "[dim]unknown[/dim]"


def size(num: Optional[int], binary: bool = True) -> str:
    """Bytes as "126.0 GiB" (binary) or "85.5 GB" (decimal)."""
    if num is None:
        return UNKNOWN
    step, units = ((1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB")) if binary
                   else (1000.0, ("B", "kB", "MB", "GB", "TB", "PB")))
    value = float(num)
    for unit in units:
        if abs(value) < step or unit == units[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    raise AssertionError("unreachable")


def val(value: Any, suffix: str = "") -> str:
    if value is None or value == "":
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value}{suffix}"
