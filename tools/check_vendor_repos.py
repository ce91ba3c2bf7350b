#!/usr/bin/env python3
"""Compare NVIDIA's and AMD's live apt indexes with the recorded descriptions, and the roles with both.

The roles install names recorded in tests/lab/vendors/nvidia.toml and rocm.toml (the lab's stand-ins are built
from them). The vendors' real repositories cannot be reached from the test lab; on a machine with internet
access this script downloads their ``Packages`` indexes and prints

* every package name the roles would install (nvidia_driver for each OS, branch, flavour and install type;
  rocm for each recorded release and OS) that the live index lacks: ``MISSING``, and the exit status is 1;
* every recorded name, or recorded branch of a name, that the live index lacks: ``NOT FOUND``;
* signing keys that are missing or whose fingerprint differs from the pinned one: ``KEY``.

    python3 tools/check_vendor_repos.py                    # the vendors' repositories
    python3 tools/check_vendor_repos.py --only nvidia --os ubuntu2404
    python3 tools/check_vendor_repos.py --nvidia-url 'http://mirror/nvidia/{id}/' --no-keys   # a mirror

Exit status: 0 every name the roles use exists, 1 some do not, 2 bad arguments or no index could be read.
Standard library, the repository's roles and Ansible's templating (for the roles' own variables) only.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
VENDORS = REPO / "tests" / "lab" / "vendors"
NVIDIA_URL = "https://developer.download.nvidia.com/compute/cuda/repos/{id}/x86_64/"
TIMEOUT = 60
FLAVOURS = ("open", "proprietary")
INSTALL_TYPES = ("desktop", "compute")


def load(name: str) -> Dict[str, Any]:
    with (VENDORS / name).open("rb") as handle:
        return tomllib.load(handle)


_FETCHED: Dict[str, Optional[bytes]] = {}


def fetch(url: str) -> Optional[bytes]:
    """The body at ``url`` (each URL downloaded once per run), None when it cannot be read."""
    if url not in _FETCHED:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - URLs of the description
                _FETCHED[url] = response.read()
        except (urllib.error.URLError, OSError):
            _FETCHED[url] = None
    return _FETCHED[url]


def packages(base: str) -> Optional[Dict[str, Set[str]]]:
    """name -> versions of the ``Packages`` index under ``base`` (Packages.gz or Packages); None if unreadable."""
    base = base if base.endswith("/") else base + "/"
    data = fetch(base + "Packages.gz")
    text = gzip.decompress(data).decode("utf-8", "replace") if data else None
    if text is None:
        data = fetch(base + "Packages")
        text = data.decode("utf-8", "replace") if data else None
    if text is None:
        return None
    index: Dict[str, Set[str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if "Package" in fields and "Version" in fields:
            index.setdefault(fields["Package"], set()).add(fields["Version"])
    return index


def fingerprints(key: bytes) -> List[str]:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(["gpg", "--homedir", home, "--batch", "--show-keys", "--with-colons"], input=key,
                             capture_output=True, check=False).stdout.decode()
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


def check_key(url: str, fingerprint: str, report: List[str]) -> None:
    key = fetch(url)
    if key is None:
        report.append(f"KEY {url}: cannot be downloaded")
    elif fingerprint not in fingerprints(key)[:1]:
        report.append(f"KEY {url}: fingerprint {', '.join(fingerprints(key)) or 'none'}, recorded {fingerprint}")


# ---- the names the roles use, from the roles' own variables ----

def _templar(role: str, os_file: str, **overrides: Any) -> Any:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trust(value: Any) -> Any:
        if isinstance(value, str):
            return trust_as_template(value)
        if isinstance(value, dict):
            return {k: trust(v) for k, v in value.items()}
        if isinstance(value, list):
            return [trust(v) for v in value]
        return value

    loader = DataLoader()
    variables: Dict[str, Any] = {"ansible_facts": {"architecture": "x86_64"}}
    base = REPO / "roles" / role
    for path in (base / "defaults" / "main.yml", base / "vars" / "main.yml", base / "vars" / os_file):
        variables.update(trust(loader.load_from_file(str(path))))
    variables.update(overrides)
    templar = Templar(loader=loader, variables=variables)
    return lambda name: templar.template(trust_as_template("{{ " + name + " }}"))


def nvidia_role_names(branches: Iterable[int]) -> Dict[str, List[Tuple[str, List[List[str]]]]]:
    """repository id -> [(case, alternatives: lists of names, one of which must exist whole)]."""
    out: Dict[str, List[Tuple[str, List[List[str]]]]] = {}
    for os_file in sorted(p.name for p in (REPO / "roles" / "nvidia_driver" / "vars").glob("*-*.yml")):
        for branch in branches:
            for flavour in FLAVOURS:
                for install_type in INSTALL_TYPES:
                    value = _templar("nvidia_driver", os_file, nvidia_driver_branch=str(branch),
                                     nvidia_driver_open_modules=flavour == "open",
                                     nvidia_driver_install_type=install_type)
                    repo_id = value("__nvidia_driver_repo_distro")
                    case = f"nvidia_driver {os_file[:-4]} branch {branch} {install_type}/{flavour}"
                    pin = [value("__nvidia_driver_pinning_package")] if value("nvidia_driver_pinning") else []
                    choices = [pin + value("__nvidia_driver_unversioned")]
                    if not value("__nvidia_driver_unversioned_only"):
                        choices.append(pin + value("__nvidia_driver_suffixed"))
                    out.setdefault(repo_id, []).append((case, choices))
    return out


def in_branch(index: Dict[str, Set[str]], name: str, branch: int) -> bool:
    """``name`` exists; a driver package must have a version of ``branch`` (pinning packages are the branch)."""
    if name not in index:
        return False
    return name.startswith("nvidia-driver-pinning-") or any(v.startswith(f"{branch}.") for v in index[name])


def check_nvidia(args: argparse.Namespace, report: List[str], missing: List[str]) -> int:
    desc = load("nvidia.toml")
    branches = sorted(desc["pinning"]["branches"])
    role_names = nvidia_role_names(branches)
    checked = 0
    for repo in desc["repository"]:
        if args.os and repo["id"] not in args.os:
            continue
        base = args.nvidia_url.format(id=repo["id"])
        index = packages(base)
        if index is None:
            report.append(f"UNREADABLE {base}Packages(.gz)")
            continue
        checked += 1
        if not args.no_keys:
            check_key(base + repo["key_file"], repo["key_fingerprint"], report)
        for entry in desc["package"]:
            if entry["family"] != repo["family"]:
                continue
            if entry["name"] not in index:
                report.append(f"NOT FOUND nvidia {repo['id']}: {entry['name']} (recorded {entry['status']})")
                continue
            for branch in entry["branches"]:
                if not in_branch(index, entry["name"], branch):
                    report.append(f"NOT FOUND nvidia {repo['id']}: {entry['name']} has no {branch} version")
        for branch in branches:
            pinning = desc["pinning"]["name"].replace("{branch}", str(branch))
            if pinning not in index:
                report.append(f"NOT FOUND nvidia {repo['id']}: {pinning} (recorded {desc['pinning']['status']})")
        for case, choices in role_names.get(repo["id"], []):
            branch = int(case.split(" branch ")[1].split()[0])
            if not any(all(in_branch(index, n, branch) for n in names) for names in choices):
                absent = sorted({n for names in choices for n in names if not in_branch(index, n, branch)})
                missing.append(f"MISSING nvidia {repo['id']}: {' '.join(absent)} ({case})")
    return checked


def check_rocm(args: argparse.Namespace, report: List[str], missing: List[str]) -> int:
    desc = load("rocm.toml")
    checked = 0
    for os_file in sorted(p.name for p in (REPO / "roles" / "rocm" / "vars").glob("*-*.yml")):
        for release in desc["release"]:
            value = _templar("rocm", os_file, rocm_version=release["version"])
            distro, codename = value("__rocm_distro"), value("__rocm_repo_suite")
            if args.os and distro not in args.os:
                continue
            where = f"rocm {release['version']} {distro}"
            sources = {"rocm": (value("rocm_repo_url"), value("rocm_repo_suite"), value("rocm_repo_components")),
                       "amdgpu": (value("rocm_amdgpu_repo_url"), value("rocm_amdgpu_repo_suite"), ["main"])}
            wanted = {"rocm": value("rocm_packages"), "amdgpu": ["amdgpu-dkms"]}
            for repo, (url, suite, components) in sources.items():
                template = args.rocm_url if repo == "rocm" else args.amdgpu_url
                if template:
                    base = template.format(version=release["version"], distro=distro, codename=codename)
                else:
                    base = f"{url.rstrip('/')}/dists/{suite}/{(components or ['main'])[0]}/binary-amd64/"
                index = packages(base)
                if index is None:
                    report.append(f"UNREADABLE {where} {repo}: {base}Packages(.gz)")
                    continue
                checked += 1
                for name in wanted[repo]:
                    if name not in index:
                        missing.append(f"MISSING {where}: {name} (rocm role, {repo} repository {base})")
                for entry in desc["package"]:
                    if entry["release"] == release["version"] and entry.get("repo", "rocm") == repo \
                            and entry["name"] not in index:
                        report.append(f"NOT FOUND {where}: {entry['name']} (recorded {entry['status']})")
            if not args.no_keys:
                check_key(value("rocm_repo_key_url"), value("rocm_repo_key_fingerprint"), report)
    return checked


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["nvidia", "rocm"], help="check one vendor")
    parser.add_argument("--os", action="append", help="repository id / distro to check (repeatable): ubuntu2404, ...")
    parser.add_argument("--nvidia-url", default=NVIDIA_URL, help="NVIDIA repository URL template with {id}")
    parser.add_argument("--rocm-url", help="ROCm index URL template ({version}, {distro}, {codename}) for a mirror")
    parser.add_argument("--amdgpu-url", help="amdgpu index URL template ({version}, {distro}, {codename}) for a mirror")
    parser.add_argument("--no-keys", action="store_true", help="do not check the signing keys (a mirror's own key)")
    args = parser.parse_args(argv)
    if "{id}" not in args.nvidia_url:
        parser.error("--nvidia-url needs {id}")
    report: List[str] = []
    missing: List[str] = []
    checked = 0
    if args.only in (None, "nvidia"):
        checked += check_nvidia(args, report, missing)
    if args.only in (None, "rocm"):
        checked += check_rocm(args, report, missing)
    for line in sorted(set(report)) + sorted(set(missing)):
        print(line)
    if not checked:
        print("no index could be read (offline?)", file=sys.stderr)
        return 2
    print(f"{checked} indexes read, {len(set(missing))} names the roles use are missing, "
          f"{len(set(report))} other differences")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
