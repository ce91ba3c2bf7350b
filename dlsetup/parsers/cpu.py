"""Parse ``/proc/cpuinfo`` and ``lscpu`` (text, ``-p`` and ``-J``) into :class:`~dlsetup.model.CPUInfo` keys.

Each parser returns only the keys it could read; :func:`merge_cpu` combines them. Nothing here raises on
unreadable input: a line or value that cannot be read is skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

_BASE_CLOCK = re.compile(r"@\s*(\d+(?:\.\d+)?)\s*GHz", re.IGNORECASE)
_SIZE = re.compile(
    r"^(?P<num>\d+(?:[.,]\d+)?)\s*(?P<unit>[KMGT]?)(?P<iec>i?B)?(?:\s*\((?P<inst>\d+) instances?\))?$"
)
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

#: x86 parts ship SMT of at most 2 threads per core; POWER goes up to 8. More is a broken topology.
_MAX_THREADS_PER_CORE = 8
#: The fastest shipping x86 boost clock is 6.2 GHz; a "CPU max MHz" above this limit is a firmware
#: or cpufreq artefact (acpi-cpufreq reports 6605 MHz on some Zen 2 Threadrippers).
_MAX_PLAUSIBLE_MHZ = 6300.0
#: ACPI P-state tables round the nominal clock (a 2.00 GHz part lists 1996 MHz); allow that much.
_ROUNDING = 0.01


def _int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    """A number as lscpu prints it, also with a decimal comma ("4700,0000") under some locales."""
    try:
        return float(value.strip().replace(",", ".")) if value is not None else None
    except ValueError:
        return None


def _base_mhz(model: str | None) -> float | None:
    """The nominal clock when the model name states it ("... @ 2.10GHz"), else None."""
    match = _BASE_CLOCK.search(model or "")
    return round(float(match.group(1)) * 1000.0, 3) if match else None


def _model(name: str | None) -> str | None:
    """Model name with runs of spaces collapsed ("CPU           X7550  @ 2.00GHz")."""
    cleaned = " ".join((name or "").split())
    return cleaned or None


def _flag_keys(flags: Iterable[str]) -> dict[str, Any]:
    found = set(flags)
    return {
        "avx2": "avx2" in found,
        "avx512f": "avx512f" in found,
        "avx512_extensions": tuple(sorted(f for f in found if f.startswith("avx512"))),
        "amx": "amx_tile" in found,
    }


def _blocks(text: str) -> Iterator[dict[str, str]]:
    """The blank-line separated ``key : value`` blocks of /proc/cpuinfo."""
    block: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not line.strip():
            if block:
                yield block
            block = {}
        elif sep:
            block[key.strip()] = value.strip()
    if block:
        yield block


def _hybrid(processors: list[dict[str, str]], vendor: str | None) -> bool | None:
    """Whether the package mixes performance and efficiency cores, from evidence only.

    Intel hybrid parts give SMT to performance cores but never to efficiency cores, so a package
    where some cores run two threads and others one is hybrid (i7-1270P: 4 P-cores x 2 threads +
    8 E-cores = 16 siblings on 12 cores). That reading is only sound when every CPU is online: an
    offlined SMT sibling leaves a gap in the ``processor`` numbers and the same lopsided pattern, so
    gaps make the answer unknown. Every core running two or more threads rules hybrid out; every core
    running one thread (SMT off, or a hybrid part without SMT) cannot tell, so the answer is None.
    """
    numbers = sorted(n for n in (_int(p.get("processor")) for p in processors) if n is not None)
    if not numbers or numbers != list(range(len(numbers))):
        return None
    threads: dict[tuple[str, str], int] = {}
    for proc in processors:
        if "physical id" not in proc or "core id" not in proc:
            return None
        core = (proc["physical id"], proc["core id"])
        threads[core] = threads.get(core, 0) + 1
    counts = set(threads.values())
    if min(counts) >= 2:
        return False
    if len(counts) > 1 and vendor == "GenuineIntel":
        return True
    return None


def parse_proc_cpuinfo(text: str) -> dict[str, Any]:
    """CPUInfo keys from ``/proc/cpuinfo``.

    The ``cache size`` line is left alone: on AMD it is the per-core L2, not the L3, so it cannot give
    ``l3_cache_bytes``. ``base_mhz`` is taken only from a model name that states it; ``cpu MHz`` is the
    momentary clock.
    """
    processors = [b for b in _blocks(text) if "processor" in b]
    if not processors:
        return {}
    first = processors[0]
    out: dict[str, Any] = {"logical_cpus": len(processors)}
    model = _model(first.get("model name"))
    if model:
        out["model"] = model
        base = _base_mhz(model)
        if base is not None:
            out["base_mhz"] = base
    if first.get("vendor_id"):
        out["vendor"] = first["vendor_id"]
    packages = {p["physical id"] for p in processors if "physical id" in p}
    if packages:
        out["sockets"] = len(packages)
    cores = {(p["physical id"], p["core id"]) for p in processors if "physical id" in p and "core id" in p}
    if cores:
        out["physical_cores"] = len(cores)
    if "flags" in first:
        out.update(_flag_keys(first["flags"].split()))
    hybrid = _hybrid(processors, out.get("vendor"))
    if hybrid is not None:
        out["hybrid"] = hybrid
    return out


def _size(value: str) -> tuple[int, bool] | None:
    """(bytes, is_total) of an lscpu cache size.

    util-linux 2.34 and later print the sum over all instances with IEC units ("1.5 MiB",
    "300 MiB (1 instance)"); older releases print the size of one instance ("32K", "16384K").
    """
    match = _SIZE.match(value.strip())
    if not match:
        return None
    number = _float(match["num"])
    if number is None:
        return None
    total = bool(match["iec"]) or match["inst"] is not None
    return int(number * _UNIT[match["unit"]]), total


#: lscpu keys that belong to one core type: util-linux 2.36+ prints them once per "Model name" block on a
#: heterogeneous (big.LITTLE / DynamIQ) ARM system.
_BLOCK_KEYS = frozenset({"Model name", "Model", "Thread(s) per core", "Core(s) per socket", "Core(s) per cluster",
                         "Socket(s)", "Cluster(s)", "Stepping", "CPU max MHz", "CPU min MHz", "BogoMIPS", "Flags"})


class _Collector:
    """Collects ``key: value`` pairs: the first value of each key, and one dict per "Model name" block."""

    def __init__(self) -> None:
        self.pairs: dict[str, str] = {}
        self.blocks: list[dict[str, str]] = []

    def add(self, key: str, value: str) -> None:
        if key == "Model name":
            self.blocks.append({})
        if key in _BLOCK_KEYS and self.blocks:
            self.blocks[-1].setdefault(key, value)
        self.pairs.setdefault(key, value)

    def extend(self, key: str, more: str) -> None:
        self.pairs[key] += more
        if key in _BLOCK_KEYS and self.blocks and key in self.blocks[-1]:
            self.blocks[-1][key] += more


def _pairs(text: str) -> tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]:
    """``key: value`` pairs of lscpu's human output and the rows of an appended ``lscpu -p`` table.

    Keys are normalised so the tree layout of util-linux 2.38+ ("Caches (sum of all):" then "L3:")
    reads like the flat one ("L3 cache:"). A value wrapped onto the next lines at the terminal width
    (long Flags) is joined back, cut at the value's column as lscpu wraps mid-word. Of several ``-p``
    tables (``-p`` then ``-p --physical``) only the first is read: each numbers the cores its own way.
    Its rows are dicts keyed by the ``# CPU,Core,Socket,...`` header.
    """
    found = _Collector()
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    last: str | None = None
    column = 0
    for line in text.splitlines():
        if line.startswith("#"):
            last = None
            if line.startswith("# CPU,"):
                header = None if rows else line[2:].strip().split(",")
            continue
        if header is not None and re.fullmatch(r"\d+(,[^,]*)+", line.strip()):
            rows.append(dict(zip(header, line.strip().split(","), strict=False)))
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip():
            last = _key(key)
            found.add(last, value.strip())
            column = len(line) - len(value.lstrip())
        elif last is not None and line.strip() and line[:column].strip() == "" and last in found.pairs:
            found.extend(last, line[column:].rstrip())
    return found.pairs, rows, found.blocks


def _key(raw: str) -> str:
    key = raw.strip()
    return f"{key} cache" if re.fullmatch(r"L\d[di]?", key) else key


def _plausible_max(max_mhz: float | None, floor: float | None) -> float | None:
    """max MHz unless it is below the base/min clock or beyond any shipping part."""
    if max_mhz is None or max_mhz <= 0 or max_mhz > _MAX_PLAUSIBLE_MHZ:
        return None
    if floor is not None and max_mhz < floor * (1 - _ROUNDING):
        return None
    return max_mhz


#: lscpu "Vendor ID" of Arm licensees that make only system-on-chip parts, one package per system: NVIDIA
#: (Tegra: Carmel, Denver), Qualcomm (Kryo, Falkor: Snapdragon, and the Centriq server, single-socket
#: only), Samsung (Exynos), Apple. Server vendors (HiSilicon Kunpeng, Cavium ThunderX, Ampere) are not.
_SOC_VENDORS = frozenset({"nvidia", "qualcomm", "samsung", "apple"})


def _embedded_arm(pairs: dict[str, str]) -> bool:
    """A system-on-chip Arm part, never more than one package per system: an Arm Ltd. Cortex-A core
    (Jetson Orin, phones, boards) or a core of a SoC-only vendor (:data:`_SOC_VENDORS`). Server parts
    (Neoverse in Grace and Ampere, Kunpeng, ThunderX) do come in several sockets."""
    vendor, model = pairs.get("Vendor ID"), pairs.get("Model name") or ""
    return (vendor == "ARM" and model.startswith("Cortex-A")) or (vendor or "").lower() in _SOC_VENDORS


def _block_cores(block: dict[str, str], embedded: bool) -> tuple[int | None, int | None]:
    """(cores, clusters) of one lscpu core-type block.

    Newer lscpu prints "Cluster(s)" and "Core(s) per cluster" for Arm; older releases call the clusters
    of a Cortex-A part "Socket(s)" (a Jetson AGX Orin: "Core(s) per socket: 4", "Socket(s): 3").
    """
    per = _int(block.get("Core(s) per cluster")) or _int(block.get("Core(s) per socket"))
    clusters = _int(block.get("Cluster(s)"))
    sockets = _int(block.get("Socket(s)"))
    if clusters is None and embedded and sockets:
        clusters = sockets
    count = clusters or sockets
    return (per * count if per and count else None), clusters


def _from_pairs(pairs: dict[str, str], rows: list[dict[str, str]],
                blocks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    blocks = blocks or []
    models = list(dict.fromkeys(m for m in (_model(b.get("Model name")) for b in blocks) if m))
    model = " + ".join(models) if len(models) > 1 else _model(pairs.get("Model name"))
    if model:
        out["model"] = model
    if pairs.get("Vendor ID"):
        out["vendor"] = pairs["Vendor ID"]
    embedded = _embedded_arm(pairs)
    logical = _int(pairs.get("CPU(s)"))
    sockets = _int(pairs.get("Socket(s)"))
    per_socket = _int(pairs.get("Core(s) per socket"))
    threads = _int(pairs.get("Thread(s) per core"))
    numa = _int(pairs.get("NUMA node(s)"))
    if embedded and sockets:
        sockets = 1  # the "sockets" of a Cortex-A part are its clusters
    for key, value in (("logical_cpus", logical), ("sockets", sockets), ("numa_nodes", numa)):
        if value is not None and value > 0:
            out[key] = value

    # older lscpu prints the core counts before "Model name": a single block reads the whole output
    counted = [_block_cores(b, embedded) for b in blocks] if len(blocks) > 1 else [_block_cores(pairs, embedded)]
    cores_seen = {(r["Socket"], r["Core"]) for r in rows if r.get("Socket") and r.get("Core")}
    cores: int | None
    if len(blocks) > 1:
        # one block per core type: core ids restart in each cluster, so -p rows undercount
        cores = sum(c or 0 for c, _ in counted) if all(c for c, _ in counted) else None
        out["clusters"] = sum(k or 1 for _, k in counted)
        if len(models) > 1:
            out["hybrid"] = True
    elif counted and counted[0][1]:
        cores, out["clusters"] = counted[0]
    elif cores_seen:
        cores = len(cores_seen)
    elif sockets and per_socket:
        cores = sockets * per_socket
    else:
        cores = None
    topology_ok = threads is None or 1 <= threads <= _MAX_THREADS_PER_CORE
    if cores and topology_ok and (logical is None or cores <= logical):
        out["physical_cores"] = cores

    for level in ("L2", "L3"):
        size = _size(pairs.get(f"{level} cache", ""))
        if size is None:
            continue
        nbytes, total = size
        instances = {r[level] for r in rows if r.get(level)}
        if total:
            out[f"{level.lower()}_cache_bytes"] = nbytes
        elif instances:
            out[f"{level.lower()}_cache_bytes"] = nbytes * len(instances)

    base = _base_mhz(model)
    if base is not None:
        out["base_mhz"] = base
    floor = base if base is not None else _float(pairs.get("CPU min MHz"))
    max_mhz = _plausible_max(_float(pairs.get("CPU max MHz")), floor)
    if len(blocks) > 1:  # the fastest core type's clock
        clocks = [_plausible_max(_float(b.get("CPU max MHz")), _float(b.get("CPU min MHz"))) for b in blocks]
        max_mhz = max((c for c in clocks if c is not None), default=None)
    if max_mhz is not None:
        out["max_mhz"] = max_mhz
    if pairs.get("Hypervisor vendor"):
        out["hypervisor"] = pairs["Hypervisor vendor"]
    if "Flags" in pairs:
        out.update(_flag_keys(pairs["Flags"].split()))
    return out


def parse_lscpu(text: str) -> dict[str, Any]:
    """CPUInfo keys (plus ``hypervisor``) from ``lscpu`` human output, with or without ``lscpu -p``.

    Cache sizes are totals over all instances. Old util-linux prints one instance's size; its total is
    given only when an appended ``lscpu -p`` section counts the instances, else the key is left out.
    Physical cores come from ``-p`` when present, else from sockets x cores per socket, and are dropped
    when the topology is impossible (a Xen guest reporting 112 threads per core).
    """
    return _from_pairs(*_pairs(text))


def _json_fields(entries: Any, into: _Collector) -> None:
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        field, data = entry.get("field"), entry.get("data")
        if isinstance(field, str) and isinstance(data, (str, int, float)):
            into.add(_key(field.rstrip(":")), str(data))
        _json_fields(entry.get("children"), into)


def parse_lscpu_json(text: str) -> dict[str, Any]:
    """CPUInfo keys from ``lscpu -J`` (flat, or nested ``children`` in util-linux 2.38+)."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    found = _Collector()
    if isinstance(document, dict):
        _json_fields(document.get("lscpu"), found)
    return _from_pairs(found.pairs, [], found.blocks)


def merge_cpu(*sources: dict[str, Any]) -> dict[str, Any]:
    """Combine parser results; for each key the first source with a non-None value wins.

    Pass the most exact source first: ``lscpu`` (text with ``-p``), then ``lscpu -J``, then
    ``/proc/cpuinfo``. lscpu reads sysfs topology and cache data; /proc/cpuinfo fills what it lacks
    (hybrid, flags on systems without lscpu). An empty ``avx512_extensions`` counts as unknown.
    """
    merged: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            if merged.get(key) in (None, ()) and value is not None:
                merged[key] = value
    return merged
