"""Signed stand-ins of NVIDIA's and AMD's apt repositories, built from the recorded descriptions only.

``tests/lab/vendors/nvidia.toml`` and ``rocm.toml`` record what the vendors publish (package names, versions
per branch or release, what the version-locking packages pin, the dependencies that matter), each entry with
its source. This module turns them into real signed flat apt repositories of tiny packages with the same
Package/Version/Depends/Provides/Conflicts/Replaces fields, so the roles converge against the vendors'
layout, not against names taken from the roles (nothing here reads ``roles/``):

    <root>/key.asc                       the signing key
    <root>/nvidia/<family>/              one repository per naming family ("debian", "ubuntu")
    <root>/nvidia/<repository id>/       -> its family (debian12, debian13, ubuntu2204, ubuntu2404, ubuntu2604)
    <root>/rocm/<release>/               ROCm packages of a release (7.2, 7.14, 10.0)
    <root>/amdgpu/<release>/             the amdgpu driver that release installs

Command line: ``python -m tests.lab.vendor_repos build ROOT`` prints the key's fingerprint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from lab import mirror  # signed flat repositories: the same key and signing steps as the lab mirror

VENDORS = Path(__file__).resolve().parent / "vendors"
NVIDIA = VENDORS / "nvidia.toml"
ROCM = VENDORS / "rocm.toml"


@dataclass(frozen=True)
class StandIn:
    """One package of a stand-in repository."""

    name: str
    version: str
    depends: Tuple[str, ...] = ()
    provides: Tuple[str, ...] = ()
    conflicts: Tuple[str, ...] = ()
    replaces: Tuple[str, ...] = ()
    files: Tuple[Tuple[str, str], ...] = ()  #: (absolute path, content)
    scripts: Tuple[Tuple[str, str], ...] = ()  #: (maintainer script name: postinst, prerm, ..., content)


@dataclass(frozen=True)
class VendorMirror:
    """Built stand-ins under ``root``, all signed by the key with ``fingerprint``."""

    root: Path
    fingerprint: str
    packages: Mapping[str, Tuple[StandIn, ...]] = field(default_factory=dict)  #: repository path -> packages

    @property
    def key(self) -> Path:
        return self.root / "key.asc"


def load(path: Path) -> Dict[str, Any]:
    """The recorded description at ``path``."""
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def nvidia_branch_versions(desc: Mapping[str, Any], branch: int) -> List[str]:
    """Driver versions (upstream, e.g. 595.71.05) recorded for ``branch``, oldest first."""
    versions = desc["branch"][str(branch)]["versions"]
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def nvidia_families(desc: Mapping[str, Any]) -> List[str]:
    return sorted(desc["family"])


#: The stand-in kernel module (``dkms_modules``): a tiny out-of-tree module named like NVIDIA's, which DKMS
#: builds for each kernel as it builds the real driver (dkms.conf with AUTOINSTALL, installed to updates/dkms).
DKMS_MODULE = "nvidia"
_MODULE_C = """// Stand-in for the NVIDIA driver's kernel module (dlsetup test lab): loads and says so, nothing else.
#include <linux/module.h>
#include <linux/init.h>
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dlsetup lab stand-in for the NVIDIA kernel module");
MODULE_VERSION("{upstream}");
static int __init standin_init(void) {{ pr_info("nvidia stand-in {upstream} loaded\\n"); return 0; }}
static void __exit standin_exit(void) {{ }}
module_init(standin_init);
module_exit(standin_exit);
"""
_DKMS_CONF = """PACKAGE_NAME="{module}"
PACKAGE_VERSION="{upstream}"
BUILT_MODULE_NAME[0]="{module}"
DEST_MODULE_LOCATION[0]="/updates/dkms"
MAKE[0]="make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{module}/{upstream}/build modules"
CLEAN="make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{module}/{upstream}/build clean"
AUTOINSTALL="yes"
"""
#: what dh_dkms writes into a DKMS package's maintainer scripts (Debian's dkms ships common.postinst)
_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then /usr/lib/dkms/common.postinst {module} {upstream} "" "" "$2"; fi
"""
_PRERM = """#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = upgrade ] || [ "$1" = deconfigure ]; then
  dkms remove -m {module} -v {upstream} --all || true
fi
"""


def dkms_stand_in(package: StandIn, upstream: str) -> StandIn:
    """``package`` carrying the stand-in module's source under /usr/src/nvidia-<upstream>, with dh_dkms's
    maintainer scripts and a dependency on dkms: installing it builds the module for the installed kernels."""
    values = {"module": DKMS_MODULE, "upstream": upstream}
    src = f"/usr/src/{DKMS_MODULE}-{upstream}"
    return StandIn(
        name=package.name, version=package.version, depends=package.depends + ("dkms",),
        provides=package.provides, conflicts=package.conflicts, replaces=package.replaces,
        files=package.files + ((f"{src}/dkms.conf", _DKMS_CONF.format(**values)),
                               (f"{src}/Makefile", f"obj-m := {DKMS_MODULE}.o\n"),
                               (f"{src}/{DKMS_MODULE}.c", _MODULE_C.format(**values))),
        scripts=(("postinst", _POSTINST.format(**values)), ("prerm", _PRERM.format(**values))),
    )


def nvidia_packages(desc: Mapping[str, Any], family: str, dkms_modules: bool = False) -> Tuple[StandIn, ...]:
    """Every package of the ``family`` repository: each name in every version of each branch it carries.
    With ``dkms_modules`` the kernel-module packages (names with "dkms") carry the stand-in module."""
    revision = desc["family"][family]["revision"]
    out: List[StandIn] = []
    for entry in desc["package"]:
        if entry["family"] != family:
            continue
        for branch in entry["branches"]:
            for upstream in nvidia_branch_versions(desc, branch):
                version = upstream + revision
                values = {"version": version, "upstream": upstream, "branch": str(branch)}
                package = StandIn(
                    name=entry["name"], version=version,
                    depends=tuple(_fill(d, **values) for d in entry.get("depends", ())),
                    conflicts=tuple(_fill(c, **values) for c in entry.get("conflicts", ())),
                )
                out.append(dkms_stand_in(package, upstream) if dkms_modules and "dkms" in entry["name"] else package)
    pinning = desc["pinning"]
    for branch in pinning["branches"]:
        values = {"branch": str(branch)}
        pins = " ".join(_fill(name, **values) for name in pinning["pins"][family])
        content = (f"# {_fill(pinning['name'], **values)}: lock the NVIDIA driver onto branch {branch}\n"
                   f"Package: {pins}\nPin: version {branch}.*\nPin-Priority: {pinning['priority']}\n")
        out.append(StandIn(
            name=_fill(pinning["name"], **values),
            version=_fill(desc["family"][family]["pinning_version"], **values),
            provides=tuple(pinning["provides"]), conflicts=tuple(pinning["conflicts"]),
            replaces=tuple(pinning["replaces"]),
            files=((_fill(pinning["file"], **values), content),),
        ))
    return tuple(out)


def rocm_packages(desc: Mapping[str, Any], release: str, repo: str) -> Tuple[StandIn, ...]:
    """The packages of ``release`` in its ``repo`` ("rocm" or "amdgpu")."""
    out = []
    for entry in desc["package"]:
        if entry["release"] != release or entry.get("repo", "rocm") != repo:
            continue
        values = {"version": entry["version"]}
        out.append(StandIn(
            name=entry["name"], version=entry["version"],
            depends=tuple(_fill(d, **values) for d in entry.get("depends", ())),
            files=tuple((path, f"{entry['name']} {entry['version']}\n") for path in entry.get("files", ())),
        ))
    return tuple(out)


def layout(desc: Mapping[str, Any], release: str) -> str:
    """``legacy`` or ``therock``, as the description records it for ``release``."""
    return next(r["layout"] for r in desc["release"] if r["version"] == release)


def _run(args: Sequence[str], **kwargs: Any) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


def _deb(package: StandIn, pool: Path) -> None:
    """Build one stand-in .deb: the control fields, a marker file and the package's own files."""
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp)
        (pkg / "DEBIAN").mkdir()
        control = [f"Package: {package.name}", f"Version: {package.version}", "Architecture: all",
                   "Maintainer: dlsetup test lab <lab@example.invalid>"]
        for label, values in (("Depends", package.depends), ("Provides", package.provides),
                              ("Conflicts", package.conflicts), ("Replaces", package.replaces)):
            if values:
                control.append(f"{label}: {', '.join(values)}")
        control.append(f"Description: stand-in for the vendor package {package.name}")
        (pkg / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        doc = pkg / "usr" / "share" / "doc" / package.name
        doc.mkdir(parents=True)
        (doc / "stand-in").write_text(f"{package.name} {package.version}\n")
        for path, content in package.files:
            target = pkg / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        for name, content in package.scripts:
            script = pkg / "DEBIAN" / name
            script.write_text(content)
            script.chmod(0o755)
        safe = package.version.replace(":", "%3a")
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(pkg),
              str(pool / f"{package.name}_{safe}_all.deb")])


def repositories(nvidia: Mapping[str, Any], rocm: Mapping[str, Any],
                 dkms_modules: bool = False) -> Iterator[Tuple[str, Tuple[StandIn, ...]]]:
    """(repository path under the root, packages) for every stand-in the descriptions describe."""
    for family in nvidia_families(nvidia):
        yield f"nvidia/{family}", nvidia_packages(nvidia, family, dkms_modules)
    for release in rocm["release"]:
        for repo in ("rocm", "amdgpu"):
            yield f"{repo}/{release['version']}", rocm_packages(rocm, release["version"], repo)


def build(root: Path, nvidia: Path = NVIDIA, rocm: Path = ROCM, dkms_modules: bool = False) -> VendorMirror:
    """Build every stand-in repository under ``root`` from the two descriptions, with a fresh key; with
    ``dkms_modules`` NVIDIA's kernel-module packages carry a real (stand-in) DKMS module."""
    nvidia_desc, rocm_desc = load(nvidia), load(rocm)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dlsetup-vendor-gnupg-"))
    gnupg = scratch / "home"
    try:
        fingerprint = mirror.new_signing_key(gnupg, "dlsetup vendor stand-ins <vendors@example.invalid>")
        (root / "key.asc").write_text(mirror.export_key(gnupg))
        built: Dict[str, Tuple[StandIn, ...]] = {}
        jobs = []
        for path, packages in repositories(nvidia_desc, rocm_desc, dkms_modules):
            repo = root / path
            repo.mkdir(parents=True, exist_ok=True)
            built[path] = packages
            jobs.extend((package, repo) for package in packages)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda job: _deb(*job), jobs))
        for path in built:
            mirror.sign_repository(root / path, gnupg)
        for entry in nvidia_desc["repository"]:
            link = root / "nvidia" / entry["id"]
            if not link.exists():
                link.symlink_to(entry["family"])
            built[f"nvidia/{entry['id']}"] = built[f"nvidia/{entry['family']}"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return VendorMirror(root=root, fingerprint=fingerprint, packages=built)


def newest(packages: Sequence[StandIn], name: str, prefix: str = "") -> Optional[str]:
    """The highest version of ``name`` among ``packages`` that starts with ``prefix`` (dpkg ordering)."""
    from functools import cmp_to_key

    versions = [p.version for p in packages if p.name == name and p.version.startswith(prefix)]
    if not versions:
        return None

    def compare(a: str, b: str) -> int:
        if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0:
            return -1
        return 0 if a == b else 1

    return max(versions, key=cmp_to_key(compare))


def main(argv: List[str]) -> int:
    """``build ROOT``: build the stand-ins and print the signing key's fingerprint."""
    match argv:
        case ["build", root]:
            print(build(Path(root)).fingerprint)
            return 0
        case _:
            print(__doc__, file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
