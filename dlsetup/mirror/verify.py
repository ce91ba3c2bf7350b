"""Check a mirror folder before a run changes anything: the key is the pinned one, the manifest and every
apt repository's ``InRelease`` are signed by it, every file the manifest lists has its sha256 and size, and
the mirror covers every host's plan. Each refusal is one line (:class:`~dlsetup.errors.UsageError`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from dlsetup.errors import UsageError
from dlsetup.mirror import keys
from dlsetup.mirror.build import FINGERPRINT, KEY, MANIFEST, SIGNATURE, listed_files, package_names, sha256
from dlsetup.mirror.contents import Contents, missing


class MirrorRefused(UsageError):
    """The mirror is tampered with, signed by another key, or does not cover a plan."""


@dataclass(frozen=True)
class Mirror:
    """A verified mirror folder."""

    root: Path
    fingerprint: str
    manifest: Mapping[str, Any]

    def available(self) -> Dict[str, List[str]]:
        """apt repository -> the package names its signed index lists."""
        return {path.name: package_names(path) for path in sorted((self.root / "apt").glob("*")) if path.is_dir()}

    def wheel_sets(self) -> Dict[str, List[str]]:
        return {key: list(entry.get("requirements", [])) for key, entry in self.manifest.get("wheels", {}).items()}


def pinned_fingerprint(root: Path, pinned: Optional[str]) -> str:
    """The fingerprint the mirror must be signed with: the one given, else this controller's own mirror key
    when it has one, else the one recorded in the folder (the mirror was made elsewhere)."""
    if pinned:
        return keys.key_rules().normalise_fingerprint(pinned)
    own = keys.data_dir() / "mirror-gnupg" / "fingerprint"
    if own.is_file():
        return own.read_text(encoding="utf-8").strip()
    recorded = root / FINGERPRINT
    if not recorded.is_file():
        raise MirrorRefused(f"mirror {root} has no {FINGERPRINT}: pass --mirror-fingerprint")
    return recorded.read_text(encoding="utf-8").strip()


def verify(root: Path, pinned: Optional[str] = None, progress: Any = None) -> Mirror:
    """The checked mirror at ``root``; raises :class:`MirrorRefused` naming the first problem."""
    if not (root / MANIFEST).is_file():
        raise MirrorRefused(f"{root} is not a dlsetup mirror: {MANIFEST} is missing")
    fingerprint = pinned_fingerprint(root, pinned)
    verdict = keys.key_verdict(root / KEY, fingerprint)
    if not verdict["ok"]:
        raise MirrorRefused(f"mirror {root}: its key file {KEY} {verdict['reason']}, but {fingerprint} is pinned")
    if not (root / SIGNATURE).is_file() or not keys.verified_by(root / KEY, root / SIGNATURE, root / MANIFEST):
        raise MirrorRefused(f"mirror {root}: {MANIFEST} is not signed by the mirror key {fingerprint}")
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MirrorRefused(f"mirror {root}: {MANIFEST} cannot be read ({err})") from None
    for repo in sorted((root / "apt").glob("*")) if (root / "apt").is_dir() else ():
        if not keys.verified_by(root / KEY, repo / "InRelease"):
            raise MirrorRefused(f"mirror {root}: apt/{repo.name}/InRelease is not signed by the mirror key "
                                f"{fingerprint}")
    task = progress.add_task("checking the mirror", total=sum(int(e["size"]) for e in files.values())) \
        if progress else None
    for rel, entry in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            raise MirrorRefused(f"mirror {root}: {rel} is missing (the manifest lists it)")
        if path.stat().st_size != int(entry["size"]) or sha256(path) != entry["sha256"]:
            raise MirrorRefused(f"mirror {root}: {rel} was changed since the mirror was made (sha256 differs)")
        if progress and task is not None:
            progress.advance(task, int(entry["size"]))
    extra = sorted(p.relative_to(root).as_posix() for p in listed_files(root)
                   if p.relative_to(root).as_posix() not in files)
    if extra:
        raise MirrorRefused(f"mirror {root}: {extra[0]} is not in the manifest (added after the mirror was made)")
    return Mirror(root, fingerprint, manifest)


def check_covers(mirror: Mirror, contents: Sequence[Contents]) -> None:
    """Refuse when the mirror lacks anything a host's plan installs, naming the host and what is missing."""
    available, wheel_sets = mirror.available(), mirror.wheel_sets()
    for item in contents:
        lacking = missing(item, available, wheel_sets)
        if lacking:
            more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
            raise MirrorRefused(f"mirror {mirror.root} does not cover {item.host}: {', '.join(lacking[:3])}{more} "
                                "missing (run dlsetup mirror for this plan)")
