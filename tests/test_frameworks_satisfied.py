"""roles/frameworks/files/satisfied.py: the check that lets a converged venv skip pip, on real venvs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "roles" / "frameworks" / "files" / "satisfied.py"


def satisfied(python: Path | str, *requirements: str) -> tuple[int, str]:
    # as the role runs it: the script's text through -c, isolated mode
    run = subprocess.run([str(python), "-I", "-c", SCRIPT.read_text(), *requirements], capture_output=True,
                         text=True, timeout=60)
    return run.returncode, run.stdout.strip()


def test_installed_pins_ranges_and_local_versions(torch_venv: Path) -> None:
    python = torch_venv / "bin" / "python"
    assert satisfied(python, "torch==2.13.0") == (0, "all installed")  # installed 2.13.0+cpu: local label
    assert satisfied(python, "Torch>=2.10,<3") == (0, "all installed")  # names are compared canonically
    assert satisfied(python, "torch==2.12.0") == (1, "not installed: torch==2.12.0")
    assert satisfied(python, "torch==2.13.0", "torchvision==0.28.0") == (1, "not installed: torchvision==0.28.0")


def _dist(site: Path, name: str, version: str, *requires: str) -> None:
    """An installed distribution as importlib.metadata sees one: its dist-info metadata."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_extras_are_followed_and_bad_requirements_left_to_pip(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    (site,) = venv.glob("lib/python3*/site-packages")
    _dist(site, "demo_pkg", "1.0", 'helper>=2; extra == "fast"', "other; python_version < '3'", "base-dep>=1")
    _dist(site, "helper", "1.5")
    assert satisfied(python, "demo-pkg==1.0") == (1, "not installed: base-dep>=1 (for demo-pkg==1.0)")
    _dist(site, "Base.Dep", "1.2")  # found under its canonical name; "other" is for Python 2 only
    assert satisfied(python, "demo-pkg==1.0") == (0, "all installed")
    assert satisfied(python, "demo-pkg[fast]==1.0") == (1, "not installed: helper>=2 (for demo-pkg[fast]==1.0)")
    assert satisfied(python, "demo-pkg[slow]") == (0, "all installed")  # an extra that requires nothing
    shutil.rmtree(site / "helper-1.5.dist-info")
    _dist(site, "helper", "2.1")
    assert satisfied(python, "demo-pkg[fast]==1.0", "helper<3") == (0, "all installed")
    assert satisfied(python, "demo-pkg ===") == (1, "not installed: demo-pkg ===")


def test_missing_venv_or_no_pip_means_not_satisfied(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    assert satisfied(bare / "bin" / "python", "click")[0] == 1
    with pytest.raises(FileNotFoundError):
        satisfied(tmp_path / "absent" / "bin" / "python", "click")
