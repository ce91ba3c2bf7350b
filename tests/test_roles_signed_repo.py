"""signed_apt_repo refuses a key with the wrong fingerprint, a key file with a second key (the appended-key attack,
end to end: two keys, two repositories on 127.0.0.1) and a mirror whose signature was tampered with; its pins
keep a vendor repository from replacing the distribution's packages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dlsetup.runner import link_collection
from lab import mirror, rootfs
from lab.fixtures import ServedMirror, lab_mirror, lab_root  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "tests" / "roles_fixtures" / "signed_repo.yml"

pytestmark = pytest.mark.lab


def _converge(target: Path, url: str, fingerprint: str, packages: tuple[str, ...] = (),
              *args: str, **lab: str) -> subprocess.CompletedProcess[str]:
    """Run the fixture play; ``lab`` sets its other variables (lab_repo, lab_key) without the prefix."""
    extra = {"lab_mirror_url": url, "lab_fingerprint": fingerprint, "lab_packages": list(packages),
             **{f"lab_{name}": value for name, value in lab.items()}}
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), *args, "-i", f"{target},",
         "-c", "community.general.chroot", "-e", "ansible_python_interpreter=/usr/bin/python3",
         "-e", json.dumps(extra), str(PLAYBOOK)],
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(link_collection(target.parent / "collections")),
             "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True,
    )


def _keys(path: Path, tmp_path: Path) -> list[str]:
    """The primary fingerprints of a key file, as gpg lists them."""
    home = Path(tempfile.mkdtemp(dir=tmp_path))
    colons = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--show-keys", "--with-colons", str(path)],
                            capture_output=True, text=True).stdout.splitlines()
    return [colons[i + 1].split(":")[9] for i, line in enumerate(colons) if line.startswith("pub:")]


def _chroot(target: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(target), *argv], capture_output=True, text=True)


def _update_only(target: Path, sources: str) -> subprocess.CompletedProcess[str]:
    """apt-get update of one sources file of the target, as the role runs it."""
    return _chroot(target, "apt-get", "update", "-o", f"Dir::Etc::sourcelist={sources}",
                   "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0")


def _nothing_stored(target: Path) -> None:
    assert not (target / "etc/apt/keyrings/lab-cuda.asc").exists()
    assert not (target / "etc/apt/sources.list.d/lab-cuda.sources").exists()
    assert not (target / "etc/apt/preferences.d/lab-cuda.pref").exists()
    assert not list((target / "var/lib/apt/lists").glob("127.0.0.1*")), "apt fetched the repository's lists"


@pytest.fixture
def target(lab_root: Path, tmp_path: Path):  # noqa: ARG001 - builds the cached root first
    path = rootfs.fresh_copy(tmp_path / "target")
    yield path
    rootfs.remove_copy(path)


def test_wrong_fingerprint_is_refused_before_anything_is_written(target: Path, lab_mirror: ServedMirror) -> None:
    run = _converge(target, lab_mirror.url, mirror.WRONG_FINGERPRINT)
    assert run.returncode == 2, run.stdout
    assert (f"Refusing the signing key of the lab-cuda repository: {lab_mirror.url}/key.asc has fingerprint "
            f"{lab_mirror.mirror.fingerprint}, but {mirror.WRONG_FINGERPRINT} is pinned") in \
        " ".join(run.stdout.split())
    assert "Nothing was stored" in " ".join(run.stdout.split())
    _nothing_stored(target)


def test_tampered_mirror_is_refused_and_removed(target: Path, lab_mirror: ServedMirror, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(lab_mirror.mirror.root, tampered)
    mirror.tamper(tampered / "cuda")
    with mirror.serve(tampered) as url:
        run = _converge(target, url, lab_mirror.mirror.fingerprint)
    out = " ".join(run.stdout.split())
    assert run.returncode == 2, run.stdout
    assert f"apt refused the lab-cuda repository at {url}/cuda/" in out
    assert "BADSIG" in out or "not signed" in out, out
    assert not (target / "etc/apt/sources.list.d/lab-cuda.sources").exists()


def test_intact_mirror_is_added_with_its_keyring(target: Path, lab_mirror: ServedMirror, tmp_path: Path) -> None:
    run = _converge(target, lab_mirror.url, lab_mirror.mirror.fingerprint.lower())
    assert run.returncode == 0, run.stdout
    sources = (target / "etc/apt/sources.list.d/lab-cuda.sources").read_text()
    assert f"URIs: {lab_mirror.url}/cuda/" in sources
    assert "Signed-By: /etc/apt/keyrings/lab-cuda.asc" in sources
    keyring = target / "etc/apt/keyrings/lab-cuda.asc"
    assert keyring.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert _keys(keyring, tmp_path) == [lab_mirror.mirror.fingerprint]
    assert 'Pin: origin "127.0.0.1"' in (target / "etc/apt/preferences.d/lab-cuda.pref").read_text()


def test_rerun_keeps_the_pinned_keyring_and_needs_no_network(target: Path, lab_mirror: ServedMirror,
                                                              tmp_path: Path) -> None:
    """Once the keyring and the packages are there, a re-run downloads nothing and runs no apt: it passes
    with the mirror gone. A keyring that lost its pinned key, or gained a second one, is fetched again."""
    packages = ("libnccl2", "nvidia-persistenced")
    copy = tmp_path / "mirror"
    shutil.copytree(lab_mirror.mirror.root, copy)
    with mirror.serve(copy) as url:
        first = _converge(target, url, lab_mirror.mirror.fingerprint, packages)
        assert first.returncode == 0, first.stdout
    for package in packages:
        assert (target / f"usr/share/doc/{package}/stand-in").exists()
    again = _converge(target, url, lab_mirror.mirror.fingerprint, packages)  # nothing listens at url now
    assert again.returncode == 0, again.stdout
    assert "changed=0" in again.stdout and "failed=0" in again.stdout
    keyring = target / "etc/apt/keyrings/lab-cuda.asc"
    pinned = keyring.read_text()
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    other = subprocess.run(["gpg", "--homedir", str(gnupg), "--batch", "--pinentry-mode", "loopback",
                            "--passphrase", "", "--quick-gen-key", "other <other@example.invalid>"],
                           capture_output=True)
    assert other.returncode == 0, other.stderr
    exported = subprocess.run(["gpg", "--homedir", str(gnupg), "--armor", "--export"], capture_output=True, text=True)
    with mirror.serve(copy) as url:
        for tampered in ("not a key\n", pinned + exported.stdout):  # broken, or a second key appended
            keyring.write_text(tampered)
            refetch = _converge(target, url, lab_mirror.mirror.fingerprint, packages)
            assert refetch.returncode == 0, refetch.stdout
            store = re.search(r"TASK \[dlsetup\.workstation\.signed_apt_repo : "
                              r"Store the signing key of lab-cuda\] \**\n(\w+):", refetch.stdout)
            assert store and store.group(1) == "changed", refetch.stdout
            assert _keys(keyring, tmp_path) == [lab_mirror.mirror.fingerprint]  # the appended key is gone


def test_check_mode_on_a_fresh_host_reports_and_writes_nothing(target: Path, lab_mirror: ServedMirror) -> None:
    run = _converge(target, lab_mirror.url, lab_mirror.mirror.fingerprint, ("libnccl2",), "--check")
    assert run.returncode == 0, run.stdout
    assert "failed=0" in run.stdout and "changed=0" not in run.stdout
    assert not (target / "etc/apt/keyrings/lab-cuda.asc").exists()
    assert not (target / "usr/share/doc/libnccl2").exists()


def test_appended_key_attack_is_refused_end_to_end(target: Path, tmp_path: Path) -> None:
    """Item 1 of the safety issue, end to end. Key A is pinned; the key URL serves A with B appended (or B
    first, or binary); the repository is signed by B alone. The role refuses and stores nothing, so apt never
    trusts B. The control proves the attack is real: a keyring of A and B makes apt accept B's repository. And a
    key file of exactly A converges and installs from A's repository."""
    keys = mirror.build_two_key_mirror(tmp_path / "two-keys")
    with mirror.serve(keys.root) as url:
        for key_file in ("ab.asc", "ba.asc", "ab.gpg"):
            run = _converge(target, url, keys.pinned, ("libnccl2",), repo="evil", key=key_file)
            out = " ".join(run.stdout.split())
            assert run.returncode == 2, run.stdout
            assert (f"Refusing the signing key of the lab-cuda repository: {url}/{key_file} holds 2 keys" in out
                    and f"besides the pinned key, {keys.other}, but {keys.pinned} is pinned. Nothing was stored."
                    in out), out
            _nothing_stored(target)
            assert not (target / "usr/share/doc/libnccl2").exists()

        # Exactly A, but the repository signed by B: the key is stored, apt refuses the repository.
        run = _converge(target, url, keys.pinned, ("libnccl2",), repo="evil", key="a.asc")
        assert run.returncode == 2, run.stdout
        assert f"apt refused the lab-cuda repository at {url}/evil/" in " ".join(run.stdout.split())
        assert "NO_PUBKEY" in run.stdout or "not signed" in run.stdout, run.stdout
        assert not (target / "etc/apt/sources.list.d/lab-cuda.sources").exists()
        assert not (target / "usr/share/doc/libnccl2").exists()

        # The control: what the old check stored (A and B) makes apt trust B's repository.
        control = target / "etc/apt/sources.list.d/control.sources"
        (target / "etc/apt/keyrings/control.asc").write_text((keys.root / "ab.asc").read_text())
        control.write_text(f"Types: deb\nURIs: {url}/evil/\nSuites: /\nSigned-By: /etc/apt/keyrings/control.asc\n")
        trusted = _update_only(target, "/etc/apt/sources.list.d/control.sources")
        assert trusted.returncode == 0 and "NO_PUBKEY" not in trusted.stdout + trusted.stderr, trusted.stderr
        control.unlink()
        (target / "etc/apt/keyrings/control.asc").unlink()

        # A host where A and B were stored (the old check): the key URL still serves A and B, so the role
        # refuses it, and removes the keyring and the sources file through which apt trusted B.
        keyring = target / "etc/apt/keyrings/lab-cuda.asc"
        sources = target / "etc/apt/sources.list.d/lab-cuda.sources"
        keyring.write_text((keys.root / "ab.asc").read_text())
        sources.write_text(f"Types: deb\nURIs: {url}/evil/\nSuites: /\nSigned-By: /etc/apt/keyrings/lab-cuda.asc\n")
        run = _converge(target, url, keys.pinned, ("libnccl2",), repo="evil", key="ab.asc")
        out = " ".join(run.stdout.split())
        assert run.returncode == 2, run.stdout
        assert (f"The stored keyring /etc/apt/keyrings/lab-cuda.asc held {keys.other}, not the pinned key, and apt "
                "trusted it for this repository: the keyring and the sources file were removed.") in out, out
        assert not keyring.exists() and not sources.exists()

        # Exactly A, A's repository: converges and installs A's package.
        run = _converge(target, url, keys.pinned, ("libnccl2",), repo="good", key="a.asc")
        assert run.returncode == 0, run.stdout
    assert _keys(target / "etc/apt/keyrings/lab-cuda.asc", tmp_path) == [keys.pinned]
    stand_in = (target / "usr/share/doc/libnccl2/stand-in").read_text()
    assert stand_in == f"libnccl2 {mirror.TWO_KEY_PACKAGES['good']['libnccl2']}\n"


def test_pins_keep_a_vendor_repository_from_replacing_system_packages(target: Path, tmp_path: Path) -> None:
    """A vendor repository that carries bash and coreutils at a higher version than Debian's: the caller's
    package installs, bash and coreutils stay Debian's, and an upgrade would not take the vendor's. Without the
    pins (the control) apt would take them."""
    vendor = mirror.build_mirror(tmp_path / "vendor", {"cuda": {"libnccl2": "2.28.7-1", "bash": "99.0-1",
                                                                 "coreutils": "99.0-1", "nccl-extra": "1.0-1"}})

    def versions() -> str:
        return _chroot(target, "dpkg-query", "--show", "--showformat=${Package} ${Version}\n", "bash",
                       "coreutils").stdout

    before = versions()
    with mirror.serve(vendor.root) as url:
        run = _converge(target, url, vendor.fingerprint, ("libnccl2",))
    assert run.returncode == 0, run.stdout
    assert (target / "usr/share/doc/libnccl2/stand-in").exists()
    assert versions() == before and "99.0-1" not in before
    pins = target / "etc/apt/preferences.d/lab-cuda.pref"
    assert "Package: libnccl2\n" in pins.read_text()
    for package in ("bash", "coreutils"):
        policy = _chroot(target, "apt-cache", "policy", package).stdout
        assert "Candidate: 99.0-1" not in policy and "99.0-1 100" in policy, policy
    # a package only the vendor has still installs (priority 100), as the caller's dependencies must
    assert "Candidate: 1.0-1" in _chroot(target, "apt-cache", "policy", "nccl-extra").stdout
    upgrade = _chroot(target, "apt-get", "--simulate", "upgrade")
    assert upgrade.returncode == 0 and "Inst bash" not in upgrade.stdout and "Inst coreutils" not in upgrade.stdout

    pins.unlink()  # the control: the same repository unpinned
    assert "Candidate: 99.0-1" in _chroot(target, "apt-cache", "policy", "bash").stdout
