"""What a plan installs, as a mirror must hold it: distribution and vendor packages per OS release and
architecture, and the wheels per Python and platform. Pure: the role data (the package names the roles
install, read from their ``vars/`` files by :func:`dlsetup.mirror.roles.role_data`) comes in as an argument,
so the roles stay the one source of package names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from dlsetup.pkgindex import GLIBC

#: uname -m -> Debian architecture
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el"}
#: the roles a mirror covers; a plan with another role is refused by name
COVERED_ROLES = ("common", "storage", "nvidia_driver", "cuda_toolkit", "nvidia_container_toolkit", "frameworks",
                 "jupyter")
#: where each vendor role keeps its repository in the plan's variables (``<prefix>_url`` ...)
REPO_PREFIXES = {"nvidia_driver": "nvidia_driver_repo", "cuda_toolkit": "cuda_toolkit_repo",
                 "nvidia_container_toolkit": "nvidia_container_toolkit_repo"}


class NotCovered(ValueError):
    """The plan holds something a mirror cannot carry (a role dlsetup mirror does not know)."""


@dataclass(frozen=True)
class Repo:
    """A vendor apt repository of a plan, with its pinned signing key."""

    url: str
    suite: str
    key_url: str
    fingerprint: str


@dataclass(frozen=True)
class WheelSet:
    """The wheels of one venv of a host: for its Python and platform, from the plan's index settings. Each
    venv is resolved on its own (a pip download per set), as pip resolves it when the role installs it: the
    union of two venvs' requirements may not resolve at all (torch and TensorFlow pin different CUDA wheels)."""

    venv: str  #: the venv's path on the host
    python: str  #: "3.11"
    platform: str  #: pip --platform, e.g. "manylinux_2_35_x86_64"
    requirements: Tuple[str, ...]
    index_url: str = ""  #: "" : pip's configuration
    vendor_indexes: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()  #: (url, projects) fetched from that index alone
    find_links: Tuple[str, ...] = ()
    offline: bool = False
    trusted_hosts: Tuple[str, ...] = ()  #: pip --trusted-host: the plain-http hosts the plan's pip may use

    @property
    def key(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.platform}"


@dataclass(frozen=True)
class Contents:
    """Everything one host's plan installs."""

    host: str
    release: str  #: "debian-12": the apt repository of the mirror it takes its packages from
    codename: str
    arch: str  #: Debian architecture, "amd64"
    packages: Tuple[str, ...]  #: apt packages that must be installable
    #: apt packages of which one set must be installable (NVIDIA's driver names, unversioned or suffixed)
    alternatives: Tuple[Tuple[str, ...], ...] = ()
    repos: Tuple[Repo, ...] = ()
    wheels: Tuple[WheelSet, ...] = ()  #: one per venv the plan makes

    @property
    def apt_repo(self) -> str:
        """The folder of the mirror's apt repository for this host: ``debian-12-amd64``."""
        return f"{self.release}-{self.arch}"

    def all_packages(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(self.packages + tuple(p for alt in self.alternatives for p in alt)))


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    """A role's value with its Jinja expressions filled in from ``context`` (lists element-wise)."""
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if isinstance(value, str) and "{{" in value:
        from jinja2.nativetypes import NativeEnvironment

        return NativeEnvironment().from_string(value).render(**context)
    return value


def _python(plan: Any, fallback: Optional[str]) -> str:
    for decision in plan.decisions:
        if decision.topic == "python":
            return str(decision.choice)
    if fallback:
        return fallback
    raise NotCovered("the plan names no Python for the framework venv")


def plan_contents(host: str, plan: Any, os_id: str, os_version: str, codename: str, machine: str, kernel: str,
                  roles: Mapping[str, Any], python: Optional[str] = None) -> Contents:
    """What ``plan`` (a :class:`dlsetup.plan.Plan`) installs on a host running ``os_id`` ``os_version``
    (``codename``) on ``machine`` (uname -m) with ``kernel``. ``roles``: :func:`dlsetup.mirror.roles.role_data`
    for that OS. Raises :class:`NotCovered` for a role a mirror cannot carry."""
    variables: Dict[str, Any] = dict(plan.variables)
    other = [role for role in plan.roles if role not in COVERED_ROLES]
    if other:
        raise NotCovered(f"dlsetup mirror does not carry the {', '.join(other)} role(s) yet")
    arch = DEB_ARCH.get(machine)
    if arch is None:
        raise NotCovered(f"no Debian architecture known for {machine}")
    context = {**variables, "ansible_facts": {"kernel": kernel, "architecture": machine}}
    packages: List[str] = []
    alternatives: List[Tuple[str, ...]] = []
    repos: List[Repo] = []
    common = roles.get("common", {})
    if "common" in plan.roles:
        packages += common.get("packages", [])
        packages += variables.get("common_extra_packages", [])
        if variables.get("common_install_headers"):
            packages += _render(common.get("headers_packages", []), context)
    if "storage" in plan.roles:
        packages += roles.get("storage", {}).get("packages", [])
    if "frameworks" in plan.roles:
        packages += roles.get("frameworks", {}).get("packages", [])
    if "nvidia_driver" in plan.roles:
        alternatives += _nvidia_driver(variables, roles.get("nvidia_driver", {}))
    if "cuda_toolkit" in plan.roles:
        packages += list(_render(roles.get("cuda_toolkit", {}).get("packages", []), {
            "cuda_toolkit_cudnn": True, "cuda_toolkit_nccl": True, **context}))
    if "nvidia_container_toolkit" in plan.roles:
        packages += roles.get("nvidia_container_toolkit", {}).get("packages", [])
    for role, prefix in REPO_PREFIXES.items():
        if role in plan.roles and variables.get(f"{prefix}_url"):
            repo = Repo(str(variables[f"{prefix}_url"]), str(variables.get(f"{prefix}_suite", "/")),
                        str(variables.get(f"{prefix}_key_url", "")),
                        str(variables.get(f"{prefix}_key_fingerprint", "")))
            if repo not in repos:
                repos.append(repo)
    wheels: List[WheelSet] = []
    platform = f"manylinux_{GLIBC[0]}_{GLIBC[1]}_{machine}"
    jupyter = roles.get("jupyter", {})
    kernel_venvs = {str(k["venv"]) for k in variables.get("jupyter_kernels", [])} if "jupyter" in plan.roles else set()
    if "frameworks" in plan.roles:
        pip: Dict[str, Any] = {"index_url": str(variables.get("frameworks_pip_index_url") or ""),
               "vendor_indexes": tuple((str(v["url"]), tuple(v["projects"]))
                                       for v in variables.get("frameworks_pip_vendor_indexes", [])),
               "find_links": tuple(variables.get("frameworks_pip_find_links", [])),
               "offline": bool(variables.get("frameworks_pip_offline")),
               "trusted_hosts": tuple(variables.get("frameworks_pip_trusted_hosts", []))}
        venvs = variables.get("frameworks_venvs") or [
            {"path": variables.get("frameworks_venv_path", ""), "packages": variables.get("frameworks_packages", [])}]
        for venv in venvs:
            # the jupyter role adds ipykernel to each kernel's venv: resolved with the venv's own requirements
            requirements = tuple(venv["packages"]) + (("ipykernel",) if str(venv["path"]) in kernel_venvs else ())
            if venv["packages"]:
                wheels.append(WheelSet(venv=str(venv["path"]), python=_python(plan, python), platform=platform,
                                       requirements=requirements, **pip))
    if "jupyter" in plan.roles:
        packages += jupyter.get("packages", [])
        if variables.get("jupyter_remote_ide"):
            packages += variables.get("jupyter_remote_ide_packages", jupyter.get("remote_ide_packages", []))
        wheels.append(WheelSet(
            venv=str(variables.get("jupyter_venv_path", jupyter.get("venv_path", ""))), python=_python(plan, python),
            platform=platform, requirements=tuple(variables.get("jupyter_packages", jupyter.get("pip_packages", []))),
            index_url=str(variables.get("jupyter_pip_index_url") or ""),
            find_links=tuple(variables.get("jupyter_pip_find_links", [])),
            offline=bool(variables.get("jupyter_pip_offline")),
            trusted_hosts=tuple(variables.get("jupyter_pip_trusted_hosts", []))))
    return Contents(host=host, release=f"{os_id}-{os_version.split('.')[0] if os_id == 'debian' else os_version}",
                    codename=codename, arch=arch, packages=tuple(dict.fromkeys(packages)),
                    alternatives=tuple(alternatives), repos=tuple(repos), wheels=tuple(wheels))


def _nvidia_driver(variables: Mapping[str, Any], data: Mapping[str, Any]) -> List[Tuple[str, ...]]:
    """The NVIDIA driver's package sets, as the role chooses among them (roles/nvidia_driver/vars/main.yml)."""
    branch = str(variables.get("nvidia_driver_branch", ""))
    pinning = variables.get("nvidia_driver_pinning", int(branch or 0) >= 580)
    pin = (f"nvidia-driver-pinning-{branch}",) if pinning else ()
    if variables.get("nvidia_driver_packages"):
        return [pin + tuple(variables["nvidia_driver_packages"])]
    names = data.get("names", {}).get(data.get("packaging", ""), {})
    kind = str(variables.get("nvidia_driver_install_type", "compute"))
    flavour = "open" if variables.get("nvidia_driver_open_modules", True) else "proprietary"
    unversioned = tuple(names.get("unversioned", {}).get(kind, {}).get(flavour, []))
    suffixed = tuple(n.replace("BRANCH", branch) for n in names.get("suffixed", {}).get(kind, {}).get(flavour, []))
    if int(branch or 0) >= int(data.get("first_unversioned", 590)):
        return [pin + unversioned]
    return [pin + unversioned, pin + suffixed]


def group_by_release(contents: Sequence[Contents]) -> Dict[str, List[Contents]]:
    """The hosts' contents per apt repository of the mirror (``debian-12-amd64``)."""
    groups: Dict[str, List[Contents]] = {}
    for item in contents:
        groups.setdefault(item.apt_repo, []).append(item)
    return groups


def missing(contents: Contents, available: Mapping[str, Any], wheel_sets: Mapping[str, Any]) -> List[str]:
    """What the mirror lacks for ``contents``: ``available`` maps an apt repository (``debian-12-amd64``)
    to the package names it holds; ``wheel_sets`` a wheel set's key to the requirements it was fetched
    for. Empty: covered."""
    lacking: List[str] = []
    names = set(available.get(contents.apt_repo, ()))
    if contents.apt_repo not in available and (contents.packages or contents.alternatives):
        lacking.append(f"no apt repository for {contents.apt_repo}")
    else:
        lacking += [f"package {name} ({contents.apt_repo})" for name in contents.packages if name not in names]
        if contents.alternatives and not _any_alternative(contents.alternatives, names):
            lacking.append("packages " + " or ".join(" ".join(option) for option in contents.alternatives)
                           + f" ({contents.apt_repo})")
    for wheels in contents.wheels:
        fetched = set(wheel_sets.get(wheels.key, ()))
        lacking += [f"wheel {req} ({wheels.key}, {wheels.venv})" for req in wheels.requirements
                    if req not in fetched]
    return list(dict.fromkeys(lacking))


def _any_alternative(alternatives: Sequence[Tuple[str, ...]], names: set) -> bool:
    return any(all(name in names for name in option) for option in alternatives)


@dataclass
class Summary:
    """Sizes per kind, for the closing table."""

    sizes: Dict[str, int] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)
    fetched: int = 0  #: bytes downloaded by this run


def contents_of(host: str, plan: Any, roles: Mapping[str, Any]) -> Contents:
    """:func:`plan_contents` for a plan of :func:`dlsetup.plan.make_plan` (its ``target`` names the system)."""
    target = plan.target
    return plan_contents(host, plan, target["os"], target["version"], target["codename"], target["arch"],
                         target.get("kernel", ""), roles)
