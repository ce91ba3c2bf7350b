import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DLSETUP_FIXTURES", REPO.parent / "shared" / "fixtures"))
H100_BUNDLE = FIXTURES / "bundles" / "h100-ubuntu2404"
PUBLIC = FIXTURES / "public"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"real captures not found at {FIXTURES} (set DLSETUP_FIXTURES)")
    return FIXTURES


TORCH_VENV = Path(os.environ.get("DLSETUP_TORCH_VENV", Path.home() / ".cache" / "dlsetup-test" / "torch-venv"))
WHEELS = Path("/opt/wheels")


@pytest.fixture(scope="session")
def torch_venv() -> Path:
    """A venv with CPU torch 2.13.0, built once and cached between runs."""
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--find-links", str(WHEELS), "torch==2.13.0"],
                       check=True)
    return TORCH_VENV
