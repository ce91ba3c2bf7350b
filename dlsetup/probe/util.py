"""Small helpers shared by the readers."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, Optional


def fields_of(cls: type, data: Dict[str, Any]) -> Dict[str, Any]:
    """The items of ``data`` that are fields of dataclass ``cls`` and known (not None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names and v is not None}


def merge_layers(layers: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge fact layers, most trusted first: a key keeps the first known value; ``sources`` accumulate."""
    merged: Dict[str, Any] = {}
    sources: list = []
    for layer in layers:
        for key, value in layer.items():
            if key == "sources":
                sources.extend(s for s in value if s not in sources)
            elif value is not None and merged.get(key) is None:
                merged[key] = value
    merged["sources"] = tuple(sources)
    return merged


def int_or_none(text: Optional[str], base: int = 10) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(text.strip(), base)
    except ValueError:
        return None
