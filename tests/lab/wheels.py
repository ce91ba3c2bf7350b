"""A cached wheelhouse: the local CPU torch wheel plus its dependencies, for offline ``pip --find-links``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import rootfs

#: The CPU torch wheel on this machine's disk (cp311 matches Debian 12's python3).
TORCH_WHEEL = Path(os.environ.get(
    "DLSETUP_LAB_TORCH_WHEEL", "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"))
#: The requirement that only the local wheel satisfies (PyPI has no ``+cpu`` local versions).
TORCH_REQUIREMENT = "torch==" + TORCH_WHEEL.name.split("-")[1]


#: What the jupyter role installs (JupyterLab into its venv, ipykernel into each framework venv).
JUPYTER_REQUIREMENTS = ("jupyterlab", "ipykernel")


def wheelhouse() -> Path:
    """Return a directory with the torch wheel and every wheel it needs, downloading the others once."""
    dest = Path(os.environ.get("DLSETUP_LAB_WHEELS", Path.home() / ".cache" / "dlsetup-lab" / "wheels"))
    with rootfs.building(dest):
        return _wheelhouse(dest, [str(TORCH_WHEEL)])


def jupyter_wheelhouse() -> Path:
    """Return a directory with JupyterLab's and ipykernel's wheels for Debian 12's Python (from the index pip
    is configured with, once), for hosts that install them offline."""
    dest = rootfs.cache_dir().parent / "wheels-jupyter"
    with rootfs.building(dest):
        return _wheelhouse(dest, ["--platform", "manylinux_2_36_x86_64", "--platform", "manylinux2014_x86_64",
                                  "--implementation", "cp", *JUPYTER_REQUIREMENTS])


def _wheelhouse(dest: Path, what: list[str]) -> Path:
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".wheels-", dir=dest.parent))
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--python-version", "3.11", "--dest", str(work), *what],
            check=True,
        )
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest
