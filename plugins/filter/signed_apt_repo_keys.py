"""The signing-key decision of signed_apt_repo: does a key file hold exactly the pinned key?

apt trusts every key in a Signed-By keyring, so a key file is accepted only when it holds exactly one primary
key and that key's fingerprint is the pinned one. Anything else (a second key appended or prepended, several
armoured blocks, a secret key, a revoked key, no key at all) is refused, naming what the file holds.

Subkeys of the pinned key are accepted: gpg itself drops a subkey whose binding signature the pinned
primary did not make, and the role stores gpg's re-export of the pinned key only, so an unbound subkey never
reaches apt.

The input is the output of ``gpg --show-keys --with-colons FILE`` (gpg's documented machine format,
doc/DETAILS in GnuPG). Pure functions: the role calls them as filters and the fast tests call them directly.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PRIORITY", "PACKAGE_PRIORITY", "apt_preferences", "key_verdict", "normalise_fingerprint",
           "primary_keys"]

#: Priority of every package of a vendor repository: that of Debian's backports. A vendor package installs
#: and upgrades when no other source has the package, but never wins over a version the distribution has.
DEFAULT_PRIORITY = 100
#: Priority of the packages the caller installs from the repository (the 600 AMD and NVIDIA document): they
#: win over the distribution's packages of the same name.
PACKAGE_PRIORITY = 600
# Debian package names, with glob(7) signs and an optional :arch (or src: prefix); no spaces, quotes or newlines
_PACKAGE_GLOB = re.compile(r"[A-Za-z0-9.+*?\[\]:-]+")

_HEX = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # v4 keys: 40 hex digits; v5/v6 keys: 64
_PRIMARY = ("pub", "sec")  # a secret key file lists its primary as "sec"
_SUBKEY = ("sub", "ssb")


def normalise_fingerprint(fingerprint: object) -> str:
    """Upper-case hex with spaces (and a leading 0x) removed: '0x3bf8 63cc' -> '3BF863CC'."""
    return "".join(str(fingerprint or "").split()).upper().removeprefix("0X")


def primary_keys(colons: object) -> list[dict[str, str]]:
    """The primary keys of a ``--with-colons`` listing, in file order: record type, validity, fingerprint.

    A fingerprint (``fpr``) record belongs to the key or subkey record right above it; only those that
    follow a primary (``pub``/``sec``) record are primary fingerprints.
    """
    lines = colons.splitlines() if isinstance(colons, str) else [str(line) for line in (colons or [])]
    keys: list[dict[str, str]] = []
    current = ""  # the record type the next fpr line belongs to
    for line in lines:
        fields = line.split(":")
        kind = fields[0]
        if kind in _PRIMARY or kind in _SUBKEY:
            current = kind
            if kind in _PRIMARY:
                keys.append({"type": kind, "validity": fields[1] if len(fields) > 1 else "", "fingerprint": ""})
        elif kind == "fpr" and current in _PRIMARY and keys and not keys[-1]["fingerprint"]:
            keys[-1]["fingerprint"] = normalise_fingerprint(fields[9] if len(fields) > 9 else "")
            current = ""
    return keys


def key_verdict(colons: object, pinned: object) -> dict[str, object]:
    """Decide on a key file from its ``gpg --show-keys --with-colons`` output.

    Returns ``{"ok": bool, "fingerprints": [primary fingerprints in file order], "reason": str}``; the reason
    completes the sentence "the key file ..." when the file is refused (empty when accepted).
    """
    want = normalise_fingerprint(pinned)
    keys = primary_keys(colons)
    fingerprints = [key["fingerprint"] or "(no fingerprint)" for key in keys]
    reason = ""
    if not _HEX.fullmatch(want):
        reason = f"cannot be checked: the pinned fingerprint {str(pinned)!r} is not 40 (or 64) hex digits"
    elif not keys:
        reason = "holds no OpenPGP key"
    elif len(keys) > 1 and set(fingerprints) == {want}:
        reason = f"holds the pinned key {len(keys)} times (one key block is expected)"
    elif len(keys) > 1:
        others = [fpr for fpr in fingerprints if fpr != want]
        reason = (f"holds {len(keys)} keys ({', '.join(fingerprints)}), and apt would trust each of them: "
                  + ("besides the pinned key, " if want in fingerprints else "none is the pinned key: ")
                  + ", ".join(others))
    elif fingerprints[0] != want:
        reason = f"has fingerprint {fingerprints[0]}"
    elif keys[0]["type"] != "pub":
        reason = "holds a secret key, not a public key"
    elif keys[0]["validity"] == "r":
        reason = f"has the pinned key {want}, revoked"
    return {"ok": not reason, "fingerprints": fingerprints, "reason": reason}


def apt_preferences(uris: object, packages: object = (), name: object = "") -> str:
    """The apt preferences file that confines the repository at ``uris`` to the caller's ``packages``.

    The repository is matched by its host name (apt's ``origin``, the host of the URI without its port; ``""``
    for a local file: repository). Every package from that host gets :data:`DEFAULT_PRIORITY`; the caller's
    package names or glob(7) patterns get :data:`PACKAGE_PRIORITY`. Raises ValueError for a URI without a
    scheme, or a package pattern that is not a Debian package name (a newline would add records of its own).
    """
    text = str(uris or "").strip()
    parts = urlsplit(text)
    if not parts.scheme or any(char.isspace() or char == '"' for char in text):
        raise ValueError(f"the repository URI {text!r} is not a URI (scheme://host/path)")
    origin = parts.hostname or ""
    if isinstance(packages, str):
        packages = packages.split()
    globs = [str(package) for package in (packages or [])]
    bad = [glob for glob in globs if not _PACKAGE_GLOB.fullmatch(glob)]
    if bad:
        raise ValueError(f"not package names or glob patterns: {', '.join(repr(glob) for glob in bad)}")
    label = f" {name}" if name else ""
    records = [
        (f"Explanation: dlsetup signed_apt_repo{label}: packages from {origin or 'this host'} install only where"
         " no other source has them"),
        "Package: *",
        f'Pin: origin "{origin}"',
        f"Pin-Priority: {DEFAULT_PRIORITY}",
    ]
    if globs:
        records += [
            "",
            f"Explanation: dlsetup signed_apt_repo{label}: the packages its caller installs from it",
            f"Package: {' '.join(dict.fromkeys(globs))}",
            f'Pin: origin "{origin}"',
            f"Pin-Priority: {PACKAGE_PRIORITY}",
        ]
    return "\n".join(records) + "\n"


class FilterModule:
    """Ansible filters: ``signed_apt_repo_key_verdict``, ``signed_apt_repo_fingerprint``,
    ``signed_apt_repo_preferences``."""

    def filters(self) -> dict[str, object]:
        return {"signed_apt_repo_key_verdict": key_verdict, "signed_apt_repo_fingerprint": normalise_fingerprint,
                "signed_apt_repo_preferences": apt_preferences}
