"""The resolver: host profile + request -> the roles to apply, their variables, and why.

Pure: no I/O beyond the package's own compatibility tables (read once, see :mod:`.compat`). Every
choice is a :class:`Decision` naming the table row (``table:key``) or planner rule (``rule:name``)
it came from. A request that cannot be met raises :class:`PlanConflict` with one line that names the
conflict and a way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dlsetup.errors import UsageError
from dlsetup.model import GPU, HostProfile
from dlsetup.plan import compat
from dlsetup.plan.compat import Architecture, Compat, Cuda, OSEntry, TorchRelease, minor, vtuple
from dlsetup.plan.request import FRAMEWORKS, Request
from dlsetup.storage import destruction, propose_layout, refusals

#: the order in which playbooks/site.yml applies roles
ROLE_ORDER = ("common", "storage", "nvidia_driver", "cuda_toolkit", "nvidia_container_toolkit", "rocm", "frameworks")
REBOOT_REQUIRED_FILE = "/run/dlsetup/reboot-required"


class PlanConflict(UsageError):
    """The request cannot be met on this host; the message names the conflict and a way out."""


@dataclass(frozen=True)
class Decision:
    topic: str  #: what was decided: "os", "driver", "torch", ...
    choice: str  #: what was chosen
    reason: str  #: why, in one sentence
    rule: str  #: the table row ("cuda:13.0") or planner rule ("rule:keep-loaded-driver")


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

    def to_dict(self) -> dict:
        return {
            "host": self.host,
            "roles": list(self.roles),
            "decisions": [vars(d) for d in self.decisions],
            "variables": dict(self.variables),
            "reboot_required": self.reboot_required,
            "notes": list(self.notes),
            "destroys": list(self.destroys),
        }


def make_plan(profile: HostProfile, request: Request) -> Plan:
    """Resolve ``request`` against ``profile``. Pure; raises :class:`PlanConflict`."""
    return _Planner(profile, request, compat.load()).run()


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


class _Planner:
    def __init__(self, profile: HostProfile, request: Request, data: Compat):
        self.profile = profile
        self.request = request
        self.data = data
        self.decisions: List[Decision] = []
        self.notes: List[str] = []
        self.roles: set[str] = {"common", "frameworks"}
        self.variables: Dict[str, Any] = {}
        self.packages: List[str] = []
        self.extra_index_urls: List[str] = []
        self.torch: Optional[TorchRelease] = None
        self.destroys: List[str] = []

    def decide(self, topic: str, choice: str, reason: str, rule: str) -> None:
        self.decisions.append(Decision(topic, choice, reason, rule))

    # -- the steps, in order ------------------------------------------------------------------
    def run(self) -> Plan:
        self.check_request()
        system = self.resolve_os()
        python = self.resolve_python(system)
        nvidia_gpus, amd_gpus = self.discrete_gpus()
        self.check_hardware_requests(nvidia_gpus, amd_gpus)
        self.torch = self.torch_release(python) if "pytorch" in self.request.frameworks else None
        nvidia = self.resolve_nvidia(nvidia_gpus, system) if nvidia_gpus else None
        rocm = self.resolve_rocm(amd_gpus, system) if amd_gpus and not nvidia else None
        if not nvidia and not rocm:
            self.decide("accelerator", "cpu", "no GPU usable for deep learning: CPU builds", "rule:cpu-only")
        for framework in self.request.frameworks:
            getattr(self, f"resolve_{framework}")(python, nvidia, rocm)
        self.resolve_container_toolkit(nvidia, system)
        reboot = self.resolve_reboot(nvidia)
        self.resolve_common_and_frameworks(system, python, nvidia, rocm)
        self.resolve_storage()
        roles = tuple(r for r in ROLE_ORDER if r in self.roles)
        variables = {"dlsetup_roles": list(roles), "dlsetup_reboot_required_file": REBOOT_REQUIRED_FILE}
        variables.update(sorted(self.variables.items()))
        host = self.profile.hostname or self.profile.source
        return Plan(host, roles, tuple(self.decisions), variables, reboot, tuple(self.notes), tuple(self.destroys))

    def check_request(self) -> None:
        if self.request.pip_offline and not self.request.pip_find_links:
            raise PlanConflict("--pip-offline installs only from --pip-find-links: give at least one")
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

    def resolve_os(self) -> OSEntry:
        os_ = self.profile.os
        supported = ", ".join(f"{s.id.capitalize()} {s.version}" for s in self.data.systems)
        system = next((s for s in self.data.systems if (s.id, s.version) == (os_.id, os_.version_id)), None)
        if system is None:
            found = os_.pretty_name or (f"{os_.id} {os_.version_id}" if os_.id else "an unknown OS")
            raise PlanConflict(f"{found} is not supported: install {supported} (or plan from a bundle of one)")
        if os_.arch not in (None, "x86_64"):
            raise PlanConflict(f"architecture {os_.arch} is not supported: dlsetup plans x86_64 hosts only")
        rule = f"os:{system.id}-{system.version}"
        self.decide("os", system.key, f"{system.key} ({system.codename}) is supported", rule)
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
            cuda = self.data.cuda_release(r.cuda)
            if cuda is None:
                known = ", ".join(c.version for c in self.data.cuda)
                raise PlanConflict(f"CUDA {r.cuda} is not in the compatibility tables: use --cuda with one of {known}")
            for arch in archs:
                if vtuple(min_cc) < vtuple(cuda.min_cc) or not arch.allows_cuda(cuda.version):
                    raise PlanConflict(
                        f"--cuda {cuda.version} does not support the {arch.name} GPU (compute capability {min_cc}); "
                        f"CUDA {cuda.version} needs {cuda.min_cc}+: use --cuda {arch.max_cuda} or older")

        allowed = [b for b in self.data.driver_branches if all(a.allows_branch(b.branch) for a in archs)]
        if r.driver_branch:
            wanted = int(r.driver_branch)
            branch = self.data.branch(wanted)
            if branch is None:
                known = ", ".join(str(b.branch) for b in self.data.driver_branches)
                raise PlanConflict(f"driver branch {wanted} is not in the compatibility tables: use one of {known}")
            if branch not in allowed:
                names = "/".join(a.name for a in archs)
                raise PlanConflict(f"--driver-branch {wanted} does not support the {names} GPU: use one of "
                                   f"{', '.join(str(b.branch) for b in allowed)}")
            if cuda and vtuple(branch.max_cuda) < vtuple(cuda.version):
                raise PlanConflict(
                    f"--driver-branch {wanted} supports CUDA up to {branch.max_cuda}, but --cuda {cuda.version} needs "
                    f"driver >= {cuda.toolkit_min_driver}: use --driver-branch {vtuple(cuda.toolkit_min_driver)[0]} "
                    f"or newer, or --cuda {branch.max_cuda} or older")
            allowed = [branch]

        kept = self.keep_loaded_driver(archs, ccs, allowed, cuda, open_modules)
        if kept:
            return kept
        fitting = [b for b in allowed if not cuda or vtuple(b.max_cuda) >= vtuple(cuda.version)]
        if not fitting:
            raise PlanConflict(f"no driver branch supports both the GPUs and CUDA {r.cuda}: drop --cuda")
        branch = max(fitting, key=lambda b: b.branch)
        why = "pinned by the request" if r.driver_branch else (
            f"the newest branch that supports {'/'.join(a.name for a in archs)}"
            + (f" and CUDA {cuda.version}" if cuda else ""))
        self.decide("driver", f"install branch {branch.branch}", why, f"nvidia:branch-{branch.branch}")
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
        if self.profile.os.secure_boot == "enabled":
            self.notes.append("Secure Boot is on: the driver module must be signed with an enrolled MOK; the "
                              "nvidia_driver role stops with the steps unless nvidia_driver_secure_boot_mok_ready "
                              "is true")
            self.decide("secure boot", "sign the driver module", "Secure Boot is enabled on the host",
                        "rule:secure-boot-mok")
        return _Nvidia(archs, ccs, branch.branch, True, open_modules, branch.max_cuda, str(branch.branch))

    def keep_loaded_driver(self, archs: Tuple[Architecture, ...], ccs: Tuple[str, ...], allowed: list, cuda: Any,
                           open_modules: bool) -> Optional[_Nvidia]:
        state = self.profile.nvidia
        version = state.library_version or state.kernel_module_version
        if not state.kernel_module_loaded or not version:
            return None
        branch = vtuple(version)[0]
        why_not = None
        if all(b.branch != branch for b in allowed):
            why_not = f"branch {branch} does not fit the GPUs or the requested branch"
        elif cuda and vtuple(version) < vtuple(cuda.toolkit_min_driver):
            why_not = f"CUDA {cuda.version} needs driver >= {cuda.toolkit_min_driver}"
        elif any(a.open_modules_required for a in archs) and state.kernel_module_flavor == "proprietary":
            why_not = "Blackwell needs the open kernel modules"
        elif self.torch and not any(vtuple(version) >= vtuple(c.compat_min_driver)
                                    for c in self.torch_builds(self.torch, archs, ccs)):
            why_not = f"no torch {self.torch.version} CUDA build for these GPUs runs on it"
        if why_not:
            self.decide("driver", f"replace {version}", why_not, "rule:keep-loaded-driver")
            return None
        known = self.data.branch(branch)
        ceiling = state.cuda_driver_version or (known.max_cuda if known else None)
        if ceiling is None:
            return None
        self.decide("driver", f"keep {version}",
                    f"the loaded {state.kernel_module_flavor or ''} driver supports {'/'.join(a.name for a in archs)}"
                    f" and CUDA up to {ceiling}: not reinstalled".replace("  ", " "), "rule:keep-loaded-driver")
        return _Nvidia(archs, ccs, branch, False, open_modules, ceiling, version)

    # -- AMD ---------------------------------------------------------------------------------
    def resolve_rocm(self, gpus: Tuple[GPU, ...], system: OSEntry) -> Optional[str]:
        r = self.request
        targets = tuple(dict.fromkeys(g.gfx_target for g in gpus if g.gfx_target))
        if not targets:
            if r.rocm:
                raise PlanConflict("cannot tell the AMD GPU's gfx target: probe the host with amdgpu loaded")
            self.decide("accelerator", "cpu", "the AMD GPU's gfx target is unknown", "rule:cpu-only")
            return None
        fits = [x for x in self.data.rocm if x.supports(targets, system.key)]
        if r.rocm:
            release = next((x for x in self.data.rocm if x.version == r.rocm), None)
            if release is None:
                known = ", ".join(x.version for x in self.data.rocm)
                raise PlanConflict(f"ROCm {r.rocm} is not in the compatibility tables: use --rocm with one of {known}")
            if release not in fits:
                raise PlanConflict(f"ROCm {r.rocm} does not support {'/'.join(targets)} on {system.key}: use "
                                   + (f"--rocm {fits[0].version}" if fits else "a supported GPU and OS"))
        elif not fits:
            self.decide("accelerator", "cpu", f"no ROCm release supports {'/'.join(targets)} on {system.key}",
                        "rule:cpu-only")
            return None
        else:
            release = fits[0]
        self.decide("rocm", release.version, "pinned by the request" if r.rocm else
                    f"the newest ROCm that supports {'/'.join(targets)} on {system.key}", f"rocm:{release.version}")
        self.roles.add("rocm")
        repo = self.repository("rocm", system, rocm_version=release.version)
        self.variables.update({
            "rocm_version": release.version,
            "rocm_install_dkms": True,
            "rocm_users": [],
            **{f"rocm_repo_{k}": v for k, v in repo.items()},
        })
        return release.version

    # -- frameworks --------------------------------------------------------------------------
    @staticmethod
    def framework_release(name: str, table: tuple, wanted: str, python: str, option: str) -> Any:
        """The release of ``table`` that ``wanted`` ("2.13" or "2.13.0") names, if it supports ``python``."""
        release = next((t for t in table if wanted in (t.version, minor(t.version))), None)
        if release is None:
            known = ", ".join(t.version for t in table)
            raise PlanConflict(f"{name} {wanted} is not in the compatibility tables: use {option} with one of {known}")
        if python not in release.python:
            raise PlanConflict(f"{name} {release.version} supports Python {_ver_list(release.python)}, not {python}: "
                               f"use --python {release.python[-1]} or another {option}")
        return release

    def torch_release(self, python: str) -> TorchRelease:
        release = self.framework_release("torch", self.data.torch, self.request.torch or self.data.torch_default,
                                         python, "--torch")
        how = "pinned by the request" if self.request.torch else "the default release line"
        self.decide("torch", release.version, f"{how}; supports Python {_ver_list(release.python)}",
                    f"pytorch:{release.version}")
        return release

    def resolve_pytorch(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        release = self.torch
        assert release is not None  # resolved in run() when pytorch is requested
        if nvidia:
            build, why = self.torch_cuda_build(release, nvidia)
            tag = build.wheel_tag
            self.decide("torch build", tag, why, f"cuda:{build.version}")
        elif rocm:
            builds = [v for v in release.rocm if vtuple(v) <= vtuple(rocm)
                      and any(x.version == v for x in self.data.rocm)]
            if not builds:
                raise PlanConflict(
                    f"torch {release.version} has no build for ROCm {rocm}: use another --torch or --rocm")
            tag = "rocm" + max(builds, key=vtuple)
            self.decide("torch build", tag, f"the torch {release.version} ROCm build for ROCm {rocm}", f"rocm:{rocm}")
        else:
            tag = "cpu"
            self.decide("torch build", tag, "no usable GPU: the CPU build", "rule:cpu-only")
        self.packages.append(f"torch=={release.version}")
        self.add_index(f"{self.data.torch_index_base}/{tag}")

    def torch_builds(self, release: TorchRelease, archs: Tuple[Architecture, ...],
                     ccs: Tuple[str, ...]) -> List[Cuda]:
        """The CUDA builds of ``release`` compiled for every one of these GPUs."""
        built_for = {b.cuda: b for b in self.data.torch_cuda_builds}
        return [c for c in map(self.data.cuda_release, release.cuda) if c is not None
                and c.version in built_for and all(built_for[c.version].runs_on(cc) for cc in ccs)
                and all(vtuple(c.min_cc) <= vtuple(cc) for cc in ccs) and all(a.allows_cuda(c.version) for a in archs)]

    def torch_cuda_build(self, release: TorchRelease, nvidia: _Nvidia) -> Tuple[Cuda, str]:
        """The newest build not above the driver's CUDA (or the --cuda pin); failing that, the oldest
        build the driver runs through CUDA minor-version compatibility."""
        limit = self.request.cuda or nvidia.cuda_ceiling
        builds = self.torch_builds(release, nvidia.architectures, nvidia.ccs)
        exact = [c for c in builds if vtuple(c.version) <= vtuple(limit)]
        if exact:
            build = max(exact, key=lambda c: vtuple(c.version))
            return build, (f"the newest torch {release.version} CUDA build not above CUDA {limit} that runs on "
                           f"compute capability {'/'.join(nvidia.ccs)}")
        compatible = [c for c in builds if not self.request.cuda
                      and vtuple(nvidia.driver_version) >= vtuple(c.compat_min_driver)]
        if not compatible:
            raise PlanConflict(f"torch {release.version} has no CUDA build for this GPU at CUDA <= {limit}: "
                               "use another --torch or a newer --driver-branch")
        build = min(compatible, key=lambda c: vtuple(c.version))
        return build, (f"driver {nvidia.driver_version} supports CUDA {limit}; the {build.wheel_tag} build runs "
                       f"on it through minor-version compatibility (driver >= {build.compat_min_driver})")

    def resolve_tensorflow(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        release = self.framework_release("tensorflow", self.data.tensorflow,
                                         self.request.tensorflow or self.data.tensorflow_default, python,
                                         "--tensorflow")
        if rocm:
            raise PlanConflict("TensorFlow is not planned on AMD GPUs: use --framework pytorch or --framework jax")
        if nvidia and vtuple(nvidia.cuda_ceiling) < vtuple(release.cuda):
            raise PlanConflict(f"tensorflow {release.version} needs a driver for CUDA {release.cuda}, the driver "
                               f"supports {nvidia.cuda_ceiling}: use a newer --driver-branch")
        requirement = f"tensorflow[and-cuda]=={release.version}" if nvidia else f"tensorflow=={release.version}"
        self.decide("tensorflow", requirement,
                    (f"CUDA {release.cuda} and cuDNN {release.cudnn} come as pip wheels" if nvidia else "CPU build")
                    + "; Keras 3 comes with it", f"tensorflow:{release.version}")
        self.packages.append(requirement)

    def resolve_jax(self, python: str, nvidia: Optional[_Nvidia], rocm: Optional[str]) -> None:
        variants = self.data.jax
        if nvidia:
            variant = next((v for v in variants if v.backend == "cuda" and v.cuda
                            and vtuple(v.cuda) <= vtuple(nvidia.cuda_ceiling)
                            and all(a.allows_cuda(v.cuda) for a in nvidia.architectures)), None)
        elif rocm:
            variant = next((v for v in variants if v.backend == "rocm" and v.rocm
                            and vtuple(v.rocm) <= vtuple(rocm)), None)
        else:
            variant = None
        if (nvidia or rocm) and variant is None:
            raise PlanConflict("no JAX GPU build fits this GPU and driver: use --framework pytorch")
        requirement = f"jax[{variant.extra}]" if variant else "jax"
        self.decide("jax", requirement, f"JAX's {variant.backend} build" if variant else "CPU build",
                    f"jax:{variant.extra}" if variant else "rule:cpu-only")
        self.packages.append(requirement)

    def add_index(self, url: str) -> None:
        r = self.request
        if r.pip_index_url or r.pip_find_links or r.pip_offline:
            self.decide("wheel index", "as given", f"{url} not added: the request brings its own index or wheels",
                        "rule:user-index")
        elif url not in self.extra_index_urls:
            self.extra_index_urls.append(url)
            self.decide("wheel index", url, "the vendor index that carries this build", "rule:vendor-index")

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
        for array, asked in zip(layout.arrays, request.arrays):
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
            cuda = self.data.cuda_release(r.cuda)
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
        self.variables.update({
            # the frameworks role's own packages too, so that one apt transaction installs everything
            "common_extra_packages": [venv_package, "python3-packaging"],
            "common_hold_packages": [],
            "common_install_headers": "nvidia_driver" in self.roles or "rocm" in self.roles,
            "frameworks_venv_path": r.venv_path,
            "frameworks_python": "python3" if python == system.python else f"python{python}",
            "frameworks_packages": list(self.packages),
            "frameworks_pip_index_url": r.pip_index_url or "",
            "frameworks_pip_extra_index_urls": list(self.extra_index_urls),
            "frameworks_pip_find_links": list(r.pip_find_links),
            "frameworks_pip_offline": r.pip_offline,
        })

    def repository(self, name: str, system: OSEntry, **fields: str) -> Dict[str, str]:
        repo = self.data.repositories[name]
        values = {"cuda_repo": system.cuda_repo, "codename": system.codename, "rocm_suite": system.rocm_suite,
                  **fields}
        return {
            "url": repo.url.format(**values),
            "suite": repo.suite.format(**values),
            "key_url": repo.key_url.format(**values),
            "key_fingerprint": repo.key_fingerprint,
        }
