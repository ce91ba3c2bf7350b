"""Every role's molecule scenario on a fresh Debian 12 chroot: syntax, create, converge, idempotence, verify."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlsetup.runner import link_collection
from lab.fixtures import ServedMirror, ServedVendors, lab_mirror, lab_root, lab_wheels, vendor_mirror  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "tests" / "roles_fixtures" / "molecule" / "base.yml"
MOLECULE = Path(sys.executable).with_name("molecule")

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("role", ["common", "frameworks", "nvidia_driver", "cuda_toolkit",
                                  "nvidia_container_toolkit", "rocm"])
def test_molecule_scenario(role: str, lab_root: Path, lab_mirror: ServedMirror, lab_wheels: Path,
                           vendor_mirror: ServedVendors, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DLSETUP_REPO": str(REPO),
        "DLSETUP_COLLECTIONS": str(link_collection(tmp_path / "collections")),
        "DLSETUP_LAB_TARGET": str(tmp_path / "target"),
        "DLSETUP_LAB_WHEELS": str(lab_wheels) if role == "frameworks" else "",
        "DLSETUP_LAB_MIRROR": lab_mirror.url,
        "DLSETUP_LAB_FINGERPRINT": lab_mirror.mirror.fingerprint,
        "DLSETUP_LAB_VENDOR_MIRROR": vendor_mirror.url,
        "DLSETUP_LAB_VENDOR_FINGERPRINT": vendor_mirror.mirror.fingerprint,
        "PATH": f"{MOLECULE.parent}:{os.environ['PATH']}",
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "molecule"),
    }
    run = subprocess.run([str(MOLECULE), "-c", str(BASE_CONFIG), "test"], cwd=REPO / "roles" / role,
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "idempotence" in run.stdout + run.stderr
