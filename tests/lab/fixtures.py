"""pytest fixtures shared by the lab tests: the cached root, the served signed mirror, the wheelhouse."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import missing_tool
from lab import mirror, rootfs, vendor_repos, wheels


@dataclass(frozen=True)
class ServedMirror:
    """A built mirror and the URL it is served at."""

    mirror: mirror.Mirror
    url: str


def _require_lab() -> None:
    missing = [tool for tool in ("debootstrap", "apt-ftparchive", "gpg", "dpkg-deb") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        missing_tool(f"the lab tier needs root and {', '.join(missing) or 'its tools'} (apt-get install debootstrap "
                     "apt-utils dpkg-dev gpg, as .ci/run does)")


@pytest.fixture(scope="session")
def lab_root() -> Path:
    """The cached Debian 12 root, built on first use."""
    _require_lab()
    return rootfs.build_root()


@pytest.fixture(scope="session")
def lab_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedMirror]:
    """The signed stand-in vendor mirror, served on 127.0.0.1 for the whole session."""
    _require_lab()
    built = mirror.build_mirror(tmp_path_factory.mktemp("mirror"))
    with mirror.serve(built.root) as url:
        yield ServedMirror(built, url)


@dataclass(frozen=True)
class ServedVendors:
    """The stand-ins of NVIDIA's and AMD's repositories (tests/lab/vendor_repos.py) and their URL."""

    mirror: vendor_repos.VendorMirror
    url: str


@pytest.fixture(scope="session")
def vendor_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedVendors]:
    """The stand-in vendor repositories built from tests/lab/vendors/*.toml, served on 127.0.0.1."""
    _require_lab()
    built = vendor_repos.build(tmp_path_factory.mktemp("vendors"))
    with mirror.serve(built.root) as url:
        yield ServedVendors(built, url)


@pytest.fixture(scope="session")
def lab_wheels() -> Path:
    """The wheelhouse with the CPU torch wheel and its dependencies."""
    return wheels.wheelhouse()
