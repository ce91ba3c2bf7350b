"""The mirror's own signing key (made once per controller, kept in dlsetup's data folder) and the checks of
signatures and key files with gpg, in throwaway gpg homes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Sequence

from dlsetup.errors import UsageError

UID = "dlsetup mirror <mirror@dlsetup.invalid>"


def key_rules() -> ModuleType:
    """signed_apt_repo's key decision (exactly the pinned key), the filter plugin the role runs."""
    from dlsetup.plugins import load

    return load("plugins/filter/signed_apt_repo_keys.py")


def gpg(args: Sequence[str], home: Path, agent: bool = False, **kwargs: object) -> subprocess.CompletedProcess:
    """gpg in ``home``; with ``agent`` (secret key operations) its agent runs for this call only, its
    sockets under a short link to ``home`` (a socket path has at most 107 bytes)."""
    if shutil.which("gpg") is None:
        raise UsageError("gpg is not installed on this machine (apt-get install gpg)")
    if not agent:
        return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-autostart", *args],
                              capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    with tempfile.TemporaryDirectory(prefix="dlg") as short:
        link = Path(short) / "h"
        link.symlink_to(home.resolve())
        try:
            return subprocess.run(["gpg", "--homedir", str(link), "--batch", *args], capture_output=True, text=True,
                                  **kwargs)  # type: ignore[call-overload]
        finally:
            subprocess.run(["gpgconf", "--homedir", str(link), "--kill", "gpg-agent"], capture_output=True)


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dlsetup"


def signing_home() -> Path:
    """The gpg home with the mirror signing key of this controller, made on first use."""
    home = data_dir() / "mirror-gnupg"
    if not (home / "fingerprint").is_file():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = gpg(["--passphrase", "", "--quick-gen-key", UID, "ed25519", "sign", "never"], home, agent=True)
        if made.returncode != 0:
            raise UsageError(f"cannot make the mirror signing key: {made.stderr.strip()[-300:]}")
        (home / "fingerprint").write_text(fingerprints(export(home), home)[0] + "\n", encoding="utf-8")
    return home


def signing_fingerprint(home: Path) -> str:
    return (home / "fingerprint").read_text(encoding="utf-8").strip()


def export(home: Path) -> str:
    return gpg(["--armor", "--export"], home, check=True).stdout


def fingerprints(key_text: str, home: Optional[Path] = None) -> List[str]:
    """The primary key fingerprints of an armoured key, in order."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "key.asc"
        path.write_text(key_text, encoding="utf-8")
        shown = gpg(["--show-keys", "--with-colons", str(path)], Path(scratch))
        return [k["fingerprint"] for k in key_rules().primary_keys(shown.stdout)]


def key_verdict(key_file: Path, pinned: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        shown = gpg(["--show-keys", "--with-colons", str(key_file)], Path(scratch))
    return dict(key_rules().key_verdict(shown.stdout, pinned))


def sign(home: Path, source: Path, clear: Optional[Path] = None, detached: Optional[Path] = None) -> None:
    fpr = signing_fingerprint(home)
    if clear is not None:
        gpg(["--yes", "--local-user", fpr, "--clearsign", "-o", str(clear), str(source)], home, agent=True,
            check=True)
    if detached is not None:
        gpg(["--yes", "--local-user", fpr, "--armor", "--detach-sign", "-o", str(detached), str(source)], home,
            agent=True, check=True)


def verified_by(key_file: Path, signature: Path, data: Optional[Path] = None) -> bool:
    """Whether ``signature`` (clear-signed, or detached over ``data``) verifies with the key in ``key_file``
    alone (gpgv with a keyring holding that key only)."""
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        keyring = home / "keyring.gpg"
        dearmored = gpg(["--dearmor", "-o", str(keyring), str(key_file)], home)
        if dearmored.returncode != 0:
            return False
        args = ["gpgv", "--keyring", str(keyring), str(signature)] + ([str(data)] if data is not None else [])
        return subprocess.run(args, capture_output=True).returncode == 0
