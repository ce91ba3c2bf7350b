"""dlsetup mirror: what a plan installs (from the roles' own package lists), the distribution's sources taken
from this machine's apt, and the gates a mirror passes before provision uses it: the pinned key, the
signatures of the manifest and of each apt repository's InRelease, every file's sha256, every host's plan
covered. Each gate is broken once here; the mirror is a tiny real one (a stand-in .deb, apt-ftparchive, gpg)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import H100_BUNDLE, REPO, missing_tool
from dlsetup.errors import UsageError
from dlsetup.mirror import build, keys
from dlsetup.mirror.contents import Contents, NotCovered, WheelSet, contents_of, plan_contents
from dlsetup.mirror.roles import role_data
from dlsetup.model import NvidiaState
from dlsetup.mirror.verify import MirrorRefused, check_covers, verify
from dlsetup.plan import load_request, make_plan
from dlsetup.probe import probe


@pytest.fixture(scope="module")
def h100_plan():
    """The H100 host as it would be fresh (no driver loaded): the plan installs the driver."""
    profile = probe(bundle=H100_BUNDLE)
    fresh = dataclasses.replace(profile, nvidia=NvidiaState())
    return make_plan(fresh, load_request(None, offline=True, framework=("pytorch",)))


def test_contents_come_from_the_roles_package_lists(h100_plan) -> None:
    roles = role_data("ubuntu", "24.04")
    contents = contents_of("h100", h100_plan, roles)
    common = yaml.safe_load((REPO / "roles/common/vars/Ubuntu-24.04.yml").read_text())
    for name in common["__common_packages"] + h100_plan.variables["common_extra_packages"]:
        assert name in contents.packages
    kernel = h100_plan.target["kernel"]
    assert kernel and f"linux-headers-{kernel}" in contents.packages  # the role's Jinja, filled in
    assert contents.apt_repo == "ubuntu-24.04-amd64" and contents.codename == "noble"
    branch = h100_plan.variables["nvidia_driver_branch"]
    assert contents.alternatives and all(option[0] == f"nvidia-driver-pinning-{branch}"
                                         for option in contents.alternatives)
    [repo] = contents.repos
    assert repo.url == h100_plan.variables["nvidia_driver_repo_url"]
    assert repo.fingerprint == h100_plan.variables["nvidia_driver_repo_key_fingerprint"]
    python = next(d.choice for d in h100_plan.decisions if d.topic == "python")
    [wheels] = contents.wheels  # one venv: pytorch's
    assert wheels.python == python and wheels.venv == h100_plan.variables["frameworks_venvs"][0]["path"]
    assert wheels.requirements == tuple(h100_plan.variables["frameworks_venvs"][0]["packages"])
    assert wheels.key.startswith(f"cp{python.replace('.', '')}-manylinux_")


def test_a_role_package_list_is_the_one_source(h100_plan, tmp_path: Path) -> None:
    ansible = tmp_path / "ansible"
    shutil.copytree(REPO / "roles", ansible / "roles")
    path = ansible / "roles/common/vars/Ubuntu-24.04.yml"
    data = yaml.safe_load(path.read_text())
    data["__common_packages"].append("dlsetup-new-tool")
    path.write_text(yaml.safe_dump(data))
    contents = contents_of("h100", h100_plan, role_data("ubuntu", "24.04", ansible))
    assert "dlsetup-new-tool" in contents.packages


def test_a_role_the_mirror_cannot_carry_is_named(h100_plan) -> None:
    class Rocm:
        roles = ("common", "rocm", "frameworks")
        variables = h100_plan.variables
        decisions = h100_plan.decisions
    with pytest.raises(NotCovered, match="rocm"):
        plan_contents("amd", Rocm(), "ubuntu", "24.04", "noble", "x86_64", "6.8.0", role_data("ubuntu", "24.04"))


def test_distribution_sources_are_this_machines_for_the_targets_codename(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "apt" / "sources.list.d").mkdir(parents=True)
    (etc / "os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    (etc / "apt" / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://archive.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://archive.invalid/debian\nSuites: bookworm\nComponents: main\n")
    (etc / "apt" / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://security.invalid/debian-security bookworm-security main\n")
    entries = build.distribution_sources("debian", "trixie", etc / "apt", etc)
    assert entries == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://archive.invalid/debian trixie main",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://archive.invalid/debian "
        "trixie-updates main",
        "deb [arch=amd64 signed-by=/k.gpg] http://security.invalid/debian-security trixie-security main"]
    with pytest.raises(UsageError, match="cannot serve ubuntu"):
        build.distribution_sources("ubuntu", "noble", etc / "apt", etc)


# -- a tiny real mirror and its gates ----------------------------------------------------------------------

def _tools() -> None:
    missing = [t for t in ("gpg", "gpgv", "dpkg-deb", "apt-ftparchive") if shutil.which(t) is None]
    if missing:
        missing_tool(f"the mirror tests need {', '.join(missing)} (apt-get install gpg gpgv dpkg-dev apt-utils)")


def _deb(pool: Path, name: str) -> None:
    package = pool.parent / "src" / name
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: t\n")
    subprocess.run(["dpkg-deb", "--build", str(package), str(pool / f"{name}_1.0_all.deb")], check=True,
                   capture_output=True)
    shutil.rmtree(pool.parent / "src")


CONTENTS = Contents(host="h1", release="debian-12", codename="bookworm", arch="amd64",
                    packages=("tool-a", "tool-b"),
                    wheels=(WheelSet(venv="/opt/v", python="3.11", platform="manylinux_2_35_x86_64",
                                     requirements=("demo==1.0",)),))


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _tools()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    signing = keys.signing_home()
    root = tmp_path / "mirror"
    repo = root / "apt" / "debian-12-amd64"
    (repo / "pool").mkdir(parents=True)
    for name in CONTENTS.packages:
        _deb(repo / "pool", name)
    build.write_repository(repo, signing)
    (root / "wheels").mkdir()
    (root / "wheels" / "demo-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    build.seal(root, signing, [CONTENTS], {"debian-12-amd64": {"packages": list(CONTENTS.packages)}},
               {CONTENTS.wheels[0].key: {"requirements": ["demo==1.0"], "files": ["demo-1.0-py3-none-any.whl"]}},
               {}, {})
    return root


def _other_key(tmp_path: Path) -> Path:
    home = tmp_path / "other-gnupg"
    home.mkdir(mode=0o700)
    keys.gpg(["--passphrase", "", "--quick-gen-key", "other <o@example.invalid>", "ed25519", "sign", "never"], home,
             agent=True, check=True)
    return home


def test_a_good_mirror_passes_and_covers_its_plan(mirror: Path) -> None:
    checked = verify(mirror)
    assert checked.fingerprint == (mirror / "key.fingerprint").read_text().strip()
    assert sorted(checked.available()["debian-12-amd64"]) == ["tool-a", "tool-b"]
    check_covers(checked, [CONTENTS])
    manifest = json.loads((mirror / "manifest.json").read_text())
    entry = manifest["files"]["apt/debian-12-amd64/pool/tool-a_1.0_all.deb"]
    assert entry["sha256"] == build.sha256(mirror / "apt/debian-12-amd64/pool/tool-a_1.0_all.deb")
    assert entry["plans"] == ["h1"] and manifest["hosts"]["h1"]["apt"] == "debian-12-amd64"
    assert "#sha256=" in (mirror / "simple" / "demo" / "index.html").read_text()


def test_a_changed_file_is_refused(mirror: Path) -> None:
    with (mirror / "apt/debian-12-amd64/pool/tool-b_1.0_all.deb").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(MirrorRefused, match=r"pool/tool-b_1.0_all.deb was changed"):
        verify(mirror)


def test_a_file_added_after_the_mirror_was_made_is_refused(mirror: Path) -> None:
    (mirror / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(MirrorRefused, match="evil-1.0-py3-none-any.whl is not in the manifest"):
        verify(mirror)


def test_an_index_signed_by_another_key_is_refused(mirror: Path, tmp_path: Path) -> None:
    other = _other_key(tmp_path)
    repo = mirror / "apt/debian-12-amd64"
    keys.gpg(["--yes", "--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release")], other, agent=True,
             check=True)
    with pytest.raises(MirrorRefused, match="InRelease is not signed by the mirror key"):
        verify(mirror)


def test_a_mirror_resigned_with_its_key_replaced_is_refused(mirror: Path, tmp_path: Path) -> None:
    """Someone who can write the folder swaps in a key of their own and signs everything with it: the
    fingerprint this controller pinned (its own mirror key) no longer matches."""
    pinned = (mirror / "key.fingerprint").read_text().strip()
    other = _other_key(tmp_path)
    (mirror / "key.asc").write_text(keys.export(other))
    keys.gpg(["--yes", "--armor", "--detach-sign", "-o", str(mirror / "manifest.json.asc"),
              str(mirror / "manifest.json")], other, agent=True, check=True)
    with pytest.raises(MirrorRefused, match=f"but {pinned} is pinned"):
        verify(mirror)


def test_a_manifest_signed_by_another_key_is_refused(mirror: Path, tmp_path: Path) -> None:
    manifest = json.loads((mirror / "manifest.json").read_text())
    manifest["files"]["apt/debian-12-amd64/pool/tool-b_1.0_all.deb"]["sha256"] = "0" * 64
    (mirror / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MirrorRefused, match="manifest.json is not signed by the mirror key"):
        verify(mirror)


def test_a_plan_the_mirror_does_not_cover_is_named(mirror: Path) -> None:
    checked = verify(mirror)
    more = Contents(host="h2", release="debian-12", codename="bookworm", arch="amd64", packages=("tool-a", "tool-c"))
    with pytest.raises(MirrorRefused, match=r"does not cover h2: package tool-c \(debian-12-amd64\) missing"):
        check_covers(checked, [CONTENTS, more])
    wheel = Contents(host="h3", release="debian-12", codename="bookworm", arch="amd64", packages=("tool-a",),
                     wheels=(WheelSet(venv="/opt/v", python="3.11", platform="manylinux_2_35_x86_64",
                                      requirements=("jax==0.9",)),))
    with pytest.raises(MirrorRefused, match=r"does not cover h3: wheel jax==0.9"):
        check_covers(checked, [wheel])
    other = Contents(host="h4", release="ubuntu-24.04", codename="noble", arch="amd64", packages=("tool-a",))
    with pytest.raises(MirrorRefused, match="no apt repository for ubuntu-24.04-amd64"):
        check_covers(checked, [other])


def test_provision_refuses_a_tampered_or_short_mirror_before_any_run(mirror: Path, tmp_path: Path) -> None:
    """The CLI: one line, exit 2, and no Ansible run (no run record) for a mirror that lacks the host's
    packages and for one with a changed file."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"h100": {"dlsetup_probe_bundle": str(H100_BUNDLE)}}}}))
    state = tmp_path / "state"
    env = {**os.environ, "XDG_STATE_HOME": str(state), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_DATA_HOME": str(tmp_path / "data")}

    def provision(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "--offline",
                               "--yes", "--mirror", str(mirror), *args], cwd=REPO, capture_output=True, text=True,
                              env=env, timeout=300)

    short = provision()
    errors = [line for line in short.stderr.splitlines() if line.startswith("dlsetup: error:")]
    assert short.returncode == 2 and "Traceback" not in short.stderr, short.stderr[-2000:]
    assert len(errors) == 1 and "does not cover h100: no apt repository for ubuntu-24.04-amd64" in errors[0]
    with (mirror / "apt/debian-12-amd64/pool/tool-a_1.0_all.deb").open("ab") as fh:
        fh.write(b"\0")
    tampered = provision()
    assert tampered.returncode == 2 and "tool-a_1.0_all.deb was changed" in tampered.stderr, tampered.stderr[-2000:]
    # an -e that sets where the hosts download from would win over the mirror's variables: refused first
    (tmp_path / "vars.yml").write_text("nvidia_driver_repo_url: https://repo.example.invalid/\n")
    for extra in ("frameworks_pip_index_url=https://index.example.invalid/simple/", f"@{tmp_path / 'vars.yml'}"):
        clash = provision("-e", extra)
        errors = [line for line in clash.stderr.splitlines() if line.startswith("dlsetup: error:")]
        assert clash.returncode == 2 and len(errors) == 1 and "conflicts with --mirror" in errors[0], clash.stderr
    runs = state / "dlsetup" / "runs"
    assert not runs.is_dir() or not [p.name for p in runs.iterdir() if "site" in p.name]


def test_a_mirror_on_a_web_server_is_checked_through_its_signed_parts(mirror: Path) -> None:
    from dlsetup.mirror import use

    with use.serve(mirror, 0) as url:
        checked, local = use.prepare(url, None, [CONTENTS])
        assert not local and checked.fingerprint == (mirror / "key.fingerprint").read_text().strip()
        variables = use.host_variables(checked, url, CONTENTS)
        assert variables["mirror_sources_url"] == f"{url}apt/debian-12-amd64/"
        assert variables["frameworks_pip_index_url"] == f"{url}simple/" and not variables["frameworks_pip_find_links"]
        assert variables["nvidia_driver_repo_key_fingerprint"] == checked.fingerprint
        page = mirror / "simple" / "demo" / "index.html"
        page.write_text(page.read_text().replace("#sha256=", "#sha256=0"))  # a link to another file's hash
        with pytest.raises(MirrorRefused, match="simple/demo/index.html was changed"):
            use.prepare(url, None, [CONTENTS])


def test_which_runs_use_a_mirror(tmp_path: Path) -> None:
    from dlsetup.mirror.workflow import choose

    cache = tmp_path / "cache"
    plain = load_request(None)
    assert choose(plain, 1, False, cache).source is None  # one host: as before
    fleet = choose(plain, 2, False, cache)
    assert fleet.source == str(cache) and fleet.cached
    assert choose(plain, 8, True, cache).source is None  # --no-cache
    given = choose(load_request(None, mirror="/srv/mirror", mirror_fingerprint="AB" * 20), 8, False, cache)
    assert (given.source, given.fingerprint, given.cached) == ("/srv/mirror", "AB" * 20, False)
    with pytest.raises(UsageError, match="mirror_fingerprint: expected 40 or 64 hex digits"):
        load_request(None, mirror_fingerprint="1234")
    # -e of a variable the mirror sets: --mirror refuses, the cache stands aside with a warning
    warnings: list = []
    with pytest.raises(UsageError, match="-e frameworks_pip_index_url conflicts with --mirror"):
        choose(load_request(None, mirror="/srv/mirror"), 8, False, cache, ["frameworks_pip_index_url"])
    assert choose(plain, 8, False, cache, ["cuda_toolkit_repo_key_url"], warnings.append).source is None
    assert warnings and "cuda_toolkit_repo_key_url" in warnings[0]
    assert choose(plain, 8, False, cache, ["nvidia_driver_branch"], warnings.append).cached  # not the mirror's


def test_a_run_with_tags_mirrors_only_the_roles_it_applies(h100_plan) -> None:
    from dlsetup.mirror.workflow import run_roles

    planned = ("common", "nvidia_driver", "frameworks")
    assert run_roles(planned) == planned
    assert run_roles(planned, ("nvidia_driver",)) == ("nvidia_driver",)
    assert run_roles(planned, ("common,frameworks",)) == ("common", "frameworks")
    assert run_roles(planned, (), ("frameworks",)) == ("common", "nvidia_driver")
    assert run_roles(planned, ("nvidia_driver", "frameworks"), ("frameworks",)) == ("nvidia_driver",)
    assert run_roles(planned, ("holds",)) == planned  # not a role's name: any role's tasks may carry it
    driver = contents_of("h100", dataclasses.replace(h100_plan, roles=run_roles(h100_plan.roles, ("nvidia_driver",))),
                         role_data("ubuntu", "24.04"))
    assert driver.alternatives and driver.repos and not driver.packages and not driver.wheels


def test_the_reverse_forward_keeps_the_inventorys_own_ssh_arguments(mirror: Path) -> None:
    from dlsetup.mirror.use import forward_args, with_mirror

    checked = verify(mirror)
    jump = "-o ProxyJump=bastion.example.invalid"
    out = with_mirror({"h1": {"x": 1}, "h2": {"ansible_ssh_extra_args": "-C"}}, checked, "http://127.0.0.1:9/",
                      {"h1": CONTENTS, "h2": CONTENTS}, 9, {"h1": {"ansible_ssh_extra_args": jump}})
    assert out["h1"]["ansible_ssh_extra_args"] == f"{jump} {forward_args(9)}"  # the inventory's jump host stays
    assert out["h2"]["ansible_ssh_extra_args"] == f"-C {forward_args(9)}"
    assert out["h1"]["frameworks_pip_index_url"] == "http://127.0.0.1:9/simple/"


# -- one wheel set per venv --------------------------------------------------------------------------------

def test_each_venv_and_jupyterlab_get_a_wheel_set_of_their_own() -> None:
    profile = probe(bundle=H100_BUNDLE)
    fresh = dataclasses.replace(profile, nvidia=NvidiaState())
    plan = make_plan(fresh, load_request(None, offline=True, framework=("pytorch", "tensorflow"), jupyter=True,
                                         jupyter_user="ada"))
    roles = role_data("ubuntu", "24.04")
    contents = contents_of("h100", plan, roles)
    venvs = {w.venv: w for w in contents.wheels}
    paths = [v["path"] for v in plan.variables["frameworks_venvs"]]
    assert list(venvs) == [*paths, plan.variables["jupyter_venv_path"]]
    for venv in plan.variables["frameworks_venvs"]:
        # the venv's own requirements, and the ipykernel the jupyter role adds to it: never the other venv's
        assert venvs[venv["path"]].requirements == (*venv["packages"], "ipykernel")
    torch, tensorflow = (venvs[p] for p in paths)
    assert not {r.split("=")[0] for r in torch.requirements if r != "ipykernel"} & {
        r.split("=")[0] for r in tensorflow.requirements if r != "ipykernel"}
    jupyter_defaults = yaml.safe_load((REPO / "roles/jupyter/defaults/main.yml").read_text())
    assert venvs[plan.variables["jupyter_venv_path"]].requirements == tuple(jupyter_defaults["jupyter_packages"])
    jupyter_vars = yaml.safe_load((REPO / "roles/jupyter/vars/Ubuntu-24.04.yml").read_text())
    assert set(jupyter_vars["__jupyter_packages"]) <= set(contents.packages)
    assert "git" not in contents.packages  # the remote IDE packages only when asked
    ide = plan_contents("h", dataclasses.replace(plan, variables={**plan.variables, "jupyter_remote_ide": True}),
                        "ubuntu", "24.04", "noble", "x86_64", "6.8.0", roles)
    assert {"git", "openssh-server"} <= set(ide.packages)


def _wheel(folder: Path, name: str, version: str, *requires: str) -> None:
    """A pure-Python wheel pip can resolve: its metadata and nothing else."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{info}/METADATA", "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                                                       *(f"Requires-Dist: {r}" for r in requires)]) + "\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def test_venvs_whose_requirements_conflict_are_each_resolved(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two venvs that pin different versions of a shared dependency: resolving their union fails, so the mirror
    resolves each venv as pip installs it, and holds both versions."""
    _tools()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    links = tmp_path / "links"
    links.mkdir()
    _wheel(links, "base", "1.0")
    _wheel(links, "base", "2.0")
    _wheel(links, "app_a", "1.0", "base==1.0")
    _wheel(links, "app_b", "1.0", "base==2.0")
    pip = {"python": "3.11", "platform": "manylinux_2_35_x86_64", "find_links": (str(links),), "offline": True}
    item = Contents(host="h1", release="debian-12", codename="bookworm", arch="amd64", packages=(),
                    wheels=(WheelSet(venv="/opt/a", requirements=("app_a==1.0",), **pip),
                            WheelSet(venv="/opt/b", requirements=("app_b==1.0",), **pip)))
    manifest = build.build(tmp_path / "m", [item])
    assert sorted(p.name for p in (tmp_path / "m" / "wheels").iterdir()) == [
        "app_a-1.0-py3-none-any.whl", "app_b-1.0-py3-none-any.whl", "base-1.0-py3-none-any.whl",
        "base-2.0-py3-none-any.whl"]
    assert manifest["hosts"]["h1"]["venvs"]["/opt/b"]["requirements"] == ["app_b==1.0"]
    check_covers(verify(tmp_path / "m"), [item])
    union = dataclasses.replace(item, wheels=(WheelSet(venv="/opt/a", requirements=("app_a==1.0", "app_b==1.0"),
                                                       **pip),))
    with pytest.raises(UsageError, match="pip download for the mirror"):
        build.build(tmp_path / "union", [union])
