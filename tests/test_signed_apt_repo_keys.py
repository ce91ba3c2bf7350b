"""signed_apt_repo's key decision and apt pins, over real gpg output (fast: keys made in a scratch GNUPGHOME).

The decision is the collection's plugins/filter/signed_apt_repo_keys.py, which the role calls as a filter by its
fully qualified name (dlsetup.workstation.signed_apt_repo_key_verdict);
the pipeline tests run the role's own gpg command lines (read from tasks/main.yml) on the key files, so what
these tests pass is what the role stores.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from jinja2.nativetypes import NativeEnvironment

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "signed_apt_repo"

_spec = importlib.util.spec_from_file_location("signed_apt_repo_keys",
                                               REPO / "plugins" / "filter" / "signed_apt_repo_keys.py")
assert _spec and _spec.loader
keys = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(keys)

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")


@dataclass(frozen=True)
class Key:
    fingerprint: str
    armored: bytes
    binary: bytes
    packets: tuple[bytes, ...]  # the binary key split into OpenPGP packets
    home: Path  # the GNUPGHOME holding its secret key


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], input=stdin, check=True,
                          capture_output=True).stdout


def _packets(data: bytes) -> tuple[bytes, ...]:
    """Split binary OpenPGP data into its packets (RFC 4880 4.2: old and new format headers)."""
    out, pos = [], 0
    while pos < len(data):
        tag, start = data[pos], pos
        if tag & 0x40:  # new format
            first = data[pos + 1]
            if first < 192:
                length, pos = first, pos + 2
            elif first < 224:
                length, pos = ((first - 192) << 8) + data[pos + 2] + 192, pos + 3
            else:
                length, pos = int.from_bytes(data[pos + 2:pos + 6], "big"), pos + 6
        else:  # old format: the low two bits give the length's size
            size = {0: 1, 1: 2, 2: 4}[tag & 3]
            length, pos = int.from_bytes(data[pos + 1:pos + 1 + size], "big"), pos + 1 + size
        out.append(data[start:pos + length])
        pos += length
    return tuple(out)


def _make_key(home: Path, name: str, algo: str = "ed25519") -> Key:
    home.mkdir(mode=0o700)
    _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.invalid>", algo, "sign", "never")
    fingerprint = next(line.split(":")[9] for line in _gpg(home, "--with-colons", "--list-keys").decode().splitlines()
                       if line.startswith("fpr:"))
    _gpg(home, "--passphrase", "", "--quick-add-key", fingerprint, "ed25519", "sign", "never")  # a signing subkey
    binary = _gpg(home, "--export", fingerprint)
    return Key(fingerprint, _gpg(home, "--armor", "--export", fingerprint), binary, _packets(binary), home)


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """Three keys with a signing subkey each: A (pinned), B (RSA) and C."""
    base = tmp_path_factory.mktemp("gpg")
    return {name: _make_key(base / name, name, "rsa2048" if name == "B" else "ed25519") for name in "ABC"}


@pytest.fixture
def show(tmp_path: Path) -> Callable[[bytes], str]:
    """``gpg --show-keys --with-colons`` of some bytes, as the role runs it (errors give empty output)."""
    def run(data: bytes) -> str:
        path = tmp_path / "key"
        path.write_bytes(data)
        home = Path(os.path.realpath(tmp_path / f"home{len(list(tmp_path.iterdir()))}"))
        home.mkdir(mode=0o700)
        return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--show-keys", "--with-colons", str(path)],
                              check=False, capture_output=True, text=True).stdout
    return run


# -- the decision -------------------------------------------------------------------------------------------

def test_exactly_the_pinned_key_is_accepted_armored_and_binary(gpg_keys: dict[str, Key], show) -> None:
    a = gpg_keys["A"]
    for data in (a.armored, a.binary):
        verdict = keys.key_verdict(show(data), a.fingerprint)
        assert verdict == {"ok": True, "fingerprints": [a.fingerprint], "reason": ""}


def test_the_pinned_fingerprint_is_normalised(gpg_keys: dict[str, Key], show) -> None:
    a = gpg_keys["A"]
    spaced = " ".join(a.fingerprint[i:i + 4] for i in range(0, 40, 4)).lower()
    assert keys.key_verdict(show(a.armored), spaced)["ok"]
    assert keys.key_verdict(show(a.armored), "0x" + a.fingerprint.lower())["ok"]
    assert keys.normalise_fingerprint(spaced) == a.fingerprint


@pytest.mark.parametrize("order", ["pinned first", "pinned second"])
@pytest.mark.parametrize("form", ["armored", "binary", "armored blocks with text between"])
def test_a_second_key_is_refused_whatever_the_order_and_form(gpg_keys: dict[str, Key], show, order: str,
                                                            form: str) -> None:
    a, b = gpg_keys["A"], gpg_keys["B"]
    pair = (a, b) if order == "pinned first" else (b, a)
    if form == "binary":
        data = pair[0].binary + pair[1].binary
    elif form == "armored":
        data = pair[0].armored + pair[1].armored
    else:
        data = b"the vendor's key:\n" + pair[0].armored + b"\nand another:\n" + pair[1].armored
    verdict = keys.key_verdict(show(data), a.fingerprint)
    assert not verdict["ok"]
    assert verdict["fingerprints"] == [key.fingerprint for key in pair]
    assert verdict["reason"] == (f"holds 2 keys ({pair[0].fingerprint}, {pair[1].fingerprint}), and apt would trust"
                                 f" each of them: besides the pinned key, {b.fingerprint}")


def test_the_pinned_key_twice_is_refused(gpg_keys: dict[str, Key], show) -> None:
    """Strictly one key block: two copies could differ in what else they carry."""
    a = gpg_keys["A"]
    verdict = keys.key_verdict(show(a.armored + a.armored), a.fingerprint)
    assert verdict == {"ok": False, "fingerprints": [a.fingerprint] * 2,
                       "reason": "holds the pinned key 2 times (one key block is expected)"}


def test_keys_without_the_pinned_one_are_all_named(gpg_keys: dict[str, Key], show) -> None:
    b, c = gpg_keys["B"], gpg_keys["C"]
    verdict = keys.key_verdict(show(b.armored + c.armored), gpg_keys["A"].fingerprint)
    assert not verdict["ok"]
    assert verdict["reason"].endswith(f"none is the pinned key: {b.fingerprint}, {c.fingerprint}")


def test_another_single_key_is_refused_with_its_fingerprint(gpg_keys: dict[str, Key], show) -> None:
    verdict = keys.key_verdict(show(gpg_keys["B"].armored), gpg_keys["A"].fingerprint)
    assert verdict["ok"] is False and verdict["reason"] == f"has fingerprint {gpg_keys['B'].fingerprint}"


def test_the_pinned_key_as_a_subkey_of_another_key_is_refused(gpg_keys: dict[str, Key], show) -> None:
    """Only primary fingerprints count: the pinned fingerprint on a subkey line is not the pinned key."""
    a, b = gpg_keys["A"], gpg_keys["B"]
    subkey = (show(b.armored) + f"sub:-:255:22:{a.fingerprint[-16:]}:1::::::s:::::ed25519::\n"
              f"fpr:::::::::{a.fingerprint}:\n")
    verdict = keys.key_verdict(subkey, a.fingerprint)
    assert not verdict["ok"] and verdict["fingerprints"] == [b.fingerprint]


@pytest.mark.parametrize("data", [b"", b"not a key\n",
                                  b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n",
                                  random.Random(0).randbytes(64)])
def test_empty_or_garbage_is_refused(gpg_keys: dict[str, Key], show, data: bytes) -> None:
    verdict = keys.key_verdict(show(data), gpg_keys["A"].fingerprint)
    assert verdict == {"ok": False, "fingerprints": [], "reason": "holds no OpenPGP key"}


def test_a_secret_key_is_refused(gpg_keys: dict[str, Key], show) -> None:
    a = gpg_keys["A"]
    secret = _gpg(a.home, "--pinentry-mode", "loopback", "--passphrase", "", "--export-secret-keys", a.fingerprint)
    verdict = keys.key_verdict(show(secret), a.fingerprint)
    assert not verdict["ok"] and verdict["reason"] == "holds a secret key, not a public key"


def test_a_revoked_pinned_key_is_refused(gpg_keys: dict[str, Key], tmp_path: Path, show) -> None:
    a = gpg_keys["A"]
    home = tmp_path / "revoked"
    home.mkdir(mode=0o700)
    _gpg(home, "--import", stdin=a.binary)
    certificate = (a.home / "openpgp-revocs.d" / f"{a.fingerprint}.rev").read_text()
    certificate = certificate.replace(":-----BEGIN", "-----BEGIN")
    _gpg(home, "--import", stdin=certificate.encode())
    verdict = keys.key_verdict(show(_gpg(home, "--export", a.fingerprint)), a.fingerprint)
    assert not verdict["ok"] and verdict["reason"] == f"has the pinned key {a.fingerprint}, revoked"


@pytest.mark.parametrize("pinned", ["", "3BF863CC", "G" * 40, None])
def test_a_malformed_pin_refuses_every_key(gpg_keys: dict[str, Key], show, pinned: object) -> None:
    verdict = keys.key_verdict(show(gpg_keys["A"].armored), pinned)
    assert not verdict["ok"] and verdict["reason"].startswith("cannot be checked: the pinned fingerprint")


def test_the_role_uses_the_decision_as_a_filter() -> None:
    filters = keys.FilterModule().filters()
    assert filters["signed_apt_repo_key_verdict"] is keys.key_verdict
    tasks = (ROLE / "tasks" / "main.yml").read_text()
    call = "| dlsetup.workstation.signed_apt_repo_key_verdict(__signed_apt_repo_pinned)"
    assert tasks.count(call) == 2  # download and export
    assert call in " ".join((ROLE / "vars" / "main.yml").read_text().split())


# -- the role's pipeline: read, decide, export ----------------------------------------------------------------

def _task(name: str) -> dict:
    def walk(tasks: list[dict]):
        for task in tasks:
            yield task
            yield from walk(task.get("block", []) + task.get("always", []) + task.get("rescue", []))
    return next(task for task in walk(yaml.safe_load((ROLE / "tasks" / "main.yml").read_text()))
                if task.get("name") == name)


_JINJA = NativeEnvironment()
# as Ansible names a collection's filters in the role: dlsetup.workstation.<filter>
_JINJA.filters.update({f"dlsetup.workstation.{name}": f for name, f in keys.FilterModule().filters().items()})
_ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())


def _role_var(name: str, **context: object) -> object:
    """A variable of the role's vars/main.yml, evaluated with its filters (Ansible's templating, natively)."""
    return _JINJA.from_string(_ROLE_VARS[name]).render(**context)


def _role_asserts(task_name: str, stdout: str, register: str, pinned: str) -> bool:
    """Whether the role's assert task passes for gpg's ``stdout`` registered as ``register``."""
    task = _task(task_name)
    context = {register: {"stdout": stdout},
               "__signed_apt_repo_pinned": _role_var("__signed_apt_repo_pinned",
                                                     signed_apt_repo_key_fingerprint=pinned)}
    for name, expression in task.get("vars", {}).items():
        context[name] = _JINJA.from_string(expression).render(**context)
    that = task["ansible.builtin.assert"]["that"]
    return all(_JINJA.compile_expression(test)(**context) for test in ([that] if isinstance(that, str) else that))


def _role_store(data: bytes, pinned: str, scratch: Path) -> bytes | str:
    """What the role stores from a downloaded key file: the keyring's bytes, or the refusal's reason. The role's
    own command lines and asserts (tasks/main.yml) decide; the reason comes from the decision."""
    scratch.mkdir()
    (scratch / "download").write_bytes(data)

    def argv(name: str) -> list[str]:
        args = _task(name)["ansible.builtin.command"]["argv"]
        return [arg.replace("{{ __signed_apt_repo_scratch.path }}", str(scratch))
                .replace("{{ __signed_apt_repo_pinned }}", keys.normalise_fingerprint(pinned)) for arg in args]

    read = subprocess.run(argv("Read the keys of the downloaded file"), check=False, capture_output=True, text=True)
    if not _role_asserts("Refuse a key file that does not hold exactly the pinned key", read.stdout,
                         "__signed_apt_repo_gpg", pinned):
        return str(keys.key_verdict(read.stdout, pinned)["reason"])
    export = subprocess.run(argv("Export exactly the pinned key from the downloaded file, ASCII-armoured"),
                            capture_output=True, text=True, check=True)
    if not _role_asserts("Refuse an export that is not exactly the pinned key", export.stdout,
                         "__signed_apt_repo_export", pinned):
        return "export: " + str(keys.key_verdict(export.stdout, pinned)["reason"])
    return (scratch / "keyring.asc").read_bytes()


def _role_keeps_stored(colons: str, pinned: str) -> bool:
    """Whether the role keeps a stored keyring with this listing (vars/main.yml: __signed_apt_repo_stored_ok)."""
    pinned = str(_role_var("__signed_apt_repo_pinned", signed_apt_repo_key_fingerprint=pinned))
    return _role_var("__signed_apt_repo_stored_ok", __signed_apt_repo_stored={"stdout": colons},
                     __signed_apt_repo_pinned=pinned) is True


def test_the_role_keeps_a_stored_keyring_only_when_it_is_exactly_the_pinned_key(gpg_keys: dict[str, Key],
                                                                                 show) -> None:
    a, b = gpg_keys["A"], gpg_keys["B"]
    assert _role_keeps_stored(show(a.armored), a.fingerprint.lower())
    for data in (a.armored + b.armored, b.armored + a.armored, b.armored, b"", b"not a key\n"):
        assert not _role_keeps_stored(show(data), a.fingerprint)
    assert _role_var("__signed_apt_repo_stored_ok", __signed_apt_repo_stored={},  # skipped: tools just installed
                     __signed_apt_repo_pinned=a.fingerprint) is False


def test_the_role_names_the_foreign_keys_of_a_stored_keyring(gpg_keys: dict[str, Key], show) -> None:
    """Those make the role remove the keyring and the sources file when no good key replaces them."""
    a, b, c = gpg_keys["A"], gpg_keys["B"], gpg_keys["C"]

    def foreign(data: bytes | None) -> object:
        stored = {} if data is None else {"stdout": show(data)}
        return _role_var("__signed_apt_repo_stored_foreign", __signed_apt_repo_stored=stored,
                         __signed_apt_repo_pinned=a.fingerprint)

    assert foreign(a.armored + b.armored) == [b.fingerprint]
    assert foreign(c.armored + a.armored + b.armored) == [c.fingerprint, b.fingerprint]
    assert foreign(a.armored) == [] and foreign(b"not a key\n") == [] and foreign(None) == []


def test_the_role_stores_the_pinned_key_armored_from_armored_or_binary(gpg_keys: dict[str, Key], tmp_path: Path,
                                                                        show) -> None:
    a = gpg_keys["A"]
    for form, data in (("armored", a.armored), ("binary", a.binary)):
        stored = _role_store(data, a.fingerprint, tmp_path / form)
        assert isinstance(stored, bytes) and stored.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        colons = show(stored)
        assert keys.key_verdict(colons, a.fingerprint)["ok"]
        assert len([line for line in colons.splitlines() if line.startswith("sub:")]) == 1  # its subkey kept


def test_the_role_refuses_an_appended_key_before_storing(gpg_keys: dict[str, Key], tmp_path: Path) -> None:
    a, b = gpg_keys["A"], gpg_keys["B"]
    stored = _role_store(a.armored + b.armored, a.fingerprint, tmp_path / "ab")
    assert stored == (f"holds 2 keys ({a.fingerprint}, {b.fingerprint}), and apt would trust each of them: "
                      f"besides the pinned key, {b.fingerprint}")
    assert not (tmp_path / "ab" / "keyring.asc").exists()


@pytest.mark.parametrize("form", ["armored, then binary", "binary, then armored"])
def test_a_key_gpg_does_not_list_never_reaches_the_keyring(gpg_keys: dict[str, Key], tmp_path: Path, show,
                                                           form: str) -> None:
    """gpg reads an armoured file's armoured blocks only (and a binary file's packets only), so a key in the
    other form is not in its listing; the role stores gpg's export of the pinned key, never the file itself."""
    a, b = gpg_keys["A"], gpg_keys["B"]
    data = a.armored + b.binary if form == "armored, then binary" else a.binary + b.armored
    stored = _role_store(data, a.fingerprint, tmp_path / "mixed")
    if isinstance(stored, bytes):
        assert keys.key_verdict(show(stored), a.fingerprint)["fingerprints"] == [a.fingerprint]
        assert b.binary not in stored and b.armored not in stored
    else:  # refused (gpg stops at the armour after binary packets): nothing to store
        assert not (tmp_path / "mixed" / "keyring.asc").exists()


def test_a_subkey_not_bound_by_the_pinned_key_never_reaches_the_keyring(gpg_keys: dict[str, Key], tmp_path: Path,
                                                                        show) -> None:
    """A's primary key, user id and self-signature, then C's signing subkey with C's binding signature: gpg
    drops the subkey (A did not bind it), so the stored keyring has A's primary and no subkey C signs with."""
    a, c = gpg_keys["A"], gpg_keys["C"]
    assert [p[0] & 0x3F if p[0] & 0x40 else (p[0] >> 2) & 0xF for p in a.packets] == [6, 13, 2, 14, 2]
    forged = b"".join(a.packets[:3]) + b"".join(c.packets[3:])
    stored = _role_store(forged, a.fingerprint, tmp_path / "forged")
    assert isinstance(stored, bytes)
    colons = show(stored)
    assert keys.key_verdict(colons, a.fingerprint)["ok"]
    assert "sub:" not in colons and c.fingerprint not in colons
    subkey_c = next(line for line in show(c.binary).splitlines()[::-1] if line.startswith("fpr:")).split(":")[9]
    assert subkey_c not in colons


# -- the pins -----------------------------------------------------------------------------------------------------

def test_the_pins_hold_the_repository_low_and_the_callers_packages_high() -> None:
    text = keys.apt_preferences("http://127.0.0.1:8998/cuda/", ["libnccl2", "cuda-*", "libnccl2"], "lab-cuda")
    records = [dict(line.split(": ", 1) for line in record.splitlines()) for record in text.strip().split("\n\n")]
    assert [(r["Package"], r["Pin"], r["Pin-Priority"]) for r in records] == [
        ("*", 'origin "127.0.0.1"', "100"), ("libnccl2 cuda-*", 'origin "127.0.0.1"', "600")]
    assert keys.DEFAULT_PRIORITY < 500 <= keys.PACKAGE_PRIORITY < 1000  # below the distribution; never downgrades


def test_without_packages_only_the_low_pin_is_written() -> None:
    text = keys.apt_preferences("https://repo.radeon.com/rocm/apt/7.0.2", [])
    assert text.count("Pin-Priority:") == 1 and 'Pin: origin "repo.radeon.com"' in text
    assert 'Pin: origin ""' in keys.apt_preferences("file:/srv/mirror/cuda/", ["x"])


@pytest.mark.parametrize("packages", [["libnccl2\nPackage: *"], ["bash coreutils"], ['a"b'], ["/regex/"], [""]])
def test_a_package_pattern_that_could_write_its_own_pin_is_refused(packages: list[str]) -> None:
    with pytest.raises(ValueError, match="not package names or glob patterns"):
        keys.apt_preferences("http://mirror.example.invalid/cuda/", packages)


@pytest.mark.parametrize("uri", ["", "mirror/cuda", 'http://a"b/', "http://a b/"])
def test_a_repository_uri_that_is_not_one_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="is not a URI"):
        keys.apt_preferences(uri, ["x"])
