"""The resolver: host profile + request -> the roles to apply, their variables, and why.

Pure: no I/O beyond the package's own compatibility tables (read once, see :mod:`.compat`). What the
package indexes publish comes in as data too (:class:`dlsetup.pkgindex.LiveIndex`, asked by the command
before planning); without it the tables answer alone. Every choice is a :class:`Decision` naming the table
row (``table:key``) or planner rule (``rule:name``) it came from, and the source of its facts with their
date (``source``, ``as_of``). A request that cannot be met raises :class:`PlanConflict` with one line that
names the conflict and a way out.

Policy, so that plans age well: the newest release the index has for the host's Python (the tables'
default line when it cannot be asked), pinned to its release line (``torch==2.15.*``) unless the user
pins a patch; a production driver branch (then long-term, then new-feature only when a GPU or the CUDA
needs one); a loaded driver newer than the tables is kept; a version newer than the tables is planned as
unverified, with a warning, when the index lists it (offline: when it is the next release line), and
refused when nothing publishes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from dlsetup.errors import UsageError
from dlsetup.model import GPU, HostProfile
from dlsetup.pkgindex import PYTORCH, LiveIndex, Project
from dlsetup.plan import compat
from dlsetup.plan.compat import (
    NEXT_BRANCH_STEP,
    Architecture,
    Compat,
    Cuda,
    DriverBranch,
    MachineArch,
    KerasRelease,
    OSEntry,
    RocmRelease,
    TensorflowRelease,
    TorchRelease,
    minor,
    next_lines,
    vtuple,
)
from dlsetup.plan.request import (FRAMEWORKS, Request, keras_backend, listen_is_loopback, pip_trust_problem,
                                  venv_paths)
from dlsetup.storage import destruction, propose_layout, refusals

#: the order in which playbooks/site.yml applies roles
ROLE_ORDER = ("common", "storage", "nvidia_driver", "cuda_toolkit", "nvidia_container_toolkit", "rocm", "frameworks",
              "jupyter")
REBOOT_REQUIRED_FILE = "/run/dlsetup/reboot-required"
#: JupyterLab's own venv (the jupyter role's default)
JUPYTER_VENV = "/opt/dlsetup/jupyter"
#: kernel display names
_TITLES = {"pytorch": "PyTorch", "tensorflow": "TensorFlow", "jax": "JAX", "keras": "Keras 3",
           "dlsetup": "dlsetup venv"}


class PlanConflict(UsageError):
    """The request cannot be met on this host; the message names the conflict and a way out."""


@dataclass(frozen=True)
class Decision:
    topic: str  #: what was decided: "os", "driver", "torch", ...
    choice: str  #: what was chosen
    reason: str  #: why, in one sentence
    rule: str  #: the table row ("cuda:13.0") or planner rule ("rule:keep-loaded-driver")
    #: where the facts came from: "table:pytorch", "index:torch", "host", "request", "rule"
    source: str = "rule"
    as_of: Optional[str] = None  #: how old those facts are ("YYYY-MM-DD"); None: not dated (host, request)


@dataclass(frozen=True)
class Plan:
    host: str
    roles: Tuple[str, ...]
    decisions: Tuple[Decision, ...]
    variables: Mapping[str, Any]  #: exactly the extra vars handed to playbooks/site.yml
    reboot_required: bool
    notes: Tuple[str, ...]
    #: "disk: what it holds" for each disk the storage layout wipes (--destroy-data), then one line per md
    #: array it stops; empty: nothing is wiped. The role wipes nothing outside these (storage_destroy_*).
    destroys: Tuple[str, ...] = ()
    #: every source a decision cites: {"table:nvidia": {"as_of": ...}, "index:torch": {"as_of", "url"}}
    sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: what the user should know before applying: unverified versions, end-of-life branches
    warnings: Tuple[str, ...] = ()
    machine: Optional[str] = None  #: the host's machine id (HostProfile.machine.key), to tell same-named hosts apart
    #: the system the plan is for: os, version, codename, arch (uname -m), kernel (what a mirror must carry)
    target: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "host": self.host,
            "machine": self.machine,
            "roles": list(self.roles),
            "decisions": [vars(d) for d in self.decisions],
            "variables": dict(self.variables),
            "reboot_required": self.reboot_required,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "sources": {k: dict(v) for k, v in self.sources.items()},
            "destroys": list(self.destroys),
        }


#: L4T (Jetson Linux) kernels end in "-tegra" ("5.15.148-tegra"); Jetson GPUs name the module ("Orin (nvgpu)")
_JETSON_GPU = re.compile(r"\b(orin|xavier|tegra|thor)\b|nvgpu", re.IGNORECASE)


def jetson_evidence(profile: HostProfile) -> Optional[str]:
    """What tells an NVIDIA Jetson (Tegra) module from an Arm server, or None: an L4T kernel, an NVIDIA-made
    CPU (Carmel, Denver: lscpu's Vendor ID "Nvidia"; Grace's Neoverse cores say "ARM"), an integrated Jetson GPU."""
    if profile.os.arch not in (None, "aarch64"):
        return None
    kernel = profile.os.kernel or profile.kernel.running or ""
    if kernel.endswith("-tegra"):
        return f"L4T kernel {kernel}"
    if (profile.cpu.vendor or "").lower() == "nvidia":
        return f"NVIDIA Tegra CPU {profile.cpu.model}" if profile.cpu.model else "NVIDIA Tegra CPU"
    gpu = next((g for g in profile.gpus if g.vendor == "nvidia" and _JETSON_GPU.search(g.name or "")), None)
    return f"integrated GPU {gpu.name}" if gpu else None


def make_plan(profile: HostProfile, request: Request, live: Optional[LiveIndex] = None,
              today: Optional[str] = None) -> Plan:
    """Resolve ``request`` against ``profile``. Pure; raises :class:`PlanConflict`.

    ``live``: what the package indexes answered (None: offline, the tables alone). ``today``
    ("YYYY-MM-DD"): the date end-of-life dates are judged against (default: the lookup's date, else
    the tables' own date)."""
    data = compat.load()
    today = today or (live.today if live else None) or max(data.as_of.values(), default=None)
    return _Planner(profile, request, data, live, today).run()


@dataclass(frozen=True)
class _Nvidia:
    """What the NVIDIA side resolved to."""

    architectures: Tuple[Architecture, ...]
    ccs: Tuple[str, ...]  #: compute capability of every GPU
    branch: int
    install: bool  #: False: the loaded driver is kept
    open_modules: bool
    cuda_ceiling: str  #: highest CUDA the (kept or planned) driver supports
    driver_version: str  #: the kept driver's version, or the planned branch ("610")


def _ver_list(versions: Tuple[str, ...]) -> str:
    return f"{versions[0]}-{versions[-1]}" if len(versions) > 1 else versions[0]


def _gpu_name(gpu: GPU) -> str:
    return gpu.name or f"{gpu.vendor} GPU {gpu.pci_device_id or gpu.pci_bus_id}"


def _tag_version(label: str, prefix: str) -> Optional[str]:
    """"cu130" -> "13.0", "cu118" -> "11.8" (prefix "cu"); "rocm7.2" -> "7.2" (prefix "rocm")."""
    if not label.startswith(prefix):
        return None
    rest = label[len(prefix):]
    if prefix == "cu":
        return f"{rest[:-1]}.{rest[-1]}" if rest.isdigit() and len(rest) >= 2 else None
    return rest if rest.replace(".", "").isdigit() else None


def _pin(name: str, version: str, exact: bool) -> str:
    """``name==2.15.*`` (the release line: pip takes its newest patch), ``name==2.14.1`` when pinned exactly."""
    return f"{name}=={version}" if exact else f"{name}=={minor(version)}.*"


@dataclass(frozen=True)
class _Release:
    """A framework release the planner settled on."""

    row: Any  #: the table row (or the unverified one made up for a newer line)
    version: str  #: the version expected to install ("2.15.0": the newest patch the index has)
    exact: bool  #: the user pinned this exact version
    reason: str
    source: str


class _Planner:
    def __init__(self, profile: HostProfile, request: Request, data: Compat, live: Optional[LiveIndex] = None,
                 today: Optional[str] = None):
        self.profile = profile
        self.request = request
        self.data = data
        self.live = live
        self.today = today
        self.warnings: List[str] = []
        self.sources: Dict[str, Dict[str, Any]] = {}
        self.decisions: List[Decision] = []
        self.notes: List[str] = []
        self.roles: set[str] = {"common", "frameworks"}
        self.variables: Dict[str, Any] = {}
        self.packages: List[str] = []  #: the requirements of the framework being resolved (its venv's)
        #: framework -> its venv's requirements, in the order asked for
        self.venv_packages: Dict[str, List[str]] = {}
        self.keras_backend: Optional[str] = None  #: KERAS_BACKEND, when keras is planned
        self.extra_index_urls: List[str] = []
        self.torch: Optional[TorchRelease] = None
        self.torch_pick: Optional[_Release] = None
        self.torch_labels: Tuple[str, ...] = ()  #: the builds PyTorch's index lists for the release, if asked
        self.cuda: Optional[Cuda] = None  #: the --cuda release (a table row, or an unverified newer one)
        #: the NVIDIA GPUs' (architectures, compute capabilities), to pick a torch release that has a build
        self.gpu_fit: Optional[Tuple[Tuple[Architecture, ...], Tuple[str, ...]]] = None
        self.rocm_fit: Optional[str] = None
        self.destroys: List[str] = []
        #: the host's machine architecture (resolve_os); x86_64 until then
        self.arch: MachineArch = data.machine_arch("x86_64") or MachineArch("x86_64", "x86_64", "amd64", True)
        self.venvs: List[Dict[str, Any]] = []

    def decide(self, topic: str, choice: str, reason: str, rule: str, source: Optional[str] = None) -> None:
        """Record a decision; ``source`` defaults to the table its rule names, else to the rule itself
        ("request" for pins)."""
        table, _, key = rule.partition(":")
        if source is None:
            source = f"table:{table}" if table != "rule" else ("request" if key == "pin" else "rule")
        self.decisions.append(Decision(topic, choice, reason, rule, source, self.cite(source)))

    def cite(self, source: str) -> Optional[str]:
        """Register ``source`` in the plan's sources and return its date."""
        kind, _, name = source.partition(":")
        if kind == "table":
            as_of = self.data.as_of.get(name)
            self.sources.setdefault(source, {"as_of": as_of, "what": f"dlsetup's {name} table"})
            return as_of
        if kind == "index":
            project = self.live_project(name)
            if project is None:
                return None
            self.sources.setdefault(source, {"as_of": project.as_of, "url": project.url, "cached": project.cached})
            return project.as_of
        return None

    def live_project(self, name: str) -> Optional[Project]:
        """The index's answer for ``name``, when it was asked and answered with at least one file."""
        project = self.live.project(name) if self.live else None
        return project if project and project.files else None

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    @property
    def data_date(self) -> str:
        return f"tables as of {self.data.oldest_as_of}" if self.data.oldest_as_of else "shipped tables"

    # -- the steps, in order ------------------------------------------------------------------
    def run(self) -> Plan:
        self.check_request()
        system = self.resolve_os()
        python = self.resolve_python(system)
        nvidia_gpus, amd_gpus = self.discrete_gpus()
        self.check_hardware_requests(nvidia_gpus, amd_gpus)
        if nvidia_gpus:
            archs = [self.architecture_of(g) for g in nvidia_gpus]
            self.gpu_fit = (tuple(dict.fromkeys(archs)),
                            tuple(g.compute_capability or a.cc_min for g, a in zip(nvidia_gpus, archs, strict=True)))
        #: a --rocm pin on an AMD host: the default torch is one with a build for that ROCm (or older)
        self.rocm_fit = self.request.rocm if amd_gpus and not nvidia_gpus and self.request.rocm else None
        self.keras_backend = self.resolve_keras_backend()
        wants_torch = "pytorch" in self.request.frameworks or self.keras_backend == "torch"
        self.torch = self.torch_release(python) if wants_torch else None
        nvidia = self.resolve_nvidia(nvidia_gpus, system) if nvidia_gpus else None
        rocm = self.resolve_rocm(amd_gpus, system) if amd_gpus and not nvidia else None
        if not nvidia and not rocm:
            self.decide("accelerator", "cpu", "no GPU usable for deep learning: CPU builds", "rule:cpu-only")
        for framework in sorted(self.request.frameworks, key=lambda f: f == "keras"):  # keras reuses its backend's
            self.packages = self.venv_packages.setdefault(framework, [])
            getattr(self, f"resolve_{framework}")(python, nvidia, rocm)
        self.resolve_container_toolkit(nvidia, system)
        reboot = self.resolve_reboot(nvidia)
        self.resolve_kernel_module(nvidia)
        self.resolve_common_and_frameworks(system, python, nvidia, rocm)
        self.resolve_storage()
        self.resolve_jupyter()
        roles = tuple(r for r in ROLE_ORDER if r in self.roles)
        variables = {"dlsetup_roles": list(roles), "dlsetup_reboot_required_file": REBOOT_REQUIRED_FILE}
        variables.update(sorted(self.variables.items()))
        host = self.profile.hostname or self.profile.source
        if self.live:
            for failure in self.live.failures:
                self.notes.append(f"index: {failure}; planned from the tables where it mattered")
        return Plan(host, roles, tuple(self.decisions), variables, reboot, tuple(self.notes), tuple(self.destroys),
                    dict(sorted(self.sources.items())), tuple(self.warnings), self.profile.machine.key,
                    {"os": system.id, "version": system.version, "codename": system.codename,
                     "arch": self.profile.os.arch or "x86_64", "kernel": self.profile.os.kernel or ""})

    def check_request(self) -> None:
        if self.request.pip_offline and not self.request.pip_find_links:
            raise PlanConflict("--pip-offline installs only from --pip-find-links: give at least one")
        untrusted = pip_trust_problem(self.request)
        if untrusted:
            raise PlanConflict(untrusted)
        if not self.request.frameworks:
            raise PlanConflict("no framework requested: use --framework pytorch, tensorflow or jax")
        retired = {r.name: r for r in self.data.retired}
        for name in self.request.frameworks:
            if name in retired:
                r = retired[name]
                alts = " or ".join(f"--framework {a}" for a in r.alternatives)
                raise PlanConflict(f"{r.title} is not maintained ({r.why}): use {alts} instead")
            if name not in FRAMEWORKS:
                raise PlanConflict(f"unknown framework {name!r}: use --framework {', '.join(FRAMEWORKS)}")
        if self.request.keras_backend and "keras" not in self.request.frameworks:
            raise PlanConflict(f"--keras-backend {self.request.keras_backend} applies to Keras: add --framework keras "
                               "or drop --keras-backend")
        self.check_jupyter()

    def check_jupyter(self) -> None:
        """The Jupyter options: never an open server. Off loopback only with TLS (the token is always on)."""
        r = self.request
        given = [o for o, v in (("--jupyter-user", r.jupyter_user), ("--jupyter-cert", r.jupyter_cert),
                                ("--jupyter-key", r.jupyter_key), ("--jupyter-self-signed", r.jupyter_self_signed))
                 if v]
        if not r.jupyter:
            if given:
                raise PlanConflict(f"{given[0]} applies to JupyterLab: add --jupyter or drop {given[0]}")
            return
        if bool(r.jupyter_cert) != bool(r.jupyter_key):
            raise PlanConflict("--jupyter-cert and --jupyter-key go together: give both, or --jupyter-self-signed")
        if r.jupyter_cert and r.jupyter_self_signed:
            raise PlanConflict("--jupyter-self-signed and --jupyter-cert both name the certificate: keep one")
        tls = bool(r.jupyter_cert or r.jupyter_self_signed)
        if not listen_is_loopback(r.jupyter_listen) and not tls:
            raise PlanConflict(f"--jupyter-listen {r.jupyter_listen} is not loopback and has no TLS: anyone on the "
                               "network would see the token; add --jupyter-self-signed or --jupyter-cert/--jupyter-key,"
                               " or keep 127.0.0.1 and use ssh -L")

    def resolve_keras_backend(self) -> Optional[str]:
        backend = keras_backend(self.request)
        if backend is None:
            return None
        if backend not in self.data.keras_backends:
            raise PlanConflict(f"keras backend {backend!r} is unknown: use {', '.join(self.data.keras_backends)}")
        if self.request.keras_backend:
            why = "requested"
        elif backend == "torch" and "pytorch" not in self.request.frameworks:
            why = "no other framework planned: torch, whose builds cover CUDA, ROCm and the CPU"
        else:
            why = f"the other framework planned ({self.data.keras_backends[backend]}): the same accelerator build"
        self.decide("keras backend", backend, f"{why}; KERAS_BACKEND={backend} in the Keras venv and its kernel",
                    "rule:keras-backend", "table:keras" if not self.request.keras_backend else "request")
        return backend

    def resolve_os(self) -> OSEntry:
        os_ = self.profile.os
        jetson = jetson_evidence(self.profile)
        if jetson:
            raise PlanConflict(f"this is an NVIDIA Jetson (Tegra) board ({jetson}): its driver and CUDA come with "
                               "JetPack (Jetson Linux), not from the sbsa repositories dlsetup installs: use NVIDIA "
                               "SDK Manager or JetPack's own apt repository")
        arch = self.data.machine_arch(os_.arch or "x86_64")
        if arch is None:
            planned = " and ".join(a.name for a in self.data.arches)
            raise PlanConflict(f"architecture {os_.arch} is not supported: dlsetup plans {planned} hosts only "
                               "(install on one of those)")
        self.arch = arch
        supported = ", ".join(f"{s.id.capitalize()} {s.version}" for s in self.data.systems)
        system = next((s for s in self.data.systems if (s.id, s.version) == (os_.id, os_.version_id)), None)
        if system is None:
            found = os_.pretty_name or (f"{os_.id} {os_.version_id}" if os_.id else "an unknown OS")
            raise PlanConflict(f"{found} is not supported: install {supported} (or plan from a bundle of one)")
        rule = f"os:{system.id}-{system.version}"
        self.decide("os", system.key, f"{system.key} ({system.codename}) is supported", rule)
        if arch.name != "x86_64":
            self.decide("architecture", arch.name, f"{arch.deb_arch} packages; NVIDIA's CUDA repositories for it are "
                        f"the {arch.cuda_repo_arch} ones", f"os:arch-{arch.name}")
        return system

    def resolve_python(self, system: OSEntry) -> str:
        if self.request.python:
            self.decide("python", self.request.python, "pinned by the request", "rule:pin")
            return self.request.python
        self.decide("python", system.python, f"the python3 of {system.key}", f"os:{system.id}-{system.version}")
        return system.python

    def discrete_gpus(self) -> Tuple[Tuple[GPU, ...], Tuple[GPU, ...]]:
        for gpu in self.profile.gpus:
            if gpu.integrated or gpu.vendor == "intel":
                why = "integrated GPUs share system memory and can crash ROCm" if gpu.integrated else (
                    "Intel GPUs are not planned")
                self.decide("gpu", f"ignore {_gpu_name(gpu)}", why, "rule:integrated-gpu-ignored")
        discrete = [g for g in self.profile.gpus if not g.integrated]
        return (tuple(g for g in discrete if g.vendor == "nvidia"), tuple(g for g in discrete if g.vendor == "amd"))

    def check_hardware_requests(self, nvidia: Tuple[GPU, ...], amd: Tuple[GPU, ...]) -> None:
        r = self.request
        has = "only NVIDIA GPUs" if nvidia else "only AMD GPUs" if amd else "no GPU"
        if not nvidia:
            for option, value in (("--driver-branch", r.driver_branch), ("--cuda", r.cuda)):
                if value:
                    raise PlanConflict(f"{option} {value} needs an NVIDIA GPU and this host has {has}: drop {option}")
            if r.container_toolkit:
                raise PlanConflict(
                    f"--container-toolkit needs an NVIDIA GPU and this host has {has}: use --no-container-toolkit")
        if r.rocm and not amd:
            raise PlanConflict(f"--rocm {r.rocm} needs an AMD GPU and this host has {has}: drop --rocm")

    # -- NVIDIA ------------------------------------------------------------------------------
    def architecture_of(self, gpu: GPU) -> Architecture:
        arch = None
        if gpu.compute_capability:
            arch = self.data.architecture(gpu.compute_capability)
        elif gpu.architecture:
            arch = next((a for a in self.data.architectures if a.name == gpu.architecture), None)
        if arch is None:
            raise PlanConflict(
                f"cannot tell which architecture {_gpu_name(gpu)} is (compute capability "
                f"{gpu.compute_capability or 'unknown'}): probe the host with the GPU visible to the driver")
        return arch

    def resolve_nvidia(self, gpus: Tuple[GPU, ...], system: OSEntry) -> _Nvidia:
        r = self.request
        if self.arch.cuda_repo_arch not in system.cuda_arches:
            others = ", ".join(s.key for s in self.data.systems if self.arch.cuda_repo_arch in s.cuda_arches)
            raise PlanConflict(f"NVIDIA publishes no {self.arch.cuda_repo_arch} CUDA repository for {system.key}: "
                               f"install one of {others} on this {self.arch.name} host")
        by_gpu = [(g, self.architecture_of(g)) for g in gpus]
        archs = tuple(dict.fromkeys(a for _, a in by_gpu))
        ccs = tuple(g.compute_capability or a.cc_min for g, a in by_gpu)
        min_cc = min(ccs, key=vtuple)
        for arch in archs:
            self.decide("gpu", arch.name, f"compute capability {arch.cc_min}-{arch.cc_max}", f"nvidia:{arch.name}")
        if any(a.open_modules_required for a in archs) and not all(a.open_modules for a in archs):
            raise PlanConflict("Blackwell GPUs need the open kernel modules, which older GPUs in this host "
                               "cannot use: split the GPUs across hosts")
        open_modules = all(a.open_modules for a in archs)

        cuda = None
        if r.cuda:
            cuda = self.data.cuda_release(r.cuda) or self.newer_cuda(r.cuda)
            self.cuda = cuda
            for arch in archs:
                if vtuple(min_cc) < vtuple(cuda.min_cc) or not arch.allows_cuda(cuda.version):
                    raise PlanConflict(
                        f"--cuda {cuda.version} does not support the {arch.name} GPU (compute capability {min_cc}); "
                        f"CUDA {cuda.version} needs {cuda.min_cc}+: use --cuda {arch.max_cuda} or older")

        allowed = [b for b in self.data.driver_branches if all(a.allows_branch(b.branch) for a in archs)
                   and (open_modules or not b.open_modules_only)]
        if r.driver_branch:
            wanted = int(r.driver_branch)
            branch = self.data.branch(wanted) or self.newer_branch(wanted, open_modules)
            if branch not in allowed and not (branch.unverified and all(a.allows_branch(wanted) for a in archs)
                                              and (open_modules or not branch.open_modules_only)):
                names = "/".join(a.name for a in archs)
                why = " (it ships only the open kernel modules)" if branch.open_modules_only and not open_modules \
                    else ""
                raise PlanConflict(f"--driver-branch {wanted} does not support the {names} GPU{why}: use one of "
                                   f"{', '.join(str(b.branch) for b in allowed)}")
            if cuda and not self.branch_runs(branch, cuda):
                raise PlanConflict(
                    f"--driver-branch {wanted} supports CUDA up to {branch.max_cuda}, but --cuda {cuda.version} needs "
                    f"driver >= {cuda.toolkit_min_driver}: use --driver-branch {vtuple(cuda.toolkit_min_driver)[0]} "
                    f"or newer, or --cuda {branch.max_cuda} or older")
            if branch.ended(self.today):
                self.warn(f"driver branch {branch.branch} reached end of life on {branch.end_of_life} and gets no "
                          "more fixes: planned because it was asked for")
            allowed = [branch]

        kept = self.keep_loaded_driver(archs, ccs, allowed, cuda, open_modules)
        if kept:
            return kept
        fitting = [b for b in allowed if not cuda or self.branch_runs(b, cuda)]
        if not fitting:
            raise PlanConflict(f"no driver branch supports both the GPUs and CUDA {r.cuda}: drop --cuda")
        branch, why = self.pick_branch(fitting, archs, cuda)
        self.decide("driver", f"install branch {branch.branch}", why,
                    "rule:newer-than-data" if branch.unverified else f"nvidia:branch-{branch.branch}",
                    "request" if branch.unverified else None)
        self.decide("kernel modules", "open" if open_modules else "proprietary",
                    "open modules are supported from Turing and required on Blackwell" if open_modules
                    else "GPUs older than Turing need the proprietary modules",
                    f"nvidia:{archs[-1].name if open_modules else next(a for a in archs if not a.open_modules).name}")
        self.roles.add("nvidia_driver")
        repo = self.repository("cuda", system)
        self.variables.update({
            "nvidia_driver_branch": str(branch.branch),
            "nvidia_driver_open_modules": open_modules,
            "nvidia_driver_skip_when_loaded": True,
            "nvidia_driver_loaded_version": self.profile.nvidia.kernel_module_version or "",
            "nvidia_driver_secure_boot": self.profile.os.secure_boot,
            **{f"nvidia_driver_repo_{k}": v for k, v in repo.items()},
        })
        display = any(g.pci_class == "0300" for g in gpus)  # PCI class VGA: the GPU drives the host's display
        self.variables["nvidia_driver_install_type"] = "desktop" if display else "compute"
        self.decide("driver install", "desktop" if display else "compute-only",
                    "a display is attached: an NVIDIA GPU is the host's VGA controller" if display else
                    "no display attached: no NVIDIA GPU is a VGA controller", "rule:nvidia-install-type")
        if self.profile.os.secure_boot == "enabled":
            self.notes.append("Secure Boot is on: the driver module must be signed with an enrolled MOK; the "
                              "nvidia_driver role stops with the steps unless nvidia_driver_secure_boot_mok_ready "
                              "is true")
            self.decide("secure boot", "sign the driver module", "Secure Boot is enabled on the host",
                        "rule:secure-boot-mok")
        return _Nvidia(archs, ccs, branch.branch, True, open_modules, branch.max_cuda, str(branch.branch))

    def branch_runs(self, branch: DriverBranch, cuda: Cuda) -> bool:
        """Whether ``branch``'s driver supports ``cuda`` (an unverified one: the newest branches do)."""
        if cuda.unverified:
            newest = max((b.max_cuda for b in self.data.driver_branches), key=vtuple)
            return branch.unverified or vtuple(branch.max_cuda) >= vtuple(newest)
        return branch.unverified or vtuple(branch.max_cuda) >= vtuple(cuda.version)

    def pick_branch(self, fitting: List[DriverBranch], archs: Tuple[Architecture, ...],
                    cuda: Optional[Cuda]) -> Tuple[DriverBranch, str]:
        """The branch to install: the one asked for; else the newest production branch, then long-term, that
        fits; a new-feature branch only when none of those does."""
        what = "/".join(a.name for a in archs) + (f" and CUDA {cuda.version}" if cuda else "")
        if self.request.driver_branch:
            branch = fitting[0]
            kind = f" ({branch.type})" if branch.type else ""
            if branch.unverified:
                return branch, (f"pinned by the request{kind}; newer than dlsetup's data ({self.data_date}): "
                                "unverified")
            return branch, f"pinned by the request{kind}"
        current = [b for b in fitting if not b.ended(self.today)]
        for kind in ("production", "long-term"):
            pool = [b for b in current if b.type == kind]
            if pool:
                branch = max(pool, key=lambda b: b.branch)
                return branch, f"the newest {kind} branch that supports {what}"
        branch = max(current or fitting, key=lambda b: b.branch)
        if not current:
            self.warn(f"driver branch {branch.branch} reached end of life on {branch.end_of_life}: it is the "
                      f"newest branch that supports {what}; no supported branch does")
        if branch.type:
            return branch, (f"a {branch.type} branch: the newest that supports {what}; no production or long-term "
                            "branch does")
        return branch, f"the newest branch that supports {what}"

    def newer_branch(self, wanted: int, open_modules: bool) -> DriverBranch:
        """A --driver-branch newer than the tables: the next branch is planned unverified; others refused."""
        known = self.data.driver_branches
        newest = max(known, key=lambda b: b.branch)
        names = ", ".join(str(b.branch) for b in known)
        if not newest.branch < wanted <= newest.branch + NEXT_BRANCH_STEP:
            raise PlanConflict(f"driver branch {wanted} is not in the compatibility tables (newest {newest.branch}; "
                               f"a newer branch is planned only up to {newest.branch + NEXT_BRANCH_STEP}): "
                               f"use one of {names}")
        self.warn(f"driver branch {wanted} is newer than dlsetup's data ({self.data_date}): unverified; planned "
                  f"like branch {newest.branch}")
        return replace(newest, branch=wanted, type=None, end_of_life=None, unverified=True)

    def newer_cuda(self, wanted: str) -> Cuda:
        """A --cuda newer than the tables: planned unverified when the index lists its runtime (offline: the
        next release line); refused otherwise."""
        known = self.data.cuda
        newest = max(known, key=lambda c: vtuple(c.version))
        runtime = self.live_project("nvidia-cuda-runtime")
        lines = {f"{v.major}.{v.minor}" for v in runtime.all_releases()} if runtime else None
        self.newer_line("CUDA", wanted, [c.version for c in known], lines, "--cuda",
                        "nvidia-cuda-runtime", runtime)
        same_major = vtuple(wanted)[0] == vtuple(newest.version)[0]
        return Cuda(wanted, newest.toolkit_min_driver,
                    newest.compat_min_driver if same_major else newest.toolkit_min_driver, newest.min_cc,
                    unverified=True)

    def newer_line(self, what: str, wanted: str, known: Sequence[str], published: Optional[set], option: str,
                   project_name: str, project: Optional[Project]) -> None:
        """Refuse ``wanted`` unless it is newer than every ``known`` version and is published (the index
        lists its release line) or, without an index answer, is the next release line. Warns when it passes."""
        newest = max(known, key=vtuple)
        line = minor(wanted)
        names = ", ".join(known)
        if vtuple(line) <= vtuple(minor(newest)):
            raise PlanConflict(f"{what} {wanted} is not in the compatibility tables: use {option} with one of {names}")
        if project is not None and published is not None:
            if line not in published:
                raise PlanConflict(f"{what} {wanted} is not in the compatibility tables and not published on "
                                   f"{project.url} (as of {project.as_of}): use {option} with one of {names}")
            where = f"{project.url} lists it (as of {project.as_of})"
            self.cite(f"index:{project_name}")
        elif line in next_lines(minor(newest)):
            where = f"the index could not be asked; {line} is the release line after {minor(newest)}"
        else:
            raise PlanConflict(f"{what} {wanted} is not in the compatibility tables and the index could not be "
                               f"asked whether it exists: use {option} with one of {names}")
        self.warn(f"{what} {wanted} is newer than dlsetup's data ({self.data_date}): unverified; {where}")

    def keep_loaded_driver(self, archs: Tuple[Architecture, ...], ccs: Tuple[str, ...], allowed: list, cuda: Any,
                           open_modules: bool) -> Optional[_Nvidia]:
        state = self.profile.nvidia
        version = state.library_version or state.kernel_module_version
        if not state.kernel_module_loaded or not version:
            return None
        branch = vtuple(version)[0]
        known = self.data.branch(branch)
        newest = max(self.data.driver_branches, key=lambda b: b.branch)
        # a driver newer than the tables is kept: replacing it would install an older branch
        newer = known is None and branch > newest.branch and not self.request.driver_branch
        why_not = None
        if self.request.driver_branch and int(self.request.driver_branch) != branch:
            why_not = f"--driver-branch {self.request.driver_branch} was asked for"
        elif all(b.branch != branch for b in allowed) and not newer:
            why_not = f"branch {branch} does not fit the GPUs"
        elif cuda and not newer and vtuple(version) < vtuple(cuda.toolkit_min_driver):
            why_not = f"CUDA {cuda.version} needs driver >= {cuda.toolkit_min_driver}"
        elif any(a.open_modules_required for a in archs) and state.kernel_module_flavor == "proprietary":
            why_not = "Blackwell needs the open kernel modules"
        elif self.torch and not any(vtuple(version) >= vtuple(c.compat_min_driver)
                                    for c in self.torch_builds(self.torch, archs, ccs)):
            why_not = f"no torch {self.torch.version} CUDA build for these GPUs runs on it"
        if why_not:
            self.decide("driver", f"replace {version}", why_not, "rule:keep-loaded-driver", "host")
            return None
        ceiling = state.cuda_driver_version or (known.max_cuda if known else newest.max_cuda if newer else None)
        if ceiling is None:
            return None
        flavor = f"{state.kernel_module_flavor} " if state.kernel_module_flavor else ""
        names = "/".join(a.name for a in archs)
        if newer:
            self.decide("driver", f"keep {version}",
                        f"the loaded {flavor}driver is newer than dlsetup's data ({self.data_date}): kept, never "
                        f"replaced by an older branch; it supports CUDA up to {ceiling}", "rule:keep-newer-driver",
                        "host")
            self.warn(f"driver {version} is newer than dlsetup's data ({self.data_date}): kept unverified")
        else:
            kind = f" ({known.type} branch {branch})" if known and known.type else ""
            self.decide("driver", f"keep {version}",
                        f"the loaded {flavor}driver supports {names} and CUDA up to {ceiling}: not reinstalled{kind}",
                        "rule:keep-loaded-driver", "host")
            if known and known.ended(self.today):
                self.warn(f"the loaded driver branch {branch} reached end of life on {known.end_of_life}: "
                          "plan with --driver-branch for a supported one")
        return _Nvidia(archs, ccs, branch, False, open_modules, ceiling, version)

    # -- AMD ---------------------------------------------------------------------------------
    def resolve_rocm(self, gpus: Tuple[GPU, ...], system: OSEntry) -> Optional[str]:
        r = self.request
        if not self.arch.rocm:
            if r.rocm:
                raise PlanConflict(f"--rocm {r.rocm}: AMD publishes ROCm for x86_64 only and this host is "
                                   f"{self.arch.name}: drop --rocm")
            why = f"AMD publishes ROCm for x86_64 only, this host is {self.arch.name}"
            self.warn(f"the AMD GPU is not used: {why}")
            self.decide("accelerator", "cpu", f"{why}: CPU builds", f"os:arch-{self.arch.name}")
            return None
        targets = tuple(dict.fromkeys(g.gfx_target for g in gpus if g.gfx_target))
        if not targets:
            if r.rocm:
                raise PlanConflict("cannot tell the AMD GPU's gfx target: probe the host with amdgpu loaded")
            self.decide("accelerator", "cpu", "the AMD GPU's gfx target is unknown", "rule:cpu-only")
            return None
        fits = [x for x in self.data.rocm if x.supports(targets, system.key)]
        if r.rocm:
            release = next((x for x in self.data.rocm if x.version == r.rocm), None) or self.newer_rocm(r.rocm)
            if release not in fits and not (release.unverified and release.supports(targets, system.key)):
                raise PlanConflict(f"ROCm {r.rocm} does not support {'/'.join(targets)} on {system.key}: use "
                                   + (f"--rocm {fits[0].version}" if fits else "a supported GPU and OS"))
        elif not fits:
            self.decide("accelerator", "cpu", f"no ROCm release supports {'/'.join(targets)} on {system.key}",
                        "rule:cpu-only")
            return None
        else:
            release = fits[0]
        how = "pinned by the request" if r.rocm else \
            f"the newest ROCm that supports {'/'.join(targets)} on {system.key}"
        if release.unverified:
            self.decide("rocm", release.version, f"{how}; newer than dlsetup's data ({self.data_date}): unverified, "
                        "planned like the newest known release", "rule:newer-than-data", "request")
        else:
            self.decide("rocm", release.version, how + (f" ({release.layout} packaging)" if release.layout else ""),
                        f"rocm:{release.version}")
        self.roles.add("rocm")
        repo = self.repository("rocm", system, rocm_version=release.version)
        self.variables.update({
            "rocm_version": release.version,
            "rocm_install_dkms": True,
            "rocm_users": [],
            **{f"rocm_repo_{k}": v for k, v in repo.items()},
        })
        # TheRock (7.14 and later): other repositories and package names, which the rocm role knows
        if (release.layout or ("therock" if vtuple(release.version) >= (7, 14) else "legacy")) == "therock":
            self.variables["rocm_layout"] = "therock"
            if len(targets) == 1:  # the per-target meta package (amdrocm<X.Y>-<gfx>) installs less
                self.variables["rocm_gfx_target"] = targets[0]
            site = next((s for s in r.repositories if s.name == "rocm"), None)
            for key in repo:  # the site's own repository (config file: repositories:) stays, with its key
                if site is None or key == "suite" or not getattr(site, key):
                    del self.variables[f"rocm_repo_{key}"]
        return release.version

    def newer_rocm(self, wanted: str) -> RocmRelease:
        """A --rocm newer than the tables: planned unverified, like the newest known release, when PyTorch's
        index has a build for it (offline: the next release line); refused otherwise."""
        known = self.data.rocm
        vendor = self.live_project(PYTORCH)
        lines = None
        if vendor:
            lines = {minor(v) for label in vendor.labels() if (v := _tag_version(label, "rocm"))}
        self.newer_line("ROCm", wanted, [x.version for x in known], lines, "--rocm", PYTORCH, vendor)
        newest = max(known, key=lambda x: vtuple(x.version))
        return replace(newest, version=wanted, unverified=True)

    # -- frameworks --------------------------------------------------------------------------
    def framework_release(self, name: str, table: Sequence[Any], default: str, wanted: Optional[str], python: str,
                          option: str, project_name: str, synth: Callable[[str, str], Any],
                          usable: Callable[[Any], bool] = lambda row: True) -> _Release:
        """The release of ``name`` to install: the one ``wanted`` names ("2.15" or "2.15.0"), else the newest the
        index has for ``python``, else the tables' ``default`` line (or their newest line for ``python``).
        ``synth(line, python)`` makes the unverified row of a line newer than the tables; without a request,
        a release whose row is not ``usable`` (no build for these GPUs) gives way to the next older one."""
        index = self.live_project(project_name)
        by_line: Dict[str, Any] = {}
        for t in sorted(table, key=lambda t: vtuple(t.version), reverse=True):  # a line's newest patch row wins
            by_line.setdefault(minor(t.version), t)
        newest_known = max(by_line, key=vtuple)
        source = f"index:{project_name}" if index else None
        if wanted:
            exact, line = wanted.count(".") >= 2, minor(wanted)
            row = by_line.get(line)
            published = {minor(str(v)) for v in index.all_releases()} if index else None
            if row is None:
                self.newer_line(name, wanted, [t.version for t in table], published, option, project_name, index)
                row = synth(line, python)
            if index and exact and wanted not in {str(v) for v in index.all_releases()}:
                raise PlanConflict(f"{name} {wanted} is not published on {index.url} (as of {index.as_of}): use "
                                   f"{option} {line} for its newest patch release")
            live = index.newest(python, line, self.arch.name) if index else None
            if index and (live is None or (exact and wanted not in
                                           {str(v) for v in index.releases(python, self.arch.name)})):
                raise PlanConflict(f"{name} {wanted} has no wheel for Python {python} on {self.arch.name} Linux on "
                                   f"{index.url} (as of {index.as_of}): use another --python or {option}")
            if not index and python not in row.python and not row.unverified:
                raise PlanConflict(f"{name} {row.version} supports Python {_ver_list(row.python)}, not {python}: "
                                   f"use --python {row.python[-1]} or another {option}")
            version = wanted if exact else str(live) if live else row.version
            reason = "pinned by the request" + ("" if exact else f"; {version} is the newest patch of {line}" if live
                                                else f"; pip takes the newest patch of {line}")
            return _Release(row, version, exact, reason, source or ("request" if row.unverified else f"table:{name}"))
        skipped: List[str] = []
        lines_seen: set = set()
        for newest in (index.releases(python, self.arch.name) if index else ()):
            line = minor(str(newest))
            if line in lines_seen:
                continue
            lines_seen.add(line)
            if line not in by_line and vtuple(line) < vtuple(newest_known):
                continue  # older than the tables and not in them: not planned by default
            assert index is not None
            row = by_line.get(line) or synth(line, python)
            if not usable(row):
                skipped.append(str(newest))
                continue
            if row.unverified:
                self.warn(f"{name} {newest} is newer than dlsetup's data ({self.data_date}): unverified; "
                          f"{index.url} lists it (as of {index.as_of})")
            uploaded = index.uploaded(str(newest))
            passed = f"; {', '.join(skipped)} has no build for these GPUs" if skipped else ""
            return _Release(row, str(newest), False, f"the newest {name} on {index.url} for Python {python}"
                            + (f" (uploaded {uploaded})" if uploaded else "") + passed, f"index:{project_name}")
        row = by_line.get(minor(default)) or by_line[newest_known]
        how = "the default release line of dlsetup's tables"
        if python not in row.python or not usable(row):
            fits = [t for t in by_line.values() if python in t.python and usable(t)]
            if not fits:
                if python not in row.python:
                    raise PlanConflict(f"{name} {row.version} supports Python {_ver_list(row.python)}, not {python}: "
                                       f"use --python {row.python[-1]} or {option}")
                return _Release(row, row.version, False, how, f"table:{name}")  # the build step names the conflict
            row = max(fits, key=lambda t: vtuple(t.version))
            how = f"the newest release line in dlsetup's tables for Python {python} and these GPUs"
        return _Release(row, row.version, False, f"{how}; supports Python {_ver_list(row.python)}", f"table:{name}"
                        if name != "torch" else "table:pytorch")

    def decide_release(self, topic: str, table_name: str, release: _Release, choice: Optional[str] = None) -> None:
        row = release.row
        reason = release.reason
        if row.unverified:
            reason += f"; newer than dlsetup's data ({self.data_date}): unverified"
        rule = "rule:newer-than-data" if row.unverified else f"{table_name}:{row.version}"
        source = release.source.replace("table:torch", "table:pytorch")
        self.decide(topic, choice or release.version, reason, rule, source)

    def torch_release(self, python: str) -> TorchRelease:
        fit = self.gpu_fit
        pinned = self.data.branch(int(self.request.driver_branch)) if self.request.driver_branch else None

        def usable(row: TorchRelease) -> bool:
            """A build for these GPUs that the --driver-branch asked for runs (if one was)."""
            builds = self.torch_builds(row, *fit) if fit else []
            if pinned:
                builds = [c for c in builds if vtuple(c.version) <= vtuple(pinned.max_cuda)
                          or (pinned.branch,) >= vtuple(c.compat_min_driver)]
            if self.rocm_fit and not any(vtuple(v) <= vtuple(self.rocm_fit) for v in row.rocm):
                return False
            return not fit or bool(builds)

        pick = self.framework_release("torch", self.data.torch, self.data.torch_default, self.request.torch, python,
                                      "--torch", "torch", self.torch_synth, usable)
        self.torch_pick = pick
        self.decide_release("torch", "pytorch", pick)
        vendor = self.live_project(PYTORCH)
        labels = vendor.builds(pick.version, python, self.arch.name) if vendor and not pick.row.unverified else ()
        if labels:  # PyTorch's own index says which builds this release has: they replace the table's
            self.torch_labels = labels
            cuda = sorted({v for x in labels if (v := _tag_version(x, "cu"))}, key=vtuple)
            rocm = sorted({v for x in labels if (v := _tag_version(x, "rocm"))}, key=vtuple)
            aarch64 = tuple(cuda) if self.arch.name == "aarch64" else pick.row.cuda_aarch64
            return replace(pick.row, cuda=tuple(cuda), rocm=tuple(rocm), cuda_aarch64=aarch64)
        return pick.row

    def torch_synth(self, line: str, python: str) -> TorchRelease:
        """The unverified row of a torch line newer than the tables: its builds as PyTorch's index lists
        them, else those of the newest known release."""
        base = max(self.data.torch, key=lambda t: vtuple(t.version))
        vendor = self.live_project(PYTORCH)
        newest = vendor.newest(python, line, self.arch.name) if vendor else None
        labels = vendor.builds(str(newest), python, self.arch.name) if vendor and newest else ()
        cuda = tuple(sorted({v for x in labels if (v := _tag_version(x, "cu"))}, key=vtuple))
        rocm = tuple(sorted({v for x in labels if (v := _tag_version(x, "rocm"))}, key=vtuple))
        if labels:
            self.cite(f"index:{PYTORCH}")
            return TorchRelease(f"{line}.0", (python,), cuda, rocm, (), unverified=True,
                                cuda_aarch64=cuda if self.arch.name == "aarch64" else ())
        return TorchRelease(f"{line}.0", (python,), base.cuda, base.rocm, base.cuda_experimental, unverified=True,
                            cuda_aarch64=base.cuda_aarch64)

    def resolve_pytorch(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        release = self.torch
        assert release is not None  # resolved in run() when pytorch is requested
        listed = f"; PyTorch's index lists {', '.join(self.torch_labels)}" if self.torch_labels else ""
        source = f"index:{PYTORCH}" if self.torch_labels else None
        if nvidia:
            build, why = self.torch_cuda_build(release, nvidia)
            tag = build.wheel_tag
            self.decide("torch build", tag, why + listed, f"cuda:{build.version}", source)
        elif rocm:
            builds = [v for v in release.rocm if vtuple(v) <= vtuple(rocm)
                      and any(x.version == v for x in self.data.rocm)]
            if not builds:
                raise PlanConflict(
                    f"torch {release.version} has no build for ROCm {rocm}: use another --torch or --rocm")
            tag = "rocm" + max(builds, key=vtuple)
            self.decide("torch build", tag, f"the torch {release.version} ROCm build for ROCm {rocm}" + listed,
                        f"rocm:{rocm}", source)
        else:
            tag = "cpu"
            self.decide("torch build", tag, "no usable GPU: the CPU build", "rule:cpu-only")
        assert self.torch_pick is not None
        self.packages.append(_pin("torch", self.torch_pick.version, self.torch_pick.exact))
        self.add_index(f"{self.data.torch_index_base}/{tag}")

    def torch_builds(self, release: TorchRelease, archs: Tuple[Architecture, ...],
                     ccs: Tuple[str, ...]) -> List[Cuda]:
        """The CUDA builds of ``release`` compiled for every one of these GPUs."""
        built_for = {b.cuda: b for b in self.data.torch_cuda_builds}
        cuda = release.cuda if self.arch.name == "x86_64" else release.cuda_aarch64  # the builds with our wheels
        return [c for c in map(self.data.cuda_release, cuda) if c is not None
                and c.version in built_for and all(built_for[c.version].runs_on(cc) for cc in ccs)
                and all(vtuple(c.min_cc) <= vtuple(cc) for cc in ccs) and all(a.allows_cuda(c.version) for a in archs)]

    def torch_cuda_build(self, release: TorchRelease, nvidia: _Nvidia) -> Tuple[Cuda, str]:
        """The newest build not above the driver's CUDA (or the --cuda pin); failing that, the oldest
        build the driver runs through CUDA minor-version compatibility."""
        limit = self.request.cuda or nvidia.cuda_ceiling
        builds = self.torch_builds(release, nvidia.architectures, nvidia.ccs)
        exact = [c for c in builds if vtuple(c.version) <= vtuple(limit)]
        stable = [c for c in exact if c.version not in release.cuda_experimental]
        if stable:
            build = max(stable, key=lambda c: vtuple(c.version))
            skipped = [c.wheel_tag for c in exact if c.version in release.cuda_experimental]
            return build, (f"the newest {'stable ' if skipped else ''}torch {release.version} CUDA build not above "
                           f"CUDA {limit} that runs on compute capability {'/'.join(nvidia.ccs)}"
                           + (f" ({', '.join(skipped)}: experimental)" if skipped else ""))
        if exact:
            build = max(exact, key=lambda c: vtuple(c.version))
            return build, (f"the newest torch {release.version} CUDA build not above CUDA {limit} that runs on "
                           f"compute capability {'/'.join(nvidia.ccs)}; experimental, the only one that fits")
        compatible = [c for c in builds if not self.request.cuda
                      and vtuple(nvidia.driver_version) >= vtuple(c.compat_min_driver)]
        compatible = [c for c in compatible if c.version not in release.cuda_experimental] or compatible
        if not compatible:
            raise PlanConflict(f"torch {release.version} has no CUDA build for this GPU at CUDA <= {limit}: "
                               "use another --torch or a newer --driver-branch")
        build = min(compatible, key=lambda c: vtuple(c.version))
        return build, (f"driver {nvidia.driver_version} supports CUDA {limit}; the {build.wheel_tag} build runs "
                       f"on it through minor-version compatibility (driver >= {build.compat_min_driver})")

    def resolve_tensorflow(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        pick = self.framework_release("tensorflow", self.data.tensorflow, self.data.tensorflow_default,
                                      self.request.tensorflow, python, "--tensorflow", "tensorflow", self.tf_synth)
        release = pick.row
        if rocm:
            raise PlanConflict("TensorFlow is not planned on AMD GPUs: use --framework pytorch or --framework jax")
        if nvidia and self.arch.name != "x86_64" and not release.cuda_aarch64:
            raise PlanConflict(f"tensorflow {pick.version} has no CUDA build for {self.arch.name} (its Linux "
                               f"{self.arch.name} wheels are CPU builds): use --framework pytorch or --framework jax")
        if nvidia and vtuple(nvidia.cuda_ceiling) < vtuple(release.cuda):
            raise PlanConflict(f"tensorflow {pick.version} needs a driver for CUDA {release.cuda}, the driver "
                               f"supports {nvidia.cuda_ceiling}: use a newer --driver-branch")
        requirement = _pin("tensorflow[and-cuda]" if nvidia else "tensorflow", pick.version, pick.exact)
        why = (f"CUDA {release.cuda} and cuDNN {release.cudnn} come as pip wheels" if nvidia else "CPU build")
        self.decide_release("tensorflow", "tensorflow",
                            replace(pick, reason=f"{why}; Keras 3 comes with it; {pick.reason}"), requirement)
        self.packages.append(requirement)

    def resolve_keras(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        """Keras 3 and its backend's accelerator build, in one venv: the backend's requirements as planned for
        that framework (resolved here when it is not planned on its own)."""
        backend = self.keras_backend
        assert backend is not None  # resolved in run() when keras is requested
        framework = self.data.keras_backends[backend]
        keras_packages = self.packages
        if framework in self.venv_packages:
            keras_packages.extend(self.venv_packages[framework])
        else:
            getattr(self, f"resolve_{framework}")(python, nvidia, rocm)
            self.packages = keras_packages
        pick = self.framework_release("keras", self.data.keras, self.data.keras_default, None, python,
                                      "--framework keras", "keras", self.keras_synth,
                                      lambda row: backend in row.backends)
        requirement = _pin("keras", pick.version, pick.exact)
        build = next((p for p in keras_packages if p.split("[")[0].split("=")[0] in ("torch", "tensorflow", "jax")),
                     framework)
        self.decide_release("keras", "keras", replace(
            pick, reason=f"Keras 3 on the {backend} backend ({build} beside it, KERAS_BACKEND={backend}); "
                         f"{pick.reason}"), requirement)
        keras_packages.append(requirement)

    def keras_synth(self, line: str, python: str) -> KerasRelease:
        return KerasRelease(f"{line}.0", (python,), unverified=True)

    def tf_synth(self, line: str, python: str) -> TensorflowRelease:
        base = max(self.data.tensorflow, key=lambda t: vtuple(t.version))
        return TensorflowRelease(f"{line}.0", (python,), base.cuda, base.cudnn, unverified=True)

    def resolve_jax(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        variants = self.data.jax
        if nvidia:
            gpu = [v for v in variants if v.backend == "cuda" and v.cuda
                   and vtuple(v.cuda) <= vtuple(nvidia.cuda_ceiling)
                   and all(a.allows_cuda(v.cuda) for a in nvidia.architectures)]
        elif rocm:
            gpu = [v for v in variants if v.backend == "rocm" and v.rocm and vtuple(v.rocm) <= vtuple(rocm)]
        else:
            gpu = []
        variant = next((v for v in gpu if not v.python_min or vtuple(python) >= vtuple(v.python_min)), None)
        if (nvidia or rocm) and variant is None:
            needs = min((v.python_min for v in gpu if v.python_min), key=vtuple, default=None)
            if needs:
                raise PlanConflict(f"JAX's {gpu[0].backend} builds need Python >= {needs}, the plan has {python}: "
                                   f"use --python {needs} or --framework pytorch")
            raise PlanConflict("no JAX GPU build fits this GPU and driver: use --framework pytorch")
        name = f"jax[{variant.extra}]" if variant else "jax"
        why = f"JAX's {variant.backend} build" if variant else "CPU build"
        rows = sorted((j for j in self.data.jax_releases if not variant or not j.extras or variant.extra in j.extras),
                      key=lambda j: vtuple(j.version), reverse=True)
        fit = [j for j in rows if not j.python_min or vtuple(python) >= vtuple(j.python_min)]
        index = self.live_project("jax")
        newest = index.newest(python, arch=self.arch.name) if index else None
        if newest is not None and rows and newest.release < vtuple(rows[-1].version) and variant:
            newest = None  # older than every release the tables know to carry this extra: not trusted
        if newest is not None and index is not None:
            requirement = _pin(name, str(newest), False)
            self.decide("jax", requirement, f"{why}; {newest} is the newest jax on {index.url} for Python {python}",
                        f"jax:{variant.extra}" if variant else "rule:cpu-only", "index:jax")
        elif fit:
            requirement = _pin(name, fit[0].version, False)
            floor = f", needs Python >= {fit[0].python_min}" if fit[0].python_min else ""
            self.decide("jax", requirement, f"{why}; jax {fit[0].version} is the newest release in dlsetup's tables "
                        f"for Python {python}{floor}", f"jax:{fit[0].version}")
        elif variant and rows:
            needs = min((j.python_min for j in rows if j.python_min), key=vtuple)
            raise PlanConflict(f"jax[{variant.extra}] needs Python >= {needs} (jax {rows[-1].version} and newer), "
                               f"the plan has {python}: use --python {needs} or --framework pytorch")
        else:
            requirement = name
            self.decide("jax", requirement, why, f"jax:{variant.extra}" if variant else "rule:cpu-only")
        self.packages.append(requirement)

    #: what PyTorch's wheel index carries besides torch's own dependencies: installed from it alone
    TORCH_INDEX_PROJECTS = ("torch", "torchvision", "torchaudio")

    def add_index(self, url: str, projects: Tuple[str, ...] = TORCH_INDEX_PROJECTS) -> None:
        """Install ``projects`` (and what they depend on) from the vendor index ``url`` alone: in a pip run
        of their own with ``--index-url url``, never with a second index beside it, where a same-named
        project on the other index could win (the dependency-confusion setup of PyTorch's torchtriton,
        2022). The other packages come from the user's index. A request with its own index, wheelhouse
        or offline install keeps to that instead."""
        r = self.request
        if r.pip_index_url or r.pip_find_links or r.pip_offline:
            self.decide("wheel index", "as given", f"{url} not added: the request brings its own index or wheels",
                        "rule:user-index")
        elif url not in self.extra_index_urls:
            self.extra_index_urls.append(url)
            self.variables.setdefault("frameworks_pip_vendor_indexes", []).append(
                {"url": url, "projects": list(projects)})
            self.decide("wheel index", url, f"the vendor index that carries this build: {', '.join(projects)} "
                        "and their dependencies from it alone", "rule:vendor-index")

    # -- the rest ----------------------------------------------------------------------------
    def resolve_container_toolkit(self, nvidia: Optional[_Nvidia], system: OSEntry) -> None:
        wanted = self.request.container_toolkit
        engines = self.profile.os.container_engines
        if wanted is False or nvidia is None:
            return
        if wanted:
            runtimes, why, rule = self.request.container_runtimes, "requested", "rule:pin"
        elif engines:
            runtimes, why, rule = engines, "found on the host; --no-container-toolkit leaves it out", \
                "rule:container-engine-present"
        else:
            return
        self.roles.add("nvidia_container_toolkit")
        repo = self.repository("nvidia_container_toolkit", system)
        self.variables.update({
            "nvidia_container_toolkit_runtimes": list(runtimes),
            **{f"nvidia_container_toolkit_repo_{k}": v for k, v in repo.items()},
        })
        self.decide("container toolkit", ", ".join(runtimes), why, rule)

    def resolve_reboot(self, nvidia: Optional[_Nvidia]) -> bool:
        state = self.profile.nvidia
        reboot = False
        if state.reboot_required:
            self.notes.append(f"reboot required: kernel module {state.kernel_module_version} and library "
                              f"{state.library_version} disagree")
            reboot = True
        if nvidia and nvidia.install and (state.kernel_module_loaded or state.nouveau_loaded):
            loaded = "nouveau" if state.nouveau_loaded else f"driver {state.kernel_module_version}"
            self.notes.append(f"reboot required: the new driver replaces the loaded {loaded}")
            reboot = True
        if reboot:
            self.decide("reboot", "required", self.notes[-1].removeprefix("reboot required: "), "rule:reboot")
        return reboot

    def resolve_kernel_module(self, nvidia: Optional[_Nvidia]) -> None:
        """Where the GPU kernel module of every installed kernel comes from, and whether the kernel is held
        (only with --hold-kernel: kernels keep their updates, and the driver role gives each one the module)."""
        hold = self.request.hold_kernel
        planned = [role for role in ("nvidia_driver", "rocm") if role in self.roles]
        if "nvidia_driver" in planned:
            self.decide("kernel module", "dkms",
                        "NVIDIA's repository ships the driver's kernel module as source (nvidia-kernel-open-dkms, "
                        "nvidia-dkms-open, ...) that DKMS builds for each kernel; Ubuntu's precompiled "
                        "linux-modules-nvidia-<branch>-<flavour> belong to Ubuntu's own driver builds. The role "
                        "installs the headers of every installed kernel and the header meta package of its flavour, "
                        "builds the module for each and fails on a kernel that cannot get it",
                        "rule:kernel-module-dkms")
            self.variables.update({"nvidia_driver_kernel_module_source": "dkms", "nvidia_driver_hold_kernel": hold})
        elif nvidia is not None:
            state = self.profile.kernel
            image = state.image(state.running)
            source = image.nvidia_module if image else None
            if source:
                extra = ("; a package per kernel (linux-modules-nvidia-<branch>-<flavour> on Ubuntu): every new "
                         "kernel needs its own" if source == "precompiled" else "")
                self.decide("kernel module", source,
                            f"kept with the loaded driver: the running kernel {state.running} has a {source} "
                            f"nvidia module{extra}", "rule:keep-loaded-driver", "host")
        if "rocm" in planned:
            self.decide("kernel module", "dkms",
                        "amdgpu-dkms is the amdgpu driver as source that DKMS builds for each kernel; the role "
                        "installs the headers of every installed kernel and the header meta package of its "
                        "flavour, builds the module for each and fails on a kernel that cannot get it",
                        "rule:kernel-module-dkms")
            self.variables["rocm_hold_kernel"] = hold
        if not planned:
            if hold:
                self.warn("--hold-kernel: no GPU driver is installed by this plan, so the kernel is not held")
            return
        if hold:
            self.decide("kernel", "held", "--hold-kernel: the kernel meta packages (linux-image-<flavour>, "
                        "linux-headers-<flavour>) are held; kernel security updates stop until apt-mark unhold",
                        "rule:pin")
        else:
            self.decide("kernel", "updates go on", "nothing holds the kernel (--hold-kernel would): each kernel "
                        "installed later gets the module from DKMS's kernel hook, which the role checks",
                        "rule:kernel-updates")

    def resolve_storage(self) -> None:
        """The arrays for datasets and checkpoints; disks that hold anything refuse the plan (safe mode)."""
        request = self.request.storage
        if request is None:
            return
        layout = propose_layout(self.profile, request)
        found = [f"{r.disk}: {r.reason}" for r in refusals(self.profile, layout)]
        if found and not request.destroy_data:
            raise PlanConflict(f"storage: refusing the layout, these disks hold data: {'; '.join(found)}. "
                               "Free them, name other disks, or pass --destroy-data to wipe them")
        wiped = destruction(self.profile, layout)  # the role wipes nothing outside these lists
        self.destroys = list(wiped.lines)
        for array, asked in zip(layout.arrays, request.arrays, strict=True):
            level = f"{array.level} over {len(array.members)} disk(s)" if array.level != "single" else "one disk"
            how = "the disks named" if asked.disks else "the unused NVMe/SSD disks"
            rule = "rule:storage-named-disks" if asked.disks else "rule:storage-unused-fast-disks"
            self.decide("storage", f"{array.mountpoint}: {array.filesystem} on {level}",
                        f"{how}: {', '.join(m.rsplit('/', 1)[-1] for m in array.members)}", rule)
        if request.destroy_data:
            self.decide("storage", "destroy data",
                        f"--destroy-data: {len(wiped.disks)} disk(s) that hold data are wiped" if self.destroys
                        else "--destroy-data, though no member disk holds anything now", "rule:destroy-data")
        self.roles.add("storage")
        self.variables.update(layout.variables(wiped))

    def resolve_common_and_frameworks(self, system: OSEntry, python: str, nvidia: Optional[_Nvidia],
                                      rocm: Optional[str]) -> None:
        r = self.request
        if r.cuda:
            cuda = self.cuda
            assert cuda is not None and nvidia is not None  # resolve_nvidia checked both
            self.roles.add("cuda_toolkit")
            repo = self.repository("cuda", system)
            self.variables.update({
                "cuda_toolkit_version": cuda.version,
                "cuda_toolkit_cudnn": True,
                "cuda_toolkit_nccl": True,
                **{f"cuda_toolkit_repo_{k}": v for k, v in repo.items()},
            })
            self.decide("cuda toolkit", cuda.version, f"requested; needs driver >= {cuda.toolkit_min_driver}",
                        f"cuda:{cuda.version}")
        elif nvidia:
            self.decide("cuda toolkit", "none", "framework wheels bring their own CUDA runtime; --cuda X.Y "
                        "installs a toolkit", "rule:wheels-bring-cuda")
        venv_package = "python3-venv" if python == system.python else f"python{python}-venv"
        self.venvs = self.plan_venvs()
        self.variables.update({
            # the frameworks role's own packages too, so that one apt transaction installs everything
            "common_extra_packages": [venv_package, "python3-packaging"],
            "common_hold_packages": [],
            "common_install_headers": "nvidia_driver" in self.roles or "rocm" in self.roles,
            # the venvs, each {name, path, packages, environment}: the role makes every one of them
            "frameworks_venvs": self.venvs,
            # the single-venv interface of the role, for reading: the first venv, every requirement planned
            "frameworks_venv_path": self.venvs[0]["path"],
            "frameworks_python": "python3" if python == system.python else f"python{python}",
            "frameworks_packages": list(dict.fromkeys(p for v in self.venvs for p in v["packages"])),
            "frameworks_pip_index_url": r.pip_index_url or "",
            # vendor indexes are never extra indexes: frameworks_pip_vendor_indexes (add_index)
            "frameworks_pip_extra_index_urls": [],
            "frameworks_pip_vendor_indexes": self.variables.get("frameworks_pip_vendor_indexes", []),
            "frameworks_pip_find_links": list(r.pip_find_links),
            "frameworks_pip_offline": r.pip_offline,
            "frameworks_pip_trusted_hosts": list(r.pip_trusted_hosts),
        })

    def plan_venvs(self) -> List[Dict[str, Any]]:
        """One venv per framework under the venv root (torch and TensorFlow bring different CUDA wheel sets;
        upgrading one must not break the other), or the one shared venv with --shared-venv (or --venv)."""
        r = self.request
        environment = {"KERAS_BACKEND": self.keras_backend} if self.keras_backend else {}
        if r.shared_venv:
            packages = list(dict.fromkeys(p for f in r.frameworks for p in self.venv_packages.get(f, [])))
            self.decide("venv", r.venv_path, "one venv for every framework, as asked (--shared-venv or --venv)",
                        "rule:shared-venv", "request")
            return [{"name": "dlsetup", "path": r.venv_path, "packages": packages, "environment": environment}]
        venvs: List[Dict[str, Any]] = [{"name": f, "path": path, "packages": list(self.venv_packages.get(f, [])),
                  "environment": environment if f == "keras" else {}}
                 for f, path in zip(r.frameworks, venv_paths(r), strict=True)]
        self.decide("venv", ", ".join(str(v["path"]) for v in venvs),
                    "one venv per framework, each with its own accelerator build (--shared-venv keeps one)",
                    "rule:venv-per-framework")
        return venvs

    def resolve_jupyter(self) -> None:
        r = self.request
        if not r.jupyter:
            return
        address, _, port = r.jupyter_listen.rpartition(":")
        tls = "self-signed" if r.jupyter_self_signed else "given" if r.jupyter_cert else "none"
        kernels = [{"name": v["name"], "venv": v["path"], "environment": v["environment"],
                    "display_name": (f"{_TITLES.get(v['name'], v['name'])}"
                                     + (f" ({v['environment']['KERAS_BACKEND']} backend)"
                                        if "KERAS_BACKEND" in v["environment"] else ""))}
                   for v in self.venvs]
        with_torch = next((v["name"] for v in self.venvs
                           if any(p.split("=")[0].split("[")[0] == "torch" for p in v["packages"])), None)
        if with_torch is None:
            self.notes.append("jupyter: the starter notebooks train with torch and no venv has it: they are not "
                              "copied (add --framework pytorch)")
        self.roles.add("jupyter")
        self.variables.update({
            "jupyter_notebooks_dir": "dlsetup-notebooks" if with_torch else "",
            "jupyter_notebooks_kernel": with_torch or "",
            "jupyter_venv_path": JUPYTER_VENV,
            "jupyter_python": self.variables.get("frameworks_python", "python3"),
            "jupyter_kernels": kernels,
            "jupyter_user": r.jupyter_user or "",
            "jupyter_listen_address": address.strip("[]"),
            "jupyter_port": int(port),
            "jupyter_tls": tls,
            "jupyter_tls_cert": r.jupyter_cert or "",
            "jupyter_tls_key": r.jupyter_key or "",
            "jupyter_pip_index_url": r.pip_index_url or "",
            "jupyter_pip_find_links": list(r.pip_find_links),
            "jupyter_pip_offline": r.pip_offline,
            "jupyter_pip_trusted_hosts": list(r.pip_trusted_hosts),
        })
        where = "loopback only: reach it with ssh -L" if listen_is_loopback(r.jupyter_listen) else (
            f"TLS ({'a certificate generated on the host' if tls == 'self-signed' else 'the certificate given'})")
        self.decide("jupyter", f"JupyterLab on {r.jupyter_listen}",
                    f"its own venv ({JUPYTER_VENV}), a kernel per framework venv "
                    f"({', '.join(k['name'] for k in kernels)}), a token always; {where}", "rule:jupyter")

    def repository(self, name: str, system: OSEntry, **fields: str) -> Dict[str, str]:
        repo = self.data.repositories[name]
        if name == "cuda" and system.cuda_key_url and system.cuda_key_fingerprint:
            repo = replace(repo, key_url=system.cuda_key_url, key_fingerprint=system.cuda_key_fingerprint)
        site = next((s for s in self.request.repositories if s.name == name), None)
        if site is not None:  # the site's own copy (config file: repositories:)
            repo = replace(repo, url=site.url, key_url=site.key_url or repo.key_url,
                           key_fingerprint=site.key_fingerprint or repo.key_fingerprint)
        values = {"cuda_repo": system.cuda_repo, "cuda_arch": self.arch.cuda_repo_arch, "codename": system.codename,
                  "rocm_suite": system.rocm_suite, **fields}
        out = {
            "url": repo.url.format(**values),
            "suite": repo.suite.format(**values),
            "key_url": repo.key_url.format(**values),
            "key_fingerprint": repo.key_fingerprint,
        }
        if site is not None and not any(d.topic == "repository" and d.choice.startswith(f"{name}: ")
                                        for d in self.decisions):
            key = f"the {'site' if site.key_url else 'vendor'}'s key from {out['key_url']}"
            self.decide("repository", f"{name}: {out['url']}",
                        f"the site's repository, from the config file (repositories: {name}), instead of the "
                        f"vendor's; {key}, pinned fingerprint {out['key_fingerprint']}", "rule:site-repository",
                        "request")
        return out
