"""signed_apt_repo refuses a key with the wrong fingerprint and a mirror whose signature was tampered with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import mirror, rootfs
from lab.fixtures import ServedMirror, lab_mirror, lab_root  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "tests" / "roles_fixtures" / "signed_repo.yml"

pytestmark = pytest.mark.lab


def _converge(target: Path, url: str, fingerprint: str, packages: tuple[str, ...] = (),
              *args: str) -> subprocess.CompletedProcess[str]:
    extra = {"lab_mirror_url": url, "lab_fingerprint": fingerprint, "lab_packages": list(packages)}
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), *args, "-i", f"{target},",
         "-c", "community.general.chroot", "-e", "ansible_python_interpreter=/usr/bin/python3",
         "-e", json.dumps(extra), str(PLAYBOOK)],
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True,
    )


@pytest.fixture
def target(lab_root: Path, tmp_path: Path):  # noqa: ARG001 - builds the cached root first
    path = rootfs.fresh_copy(tmp_path / "target")
    yield path
    rootfs.remove_copy(path)


def test_wrong_fingerprint_is_refused_before_anything_is_written(target: Path, lab_mirror: ServedMirror) -> None:
    run = _converge(target, lab_mirror.url, mirror.WRONG_FINGERPRINT)
    assert run.returncode == 2, run.stdout
    assert (f"Refusing the signing key of the lab-cuda repository: {lab_mirror.url}/key.asc has fingerprint "
            f"{lab_mirror.mirror.fingerprint}, but {mirror.WRONG_FINGERPRINT} is pinned") in " ".join(run.stdout.split())
    assert not (target / "etc/apt/keyrings/lab-cuda.asc").exists()
    assert not (target / "etc/apt/sources.list.d/lab-cuda.sources").exists()


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


def test_intact_mirror_is_added_with_its_keyring(target: Path, lab_mirror: ServedMirror) -> None:
    run = _converge(target, lab_mirror.url, lab_mirror.mirror.fingerprint.lower())
    assert run.returncode == 0, run.stdout
    sources = (target / "etc/apt/sources.list.d/lab-cuda.sources").read_text()
    assert f"URIs: {lab_mirror.url}/cuda/" in sources
    assert "Signed-By: /etc/apt/keyrings/lab-cuda.asc" in sources
    assert (target / "etc/apt/keyrings/lab-cuda.asc").read_text() == lab_mirror.mirror.key.read_text()


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
    other = subprocess.run(["gpg", "--homedir", str(gnupg), "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                            "other <other@example.invalid>"], capture_output=True)
    assert other.returncode == 0, other.stderr
    exported = subprocess.run(["gpg", "--homedir", str(gnupg), "--armor", "--export"], capture_output=True, text=True)
    for tampered in ("not a key\n", pinned + exported.stdout):  # broken, or a second key appended
        keyring.write_text(tampered)
        refetch = _converge(target, url, lab_mirror.mirror.fingerprint, packages)
        assert refetch.returncode == 2 and "Download the signing key of lab-cuda" in refetch.stdout, refetch.stdout


def test_check_mode_on_a_fresh_host_reports_and_writes_nothing(target: Path, lab_mirror: ServedMirror) -> None:
    run = _converge(target, lab_mirror.url, lab_mirror.mirror.fingerprint, ("libnccl2",), "--check")
    assert run.returncode == 0, run.stdout
    assert "failed=0" in run.stdout and "changed=0" not in run.stdout
    assert not (target / "etc/apt/keyrings/lab-cuda.asc").exists()
    assert not (target / "usr/share/doc/libnccl2").exists()
