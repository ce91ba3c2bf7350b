"""A real signed apt mirror with stand-in packages under the vendor package names, served on 127.0.0.1.

Each vendor gets its own flat repository (``<root>/<vendor>/``: ``Packages``, ``Release``, ``InRelease``)
signed with a key generated for the test, exactly the shape of an offline mirror a user points the roles
at. :func:`tamper` breaks a repository's signature; :data:`WRONG_FINGERPRINT` is a well-formed fingerprint
of no key in the mirror.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Stand-in packages per vendor repository: name -> version. Names are the vendors' real ones.
VENDOR_PACKAGES: Mapping[str, Mapping[str, str]] = {
    "cuda": {
        "cuda-drivers-580": "580.95.05-1",
        "nvidia-open-580": "580.95.05-1",
        "nvidia-persistenced": "580.95.05-1",
        "cuda-toolkit-13-0": "13.0.2-1",
        "libcudnn9-cuda-13": "9.14.0.64-1",
        "libnccl2": "2.28.7-1+cuda13.0",
    },
    "libnvidia-container": {"nvidia-container-toolkit": "1.18.0-1"},
    "rocm": {"rocm": "7.0.2.70002-56~22.04"},
    "amdgpu": {"amdgpu-dkms": "6.14.14.30100000-2212064.22.04"},
}

#: A syntactically valid fingerprint that matches no key of any mirror built here.
WRONG_FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


@dataclass(frozen=True)
class Mirror:
    """A built mirror: ``root/<vendor>/`` repositories, all signed by the key in ``root/key.asc``."""

    root: Path
    fingerprint: str

    @property
    def key(self) -> Path:
        """The ASCII-armoured public key, served as ``<url>/key.asc``."""
        return self.root / "key.asc"


def _run(args: Sequence[str], **kwargs: object) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout  # type: ignore[call-overload]


def _standin(name: str, version: str, pool: Path) -> None:
    """Build ``name_version_all.deb`` holding one marker file, /usr/share/doc/NAME/stand-in."""
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp)
        (pkg / "DEBIAN").mkdir()
        (pkg / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
            "Maintainer: dlsetup test lab <lab@example.invalid>\n"
            f"Description: stand-in for the vendor package {name}\n"
        )
        doc = pkg / "usr" / "share" / "doc" / name
        doc.mkdir(parents=True)
        (doc / "stand-in").write_text(f"{name} {version}\n")
        _run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(pool / f"{name}_{version}_all.deb")])


def sign_repository(repo: Path, gnupg: Path) -> None:
    """Write Packages, Release and a clear-signed InRelease for the flat repository ``repo``."""
    (repo / "Packages").write_text(_run(["apt-ftparchive", "packages", "."], cwd=repo))
    release = _run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=stable",
                    "-o", "APT::FTPArchive::Release::Codename=stable", "release", "."], cwd=repo)
    (repo / "Release").write_text(release)
    _run(["gpg", "--batch", "--yes", "--clearsign", "-o", "InRelease", "Release"],
         cwd=repo, env={**os.environ, "GNUPGHOME": str(gnupg)})


def build_mirror(root: Path, packages: Mapping[str, Mapping[str, str]] = VENDOR_PACKAGES) -> Mirror:
    """Build one signed flat repository per vendor under ``root`` with a freshly generated key."""
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dlsetup-lab-gnupg-"))
    gnupg = scratch / "home"
    try:
        fingerprint = new_signing_key(gnupg, "dlsetup test mirror <mirror@example.invalid>")
        (root / "key.asc").write_text(export_key(gnupg))
        for vendor, names in packages.items():
            repo = root / vendor
            repo.mkdir(exist_ok=True)
            for name, version in names.items():
                _standin(name, version, repo)
            sign_repository(repo, gnupg)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Mirror(root=root, fingerprint=fingerprint)


def tamper(repo: Path) -> None:
    """Change the signed text of ``repo/InRelease`` after signing, so its signature no longer verifies."""
    inrelease = repo / "InRelease"
    inrelease.write_text(inrelease.read_text().replace("Codename: stable", "Codename: tampered", 1))


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        """Keep test output clean."""


@dataclass(frozen=True)
class TwoKeyMirror:
    """The appended-key attack: key A (the pinned one) signs ``root/good/``, key B alone signs ``root/evil/``.

    Key files served next to them: ``a.asc`` (A alone), ``ab.asc`` (A with B appended), ``ba.asc`` (B, then A),
    ``ab.gpg`` (A and B, binary) and ``b.asc`` (B alone).
    """

    root: Path
    pinned: str
    other: str


#: What the two repositories of :func:`build_two_key_mirror` carry: the same package, the attacker's newer.
TWO_KEY_PACKAGES: Mapping[str, Mapping[str, str]] = {
    "good": {"libnccl2": "2.28.7-1+cuda13.0"},
    "evil": {"libnccl2": "99.0-1"},
}


def new_signing_key(gnupg: Path, uid: str) -> str:
    """Generate a signing key in ``gnupg`` (made here); returns its fingerprint."""
    gnupg.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    _run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"], env=env)
    colons = _run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env)
    return next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))


def export_key(gnupg: Path) -> str:
    """The ASCII-armoured public key of the keyring ``gnupg``."""
    return _run(["gpg", "--batch", "--armor", "--export"], env={**os.environ, "GNUPGHOME": str(gnupg)})


def build_two_key_mirror(root: Path, packages: Mapping[str, Mapping[str, str]] = TWO_KEY_PACKAGES) -> TwoKeyMirror:
    """Build the repositories and key files of :class:`TwoKeyMirror` under ``root`` with two fresh keys."""
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dlsetup-lab-gnupg2-"))
    try:
        homes = {"good": scratch / "a", "evil": scratch / "b"}
        pinned = new_signing_key(homes["good"], "dlsetup test vendor <vendor@example.invalid>")
        other = new_signing_key(homes["evil"], "dlsetup test attacker <attacker@example.invalid>")
        armored = {name: _run(["gpg", "--batch", "--armor", "--export"], env={**os.environ, "GNUPGHOME": str(home)})
                   for name, home in homes.items()}
        binary = {name: subprocess.run(["gpg", "--batch", "--export"], env={**os.environ, "GNUPGHOME": str(home)},
                                       check=True, capture_output=True).stdout for name, home in homes.items()}
        (root / "a.asc").write_text(armored["good"])
        (root / "b.asc").write_text(armored["evil"])
        (root / "ab.asc").write_text(armored["good"] + armored["evil"])
        (root / "ba.asc").write_text(armored["evil"] + armored["good"])
        (root / "ab.gpg").write_bytes(binary["good"] + binary["evil"])
        for repo_name, names in packages.items():
            repo = root / repo_name
            repo.mkdir(exist_ok=True)
            for name, version in names.items():
                _standin(name, version, repo)
            sign_repository(repo, homes["evil" if repo_name == "evil" else "good"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return TwoKeyMirror(root=root, pinned=pinned, other=other)
