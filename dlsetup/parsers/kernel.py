"""Parse what tells which kernels are installed, which one boots next and what DKMS built for each.

Pure functions over text: ``dkms status`` (both the dkms 2 layout ``nvidia, 396.45, 4.17.11-200.fc28.x86_64,
x86_64: installed`` and the dkms 3 layout ``nvidia/535.86.05, 6.5.0-060500rc5-generic, x86_64: installed``),
GRUB's ``grub.cfg``, ``grubenv`` and ``/etc/default/grub``, and a DKMS ``make.log``.
Standard library only, Python 3.9+ (runs on remote hosts too).
"""

from __future__ import annotations

import re
from typing import Iterable, List, NamedTuple, Optional, Tuple


class DkmsEntry(NamedTuple):
    module: str  #: "nvidia", "amdgpu", ...
    version: str  #: the module's version, "580.95.05"
    kernel: Optional[str]  #: None for a module only "added" (not built for any kernel)
    arch: Optional[str]
    state: str  #: "installed", "built", "added", ...
    note: str = ""  #: what follows the state: "(original_module exists)", "(WARNING! Diff between ...)"


_DKMS_STATE = re.compile(r":\s*(?P<state>[a-z][a-z -]*?)\s*(?P<note>\(.*\))?\s*$")


def parse_dkms_status(text: str) -> Tuple[DkmsEntry, ...]:
    """The entries of ``dkms status``; lines that are not entries (warnings, errors) are skipped."""
    entries: List[DkmsEntry] = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith(("Error", "Warning", "WARNING", "Deprecated")):
            continue
        head, sep, _ = line.rpartition(":")
        match = _DKMS_STATE.search(line[len(head):]) if sep else None
        if not match:
            continue
        parts = [p.strip() for p in head.split(",")]
        if "/" in parts[0]:  # dkms 3: module/version, kernel, arch
            module, _, version = parts[0].partition("/")
            rest = parts[1:]
        elif len(parts) >= 2:  # dkms 2: module, version, kernel, arch
            module, version, rest = parts[0], parts[1], parts[2:]
        else:
            continue
        if not module or not version or not re.match(r"^[\w.+~-]+$", module + version):
            continue
        kernel = rest[0] if rest else None
        arch = rest[1] if len(rest) > 1 else None
        entries.append(DkmsEntry(module, version, kernel or None, arch or None, match["state"],
                                 (match["note"] or "").strip()))
    return tuple(entries)


_VERSION_PART = re.compile(r"\d+|[A-Za-z]+")


def version_key(release: str) -> Tuple:
    """A sort key for kernel releases: numbers compare as numbers ("6.8.0-45" < "6.8.0-100")."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _VERSION_PART.findall(release))


def newest(releases: Iterable[str]) -> Optional[str]:
    found = sorted(releases, key=version_key)
    return found[-1] if found else None


_KEY_VALUE = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def parse_shell_vars(text: str) -> dict:
    """``KEY=value`` lines of /etc/default/grub or grubenv; quotes removed, comments skipped."""
    values = {}
    for line in (text or "").splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _KEY_VALUE.match(line)
        if match:
            value = match["value"].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[match["key"]] = value
    return values


class GrubEntry(NamedTuple):
    title: str  #: the menu entry's title, submenu titles joined with ">"
    id: str  #: its --id (``$menuentry_id_option``), "" when none
    kernel: Optional[str]  #: the release of the vmlinuz-<release> its linux line boots


_MENU = re.compile(r"^\s*(?P<kind>menuentry|submenu)\s+(?P<quote>['\"])(?P<title>.*?)(?P=quote)(?P<rest>.*)$")
_ID = re.compile(r"\$menuentry_id_option\s+['\"]?(?P<id>[^'\"\s]+)")
_LINUX = re.compile(r"^\s*linux(?:efi|16)?\s+\S*?vmlinuz-(?P<kernel>\S+)")


def parse_grub_cfg(text: str) -> Tuple[GrubEntry, ...]:
    """The boot entries of grub.cfg in menu order (submenu entries in place), with the kernel of each."""
    entries: List[GrubEntry] = []
    stack: List[Tuple[str, str, int]] = []  # (kind, title, brace depth when opened)
    depth = 0
    current: Optional[List] = None  # [title, id, kernel] of the menuentry being read
    for line in (text or "").splitlines():
        menu = _MENU.match(line)
        if menu:
            ident = _ID.search(menu["rest"])
            path = [t for k, t, _ in stack if k == "submenu"] + [menu["title"]]
            stack.append((menu["kind"], menu["title"], depth))
            if menu["kind"] == "menuentry":
                current = [">".join(path), ident["id"] if ident else "", None]
                entries.append(GrubEntry(*current))
        elif current is not None:
            linux = _LINUX.match(line)
            if linux and current[2] is None:
                current[2] = linux["kernel"]
                entries[-1] = GrubEntry(*current)
        depth += line.count("{") - line.count("}")
        while stack and depth <= stack[-1][2]:
            kind, _, _ = stack.pop()
            if kind == "menuentry":
                current = None
    return tuple(entries)


def grub_default(entries: Tuple[GrubEntry, ...], default: str, saved_entry: Optional[str]) -> Optional[GrubEntry]:
    """The entry GRUB boots: ``default`` is GRUB_DEFAULT ("0", "saved", "1>2", a title or an id)."""
    default = (default or "0").strip()
    if default == "saved":
        default = (saved_entry or "0").strip()
    if not entries:
        return None
    if re.fullmatch(r"\d+", default):
        index = int(default)
        top = _top_level(entries)
        return top[index] if index < len(top) else None
    if re.fullmatch(r"\d+(>\d+)+", default):
        return _by_path(entries, [int(i) for i in default.split(">")])
    for entry in entries:  # a title path ("Advanced options for Ubuntu>Ubuntu, with Linux 6.8.0-45-generic") or id
        if default in (entry.title, entry.id) or entry.id.endswith(default) or entry.title.endswith(default):
            return entry
    for entry in entries:  # "gnulinux-advanced-UUID>gnulinux-6.8.0-45-generic-advanced-UUID": the last id
        last = default.split(">")[-1]
        if entry.id and last == entry.id:
            return entry
    return None


def _top_level(entries: Tuple[GrubEntry, ...]) -> List[GrubEntry]:
    """The top-level menu: a submenu counts as one item (its first entry stands for it)."""
    seen, top = set(), []
    for entry in entries:
        if ">" in entry.title:
            head = entry.title.split(">")[0]
            if head in seen:
                continue
            seen.add(head)
        top.append(entry)
    return top


def _by_path(entries: Tuple[GrubEntry, ...], path: List[int]) -> Optional[GrubEntry]:
    top = _top_level(entries)
    if path[0] >= len(top) or ">" not in top[path[0]].title:
        return None
    submenu = top[path[0]].title.split(">")[0]
    inside = [e for e in entries if e.title.startswith(submenu + ">")]
    return inside[path[1]] if path[1] < len(inside) else None


def kernel_in(text: str, releases: Iterable[str]) -> Optional[str]:
    """The longest of ``releases`` that ``text`` names (a saved_entry or GRUB_DEFAULT title)."""
    found = [r for r in releases if r and r in (text or "")]
    return max(found, key=len) if found else None


_ERROR = re.compile(r"(?:error:|Error\b|\*\*\*|fatal error|ERROR)", re.IGNORECASE)


def make_log_failure(text: str) -> Optional[str]:
    """The first compiler/make error line of a DKMS ``make.log``, or None when the build shows none."""
    for line in (text or "").splitlines():
        if _ERROR.search(line) and "warning:" not in line.lower():
            return line.strip()[:300]
    return None
