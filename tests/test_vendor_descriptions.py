"""The recorded vendor descriptions, the stand-ins built from them, and the roles rendered against them.

tests/lab/vendors/*.toml record NVIDIA's and AMD's repositories with a source per entry. The lab's stand-in
repositories are built from them alone, and every repository, key and package name the roles would use on
each supported OS, driver branch, flavour and ROCm release must exist there (a role variable is rendered
with Ansible's own templating, from the role's defaults and vars files).
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from lab import vendor_repos

REPO = Path(__file__).resolve().parents[1]
NVIDIA_ROLE = REPO / "roles" / "nvidia_driver"
ROCM_ROLE = REPO / "roles" / "rocm"
NVIDIA = vendor_repos.load(vendor_repos.NVIDIA)
ROCM = vendor_repos.load(vendor_repos.ROCM)
BRANCHES = (580, 595, 615)
FLAVOURS = ("open", "proprietary")
INSTALL_TYPES = ("desktop", "compute")
NVIDIA_OS_FILES = sorted(p.name for p in (NVIDIA_ROLE / "vars").glob("*-*.yml"))
ROCM_OS_FILES = sorted(p.name for p in (ROCM_ROLE / "vars").glob("*-*.yml"))


def _trust(value: Any) -> Any:
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trust(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trust(v) for v in value]
    return value


def render(role: Path, os_file: str, **overrides: Any) -> Templar:
    """A templar over the role's defaults, vars/main.yml and one OS vars file, as the role sees them."""
    loader = DataLoader()
    variables: Dict[str, Any] = {"ansible_facts": {"architecture": "x86_64"}}
    for path in (role / "defaults" / "main.yml", role / "vars" / "main.yml", role / "vars" / os_file):
        variables.update(_trust(loader.load_from_file(str(path))))
    variables.update(overrides)
    return Templar(loader=loader, variables=variables)


def value(templar: Templar, name: str) -> Any:
    return templar.template(trust_as_template("{{ " + name + " }}"))


def carries(family: str, name: str, branch: int) -> bool:
    return any(p["family"] == family and p["name"] == name and branch in p["branches"] for p in NVIDIA["package"])


def repository(repo_id: str) -> Dict[str, Any]:
    return next(r for r in NVIDIA["repository"] if r["id"] == repo_id)


# ---- the descriptions themselves ----

@pytest.mark.parametrize("desc", [NVIDIA, ROCM], ids=["nvidia", "rocm"])
def test_every_entry_names_known_sources_and_a_status(desc: Dict[str, Any]) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", desc["recorded"])
    entries: List[Dict[str, Any]] = [*desc.get("repository", ()), *desc.get("package", ()), *desc.get("release", ()),
                                     *desc.get("family", {}).values(), *desc.get("branch", {}).values()]
    if "pinning" in desc:
        entries.append(desc["pinning"])
    assert len(entries) > 10
    for entry in entries:
        assert entry["status"] in ("confirmed", "lead"), entry
        assert entry["sources"], entry
        assert set(entry["sources"]) <= set(desc["sources"]), entry


def test_nvidia_branches_carry_versions_of_the_branch() -> None:
    for branch, entry in NVIDIA["branch"].items():
        assert entry["versions"] and all(v.startswith(f"{branch}.") for v in entry["versions"]), branch
    for package in NVIDIA["package"]:
        assert set(package["branches"]) <= {int(b) for b in NVIDIA["branch"]}, package["name"]


# ---- the stand-ins come from the descriptions, never from the roles ----

def test_the_builder_reads_no_role() -> None:
    source = Path(vendor_repos.__file__).read_text()
    tree = ast.parse(source)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not any("roles" in s.split("/") or s == "roles" for s in strings)
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert not any("yaml" in name or "ansible" in name for name in imports)


def test_stand_in_names_and_versions_follow_the_description() -> None:
    desc = copy.deepcopy(NVIDIA)
    built = {(p.name, p.version) for p in vendor_repos.nvidia_packages(desc, "debian")}
    assert ("nvidia-open", "595.71.05-1") in built
    assert ("nvidia-driver-pinning-615", "615-1") in built
    entry = next(p for p in desc["package"] if p["family"] == "debian" and p["name"] == "nvidia-open")
    entry["name"] = "nvidia-open-renamed"
    desc["branch"]["595"]["versions"].append("595.99.01")
    renamed = {(p.name, p.version) for p in vendor_repos.nvidia_packages(desc, "debian")}
    assert not any(name == "nvidia-open" for name, _ in renamed)
    assert ("nvidia-open-renamed", "595.99.01-1") in renamed


def test_pinning_stand_in_pins_its_branch_at_priority_1000() -> None:
    pin = next(p for p in vendor_repos.nvidia_packages(NVIDIA, "ubuntu") if p.name == "nvidia-driver-pinning-595")
    assert pin.provides == pin.conflicts == pin.replaces == ("nvidia-driver-pinning",)
    (path, content), = pin.files
    assert path.startswith("/etc/apt/preferences.d/")
    assert "Pin: version 595.*" in content and "Pin-Priority: 1000" in content
    assert "nvidia-open" in content.split("Package:")[1].split("\n")[0].split()


# ---- the roles rendered against the descriptions ----

@pytest.mark.parametrize("os_file", NVIDIA_OS_FILES)
def test_nvidia_repository_and_key_per_os(os_file: str) -> None:
    templar = render(NVIDIA_ROLE, os_file)
    distro = value(templar, "__nvidia_driver_repo_distro")
    recorded = repository(distro)
    assert value(templar, "nvidia_driver_repo_url") == \
        f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/"
    assert value(templar, "nvidia_driver_repo_key_url").endswith("/" + recorded["key_file"])
    assert value(templar, "nvidia_driver_repo_key_fingerprint") == recorded["key_fingerprint"]
    assert value(templar, "nvidia_driver_packaging") == recorded["family"]


@pytest.mark.parametrize("os_file", NVIDIA_OS_FILES)
@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("install_type", INSTALL_TYPES)
def test_nvidia_names_exist_for_branch(os_file: str, branch: int, flavour: str, install_type: str) -> None:
    templar = render(NVIDIA_ROLE, os_file, nvidia_driver_branch=str(branch),
                     nvidia_driver_open_modules=flavour == "open", nvidia_driver_install_type=install_type)
    family = value(templar, "nvidia_driver_packaging")
    assert value(templar, "nvidia_driver_pinning")
    pinning = value(templar, "__nvidia_driver_pinning_package")
    assert pinning == NVIDIA["pinning"]["name"].replace("{branch}", str(branch))
    assert branch in NVIDIA["pinning"]["branches"]
    unversioned = value(templar, "__nvidia_driver_unversioned")
    suffixed = value(templar, "__nvidia_driver_suffixed")
    # What the role installs: the unversioned names when the branch is published under them (always from
    # 590 on), otherwise the names the branch was published under.
    if value(templar, "__nvidia_driver_unversioned_only"):
        assert branch >= 590
        names = unversioned
    else:
        names = unversioned if all(carries(family, n, branch) for n in unversioned) else suffixed
    assert names and all(carries(family, n, branch) for n in names), (family, names)
    roles = {p["role"] for p in NVIDIA["package"] if p["family"] == family and p["name"] in names}
    if install_type == "desktop":
        assert roles == {f"desktop/{flavour}"}
    else:
        assert roles == {"compute", f"compute/{flavour}"}
    assert set(names) <= set(value(templar, "__nvidia_driver_candidates"))


def test_nvidia_candidates_include_both_namings_up_to_580() -> None:
    templar = render(NVIDIA_ROLE, "Ubuntu-24.04.yml", nvidia_driver_branch="580")
    assert value(templar, "__nvidia_driver_candidates") == ["libnvidia-compute", "nvidia-dkms-open",
                                                            "libnvidia-compute-580", "nvidia-dkms-580-open"]
    templar = render(NVIDIA_ROLE, "Ubuntu-24.04.yml", nvidia_driver_branch="615", nvidia_driver_packages=["x"])
    assert value(templar, "__nvidia_driver_candidates") == ["x"]


@pytest.mark.parametrize("os_file", ROCM_OS_FILES)
@pytest.mark.parametrize("release", [r["version"] for r in ROCM["release"]])
def test_rocm_repository_and_packages_per_release(os_file: str, release: str) -> None:
    templar = render(ROCM_ROLE, os_file, rocm_version=release)
    recorded = next(r for r in ROCM["release"] if r["version"] == release)
    distro = value(templar, "__rocm_distro")
    codename = value(templar, "__rocm_repo_suite")
    assert value(templar, "rocm_layout") == recorded["layout"]
    fill = {"{distro}": distro, "{codename}": codename}
    expected = {key: recorded[key] for key in ("repo", "suite", "key_url", "amdgpu_repo", "amdgpu_suite")}
    for key, text in expected.items():
        for placeholder, replacement in fill.items():
            text = text.replace(placeholder, replacement)
        expected[key] = text
    assert value(templar, "rocm_repo_url") == expected["repo"]
    assert value(templar, "rocm_repo_suite") == expected["suite"]
    assert value(templar, "rocm_repo_components") == recorded["components"]
    assert value(templar, "rocm_repo_key_url") == expected["key_url"]
    assert value(templar, "rocm_repo_key_fingerprint") == recorded["key_fingerprint"]
    assert value(templar, "rocm_amdgpu_repo_url") == expected["amdgpu_repo"]
    assert value(templar, "rocm_amdgpu_repo_suite") == expected["amdgpu_suite"]
    names = {p["name"] for p in ROCM["package"] if p["release"] == release and p["role"] == "meta"}
    assert value(templar, "rocm_packages") == sorted(names)
    assert any(p["name"] == "amdgpu-dkms" and p.get("repo") == "amdgpu"
               for p in ROCM["package"] if p["release"] == release)


def test_rocm_gfx_target_picks_the_gfx_meta_package() -> None:
    templar = render(ROCM_ROLE, "Ubuntu-24.04.yml", rocm_version="7.14", rocm_gfx_target="gfx942")
    assert value(templar, "rocm_packages") == ["amdrocm7.14-gfx942"]
    assert any(p["name"] == "amdrocm7.14-gfx942" for p in ROCM["package"])
    templar = render(ROCM_ROLE, "Ubuntu-24.04.yml", rocm_version="7.2", rocm_gfx_target="gfx942")
    assert value(templar, "rocm_packages") == ["rocm"]


@pytest.mark.parametrize("os_file", sorted(p.name for p in (REPO / "roles" / "cuda_toolkit" / "vars").glob("*-*.yml")))
def test_cuda_toolkit_uses_the_repository_key_of_its_os(os_file: str) -> None:
    templar = render(REPO / "roles" / "cuda_toolkit", os_file)
    recorded = repository(value(templar, "__cuda_toolkit_repo_distro"))
    assert value(templar, "cuda_toolkit_repo_key_url").endswith("/x86_64/" + recorded["key_file"])
    assert value(templar, "cuda_toolkit_repo_key_fingerprint") == recorded["key_fingerprint"]
    assert sorted(os_file for os_file in NVIDIA_OS_FILES) == sorted(
        p.name for p in (REPO / "roles" / "cuda_toolkit" / "vars").glob("*-*.yml"))
