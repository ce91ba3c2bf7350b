import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: real captures, copied into the repository with their sources (tests/fixtures/README.md)
FIXTURES = Path(os.environ.get("DLSETUP_FIXTURES", REPO / "tests" / "fixtures"))
H100_BUNDLE = FIXTURES / "bundles" / "h100-ubuntu2404"
PUBLIC = FIXTURES / "public"


#: set by .ci/run: a tier whose tools are missing fails instead of skipping, so CI never skips one silently
STRICT = os.environ.get("DLSETUP_TEST_STRICT", "") not in ("", "0")


def missing_tool(reason: str) -> None:
    """A tier cannot run here: skip with ``reason`` (fail under DLSETUP_TEST_STRICT=1, as CI runs)."""
    if STRICT:
        pytest.fail(f"{reason} (DLSETUP_TEST_STRICT is set: a missing tool fails the run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"real captures not found at {FIXTURES} (set DLSETUP_FIXTURES)")
    return FIXTURES


TORCH_VENV = Path(os.environ.get("DLSETUP_TORCH_VENV", Path.home() / ".cache" / "dlsetup-test" / "torch-venv"))
#: a folder holding a CPU torch wheel for this Python (a full torch download is not part of the fast tier)
WHEELS = Path(os.environ.get("DLSETUP_TORCH_WHEELS", "/opt/wheels"))


def torch_wheel() -> Path | None:
    """The newest CPU torch wheel in WHEELS for this Python, if there is one."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(WHEELS.glob(f"torch-*+cpu-{tag}-{tag}-*linux*_x86_64.whl")) if WHEELS.is_dir() else []
    return found[-1] if found else None


@pytest.fixture(scope="session")
def torch_venv() -> Path:
    """A venv with the CPU torch wheel of WHEELS, built once and cached between runs."""
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        wheel = torch_wheel()
        if wheel is None:
            missing_tool(f"no CPU torch wheel for this Python in {WHEELS} "
                         "(set DLSETUP_TORCH_WHEELS to a folder with one)")
        assert wheel is not None
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--find-links", str(WHEELS), str(wheel)],
                       check=True)
    return TORCH_VENV


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run records (``$XDG_STATE_HOME/dlsetup/runs``) of the tests' runs go to a folder of the session, not the
    user's own state directory (subprocesses inherit the variable)."""
    os.environ.setdefault("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


#: skips that say something about the machine, not a missing tool: they stay skips under DLSETUP_TEST_STRICT
MACHINE_FACTS = ("no SMBIOS", "no python3.9 or python3.10 on PATH")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Under DLSETUP_TEST_STRICT (CI) a skipped test fails unless its reason is a fact of the machine: every
    ``skipif`` on a missing tool (gpg, chromium, pci.ids, root, ...) then stops the run instead of hiding a tier."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(fact in reason for fact in MACHINE_FACTS):
            report.outcome = "failed"
            report.longrepr = f"skipped under DLSETUP_TEST_STRICT: {reason}"
    return None
