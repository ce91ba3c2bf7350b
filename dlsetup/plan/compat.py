"""The compatibility tables in ``dlsetup/data/compat/*.toml``, loaded once and typed.

Each table row carries a ``source`` (release notes, support matrix); the planner cites the row it used
as ``<table>:<key>``, so every decision can be traced back to the document that backs it. Each table file
says how current it is with a top-level ``as_of = "YYYY-MM-DD"``; rows the planner makes up for versions
newer than the tables (see :mod:`.planner`) carry ``unverified = True``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any, Mapping, Optional, Tuple

TABLES = ("nvidia", "cuda", "pytorch", "tensorflow", "jax", "rocm", "os", "retired", "keras")


def vtuple(version: str) -> Tuple[int, ...]:
    """"580.159.04" -> (580, 159, 4); "13.0" -> (13, 0). Raises ValueError on non-numeric parts."""
    return tuple(int(part) for part in version.split("."))


def minor(version: str) -> str:
    """"2.13.0" -> "2.13"."""
    return ".".join(version.split(".")[:2])


def next_lines(newest: str) -> Tuple[str, str]:
    """The release lines that may follow ``newest``: "2.15" -> ("2.16", "3.0")."""
    major, minor_ = vtuple(newest)[:2]
    return f"{major}.{minor_ + 1}", f"{major + 1}.0"


#: a driver branch this far above the newest known one is taken for the next branch (they step by 5 or 10)
NEXT_BRANCH_STEP = 10


@dataclass(frozen=True)
class Architecture:
    name: str
    cc_min: str
    cc_max: str
    open_modules: bool
    open_modules_required: bool = False
    first_driver_branch: Optional[int] = None
    last_driver_branch: Optional[int] = None
    max_cuda: Optional[str] = None
    min_cuda: Optional[str] = None

    def covers(self, cc: str) -> bool:
        return vtuple(self.cc_min) <= vtuple(cc) <= vtuple(self.cc_max)

    def allows_branch(self, branch: int) -> bool:
        return (self.first_driver_branch or 0) <= branch <= (self.last_driver_branch or 10**6)

    def allows_cuda(self, cuda: str) -> bool:
        return (self.max_cuda is None or vtuple(cuda) <= vtuple(self.max_cuda)) and (
            self.min_cuda is None or vtuple(cuda) >= vtuple(self.min_cuda))


BRANCH_TYPES = ("production", "long-term", "new-feature")


@dataclass(frozen=True)
class DriverBranch:
    branch: int
    max_cuda: str
    type: Optional[str] = None  #: "production", "long-term" or "new-feature"; None: not in the table
    end_of_life: Optional[str] = None  #: "YYYY-MM-DD"
    open_modules_only: bool = False  #: the branch ships only the open kernel modules
    unverified: bool = False  #: newer than the tables, planned on the user's word

    def ended(self, today: Optional[str]) -> bool:
        """End of life on or before ``today`` ("YYYY-MM-DD"); unknown dates never end."""
        return bool(self.end_of_life and today and self.end_of_life <= today)

    @property
    def supported_long(self) -> bool:
        """A production or long-term branch: what a host gets unless a GPU or a CUDA needs newer."""
        return self.type in ("production", "long-term")


@dataclass(frozen=True)
class Cuda:
    version: str
    toolkit_min_driver: str
    compat_min_driver: str
    min_cc: str
    unverified: bool = False

    @property
    def wheel_tag(self) -> str:
        return "cu" + self.version.replace(".", "")


@dataclass(frozen=True)
class TorchRelease:
    version: str
    python: Tuple[str, ...]
    cuda: Tuple[str, ...]
    rocm: Tuple[str, ...]
    cuda_experimental: Tuple[str, ...] = ()  #: CUDA builds PyTorch marks experimental for this release
    unverified: bool = False
    cuda_aarch64: Tuple[str, ...] = ()  #: the CUDA builds that have Linux aarch64 (sbsa) wheels too


@dataclass(frozen=True)
class TorchCudaBuild:
    """The compute capabilities PyTorch compiles its build for one CUDA version for."""

    cuda: str
    cc_min: str
    cc_max: str

    def runs_on(self, cc: str) -> bool:
        return vtuple(self.cc_min) <= vtuple(cc) <= vtuple(self.cc_max)


@dataclass(frozen=True)
class TensorflowRelease:
    version: str
    python: Tuple[str, ...]
    cuda: str
    cudnn: str
    unverified: bool = False
    cuda_aarch64: bool = False  #: the Linux aarch64 wheels are built with CUDA (else they are CPU builds)


@dataclass(frozen=True)
class JaxVariant:
    backend: str
    extra: str
    cuda: Optional[str] = None
    rocm: Optional[str] = None
    python_min: Optional[str] = None  #: the oldest Python the current releases of this build support


@dataclass(frozen=True)
class JaxRelease:
    version: str
    python_min: Optional[str] = None  #: the wheel's Requires-Python floor
    extras: Tuple[str, ...] = ()


@dataclass(frozen=True)
class KerasRelease:
    """A Keras 3 release: pure Python, run on one of its backends (KERAS_BACKEND)."""

    version: str
    python: Tuple[str, ...]
    backends: Tuple[str, ...] = ("jax", "tensorflow", "torch")
    unverified: bool = False


@dataclass(frozen=True)
class RocmRelease:
    version: str
    gfx: Tuple[str, ...]
    os: Tuple[str, ...]
    #: systems AMD supports for some targets only: "debian 12" -> ("gfx942", ...)
    os_limited: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    layout: Optional[str] = None  #: "legacy" or "therock" (package names and paths)
    unverified: bool = False

    def supports(self, targets: Tuple[str, ...], system: str) -> bool:
        if not set(targets) <= set(self.gfx):
            return False
        return system in self.os or set(targets) <= set(self.os_limited.get(system, ()))


@dataclass(frozen=True)
class OSEntry:
    id: str
    version: str
    codename: str
    python: str
    cuda_repo: str
    rocm_suite: str  #: the suite of AMD's apt repositories for this OS (Debian uses Ubuntu's builds)
    cuda_key_url: Optional[str] = None  #: replaces the CUDA repository's key for this OS
    cuda_key_fingerprint: Optional[str] = None
    #: the architectures NVIDIA publishes this system's CUDA repository for (MachineArch.cuda_repo_arch)
    cuda_arches: Tuple[str, ...] = ("x86_64",)

    @property
    def key(self) -> str:
        return f"{self.id} {self.version}"


@dataclass(frozen=True)
class MachineArch:
    """A machine architecture dlsetup plans for, as ``uname -m`` names it, and the vendors' names of it."""

    name: str  #: "x86_64", "aarch64"
    cuda_repo_arch: str  #: the folder of NVIDIA's CUDA repositories: "x86_64", "sbsa"
    deb_arch: str  #: Debian's name: "amd64", "arm64"
    rocm: bool = False  #: AMD publishes ROCm for it


@dataclass(frozen=True)
class Repository:
    url: str
    suite: str
    key_url: str
    key_fingerprint: str


@dataclass(frozen=True)
class Retired:
    name: str
    title: str
    why: str
    alternatives: Tuple[str, ...]


@dataclass(frozen=True)
class Compat:
    """All tables, typed. Lists keep the file order (newest first where it matters)."""

    architectures: Tuple[Architecture, ...]
    driver_branches: Tuple[DriverBranch, ...]
    cuda: Tuple[Cuda, ...]
    torch_index_base: str
    torch_default: str
    torch: Tuple[TorchRelease, ...]
    torch_cuda_builds: Tuple[TorchCudaBuild, ...]
    tensorflow_default: str
    tensorflow: Tuple[TensorflowRelease, ...]
    jax: Tuple[JaxVariant, ...]
    rocm: Tuple[RocmRelease, ...]
    systems: Tuple[OSEntry, ...]
    repositories: Mapping[str, Repository]
    retired: Tuple[Retired, ...]
    jax_releases: Tuple[JaxRelease, ...] = ()  #: newest first
    arches: Tuple[MachineArch, ...] = ()  #: the machine architectures planned for
    keras: Tuple[KerasRelease, ...] = ()  #: newest first
    keras_default: str = ""
    #: KERAS_BACKEND value -> the dlsetup framework that provides it ("torch" -> "pytorch")
    keras_backends: Mapping[str, str] = field(default_factory=dict)
    #: table name -> "YYYY-MM-DD" the table was last checked against its sources; absent: unknown
    as_of: Mapping[str, str] = field(default_factory=dict)

    @property
    def oldest_as_of(self) -> Optional[str]:
        """The date of the least recently checked table: how old dlsetup's data is."""
        return min(self.as_of.values()) if self.as_of else None

    def cuda_release(self, version: str) -> Optional[Cuda]:
        return next((c for c in self.cuda if c.version == version), None)

    def branch(self, branch: int) -> Optional[DriverBranch]:
        return next((b for b in self.driver_branches if b.branch == branch), None)

    def architecture(self, cc: str) -> Optional[Architecture]:
        return next((a for a in self.architectures if a.covers(cc)), None)

    def machine_arch(self, name: str) -> Optional[MachineArch]:
        return next((a for a in self.arches if a.name == name), None)


def _rows(cls: type, rows: list, tuples: Tuple[str, ...] = ()) -> tuple:
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    out = []
    for row in rows:
        values = {k: (tuple(v) if k in tuples else v) for k, v in row.items() if k in fields}
        out.append(cls(**values))
    return tuple(out)


def read_tables() -> dict[str, dict[str, Any]]:
    """The raw TOML of every table, keyed by table name (used by the data tests)."""
    base = resources.files("dlsetup") / "data" / "compat"
    return {name: tomllib.loads((base / f"{name}.toml").read_text("utf-8")) for name in TABLES}


@cache
def load() -> Compat:
    """Read and type the tables; cached, so the package data is read once per process."""
    t = read_tables()
    return Compat(
        architectures=_rows(Architecture, t["nvidia"]["architecture"]),
        driver_branches=_rows(DriverBranch, t["nvidia"]["driver_branch"]),
        cuda=_rows(Cuda, t["cuda"]["cuda"]),
        torch_index_base=t["pytorch"]["index_base"],
        torch_default=t["pytorch"]["default"],
        torch=_rows(TorchRelease, t["pytorch"]["release"],
                    ("python", "cuda", "rocm", "cuda_experimental", "cuda_aarch64")),
        torch_cuda_builds=_rows(TorchCudaBuild, t["pytorch"]["cuda_build"]),
        tensorflow_default=t["tensorflow"]["default"],
        tensorflow=_rows(TensorflowRelease, t["tensorflow"]["release"], ("python",)),
        jax=_rows(JaxVariant, t["jax"]["variant"]),
        rocm=tuple(replace(row, os_limited={k: tuple(v) for k, v in row.os_limited.items()})
                   for row in _rows(RocmRelease, t["rocm"]["release"], ("gfx", "os"))),
        systems=_rows(OSEntry, t["os"]["os"], ("cuda_arches",)),
        repositories={
            name: Repository(**{k: v for k, v in repo.items() if k in Repository.__dataclass_fields__})
            for name, repo in t["os"]["repositories"].items()
        },
        retired=_rows(Retired, t["retired"]["framework"], ("alternatives",)),
        jax_releases=_rows(JaxRelease, t["jax"].get("release", []), ("extras",)),
        arches=_rows(MachineArch, t["os"].get("arch", [])),
        keras=_rows(KerasRelease, t["keras"]["release"], ("python", "backends")),
        keras_default=t["keras"]["default"],
        keras_backends=dict(t["keras"]["backends"]),
        as_of={name: str(table["as_of"]) for name, table in t.items() if "as_of" in table},
    )
