"""``dlsetup verify``: prove that driver, runtime and framework work together, and how fast.

The workload (:mod:`dlsetup.verify.payload`) runs in the target environment's own interpreter, which
need not have dlsetup installed; this side adds what the host profile knows (driver, vendor tool, GPU
count) and compares the achieved figures with the card's datasheet peak.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from dlsetup.documents import DocumentError, loads, problem
from dlsetup.errors import UsageError
from dlsetup.paths import quote
from dlsetup.model import HostProfile
from dlsetup.verify.checks import Check, PeakSpec, compare_with_peaks, device_count_check, driver_checks, \
    make, tool_checks

PAYLOAD = Path(__file__).with_name("payload.py")

#: The payload's own wall time is well under these; they only stop a hung device or driver.
TIMEOUT_S = {True: 300, False: 1800}

STATUS_ORDER = ("pass", "warn", "fail")


def venv_python(venv: Path) -> Path:
    """The interpreter of virtual environment ``venv``; a usage error when there is none."""
    python = Path(venv) / "bin" / "python"
    if not python.is_file():
        raise UsageError(f"no Python interpreter at {python}: is {venv} a virtual environment?")
    return python


def run_payload(python: Path, quick: bool, data_dir: Path) -> Dict[str, Any]:
    """Run the payload with ``python``; its JSON document, or one with a failed check saying why not."""
    command = [str(python), str(PAYLOAD), "--json", "--data-dir", str(data_dir)] + (["--quick"] if quick else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S[quick],
                              check=False)
    except subprocess.TimeoutExpired:
        return _broken(python, quick, f"the workload did not finish within {TIMEOUT_S[quick]} s")
    except OSError as err:
        return _broken(python, quick, f"cannot run {python}: {err.strerror or err}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return _broken(python, quick, f"the workload crashed: {tail.strip()[:200]}")
    try:
        document = loads(lines[-1])
    except DocumentError as err:
        return _broken(python, quick, f"the workload printed no verify result ({err}, in {quote(lines[-1], 40)}): "
                                      f"{python} does not behave like Python 3.9 or newer")
    wrong = problem("payload", document)
    if wrong is not None:
        return _broken(python, quick, f"the workload printed no verify result ({wrong}): {python} does "
                                      f"not behave like Python 3.9 or newer")
    return document


def _broken(python: Path, quick: bool, message: str) -> Dict[str, Any]:
    return {"kind": "verify", "host": None, "python": str(python), "quick": quick, "framework": None,
            "devices": [], "checks": [make("framework.run", "fail", message)]}


def overall_status(checks: List[Check]) -> str:
    """The worst status of ``checks`` ("pass" when there are none)."""
    return max((c["status"] for c in checks), key=STATUS_ORDER.index, default="pass")


def verify(venv: Path, profile: HostProfile, *, quick: bool = False, data_dir: Optional[Path] = None,
           lookup: Callable[[str], Optional[PeakSpec]]) -> Dict[str, Any]:
    """Verify ``venv`` on the host described by ``profile``: the verify JSON document, whose ``status``
    is the worst of its checks. ``lookup`` maps a GPU name to its datasheet spec (``gpudb.by_name``)."""
    python = venv_python(venv)
    data_dir = Path(data_dir) if data_dir is not None else Path(venv)
    if not data_dir.is_dir():
        raise UsageError(f"data directory not found: {data_dir}")
    document = run_payload(python, quick, data_dir)
    workload = compare_with_peaks(document["checks"], document["devices"], lookup)
    if document.get("framework") is not None:  # right after the framework import check
        workload.insert(1, device_count_check(profile, document))
    checks = driver_checks(profile) + tool_checks(profile) + workload
    document.update(host=profile.hostname or document["host"], machine=profile.machine.key, venv=str(venv),
                    checks=checks, status=overall_status(checks))
    return document
