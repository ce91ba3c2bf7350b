"""The lab, on one fresh Debian 12 chroot: a framework install that fails shows pip's own error and keeps
the whole log in the run record; then, with torch installed into that venv, ``dlsetup verify -i`` gives
the host's verify document, which ``dlsetup report`` renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from dlsetup.errors import EXIT_HOSTS_FAILED
from lab import rootfs
from lab.fixtures import lab_root, lab_wheels  # noqa: F401 - pytest fixtures
from lab.wheels import TORCH_REQUIREMENT

REPO = Path(__file__).resolve().parents[1]
VENV = "/opt/dlsetup/venvs/pytorch"  # the default: one venv per framework
#: where the chroot sees the cached torch venv's packages
TORCH_SITE = "/opt/dlsetup-test-torch"


def dlsetup(*args: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.fixture(scope="module")
def chroot(lab_root: Path, lab_wheels: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Tuple[Path, Path, Path]]:
    """(root, inventory, state folder): a fresh copy of the lab root with the wheelhouse in /opt/wheels
    and an empty wheel folder in /opt/empty-wheels."""
    work = tmp_path_factory.mktemp("fleet-lab")
    root = rootfs.fresh_copy(work / "target")
    shutil.copytree(lab_wheels, root / "opt" / "wheels")
    (root / "opt" / "empty-wheels").mkdir(parents=True)
    inventory = work / "hosts.ini"
    inventory.write_text(f"{root} ansible_connection=community.general.chroot "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    yield root, inventory, work / "state"
    if os.path.ismount(root / TORCH_SITE.lstrip("/")):  # never remove through a mount of the host's files
        subprocess.run(["umount", str(root / TORCH_SITE.lstrip("/"))], check=True)
    rootfs.remove_copy(root)


@pytest.mark.lab
def test_failed_framework_install_shows_pips_error_and_keeps_the_log(chroot) -> None:
    root, inventory, state = chroot
    run = dlsetup("provision", "-i", str(inventory), "--yes", "--json", "--tags", "frameworks",
                  "--pip-find-links", "/opt/empty-wheels",
                  "--pip-offline", state=state)
    assert run.returncode == EXIT_HOSTS_FAILED, run.stderr[-3000:]
    [host] = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    failure = host["failure"]
    assert failure["task"].startswith("Install the other packages into the venv"), failure
    assert failure["message"].startswith("ERROR: No matching distribution found for torch"), failure
    assert any(line.startswith("ERROR: Could not find a version that satisfies the requirement torch")
               for line in failure["detail"]), failure
    assert "Looking in links" not in failure["message"]
    # the summary shows it, and says where the whole log is
    assert "ERROR: No matching distribution found for torch" in run.stderr
    [probe, record] = sorted((state / "dlsetup" / "runs").iterdir())  # the probe's run keeps its own
    assert "-provision-probe-" in probe.name and "-provision-site-" in record.name
    assert f"full log and run record: {record}\n" in run.stderr
    [artifacts] = (record / "artifacts").iterdir()
    log = (artifacts / "stdout").read_text()
    assert "Looking in links: " in log and "/opt/empty-wheels" in log
    assert "No matching distribution found for torch" in log
    assert "TASK [dlsetup.workstation.frameworks : Install venv support]" in log  # every task, not only the failed one
    assert list(json.loads((record / "plans.json").read_text())) == [str(root)]
    assert json.loads((record / "summary.json").read_text())["hosts"][0]["failure"] == failure


@pytest.mark.lab
def test_verify_inventory_gives_a_document_the_report_renders(chroot, torch_venv: Path, tmp_path: Path) -> None:
    root, inventory, state = chroot
    if not (root / VENV.lstrip("/") / "bin" / "python").exists():  # run alone: the venv the provision made
        subprocess.run(["chroot", str(root), "/usr/bin/python3", "-m", "venv", "--without-pip", VENV], check=True)
    # torch in that venv: the cached CPU torch venv's packages (cp311, as Debian 12's Python), mounted
    # read-only into the chroot, instead of minutes of installing and removing them
    site = root / TORCH_SITE.lstrip("/")
    site.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(next(torch_venv.glob("lib/python3.11/site-packages"))), str(site)],
                   check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(site)], check=True)
        [packages] = (root / VENV.lstrip("/")).glob("lib/python3.*/site-packages")
        (packages / "dlsetup-test-torch.pth").write_text(TORCH_SITE + "\n")
        run = dlsetup("verify", "-i", str(inventory), "--json", "--quick", state=state)
    finally:
        subprocess.run(["umount", str(site)], check=True)
    assert run.returncode in (0, EXIT_HOSTS_FAILED), run.stderr[-3000:]
    documents = json.loads(run.stdout)
    assert list(documents) == [str(root)]
    document = documents[str(root)]
    assert document["kind"] == "verify", document
    checks = {c["id"]: c for c in document["checks"]}
    assert checks["framework.import"]["status"] == "pass", checks
    assert TORCH_REQUIREMENT.split("==")[1] in checks["framework.import"]["message"]
    # exit status as provision's: 3 exactly when a check failed
    assert (run.returncode == EXIT_HOSTS_FAILED) == (document["status"] == "fail")
    [record] = (state / "dlsetup" / "runs").glob("*-verify-*")
    assert json.loads((record / "verify.json").read_text()) == documents
    saved = tmp_path / "verify.json"
    saved.write_text(run.stdout)
    html = tmp_path / "report.html"
    report = dlsetup("report", "-o", str(html), str(saved), state=state)
    assert report.returncode == 0, report.stderr
    page = html.read_text()
    assert str(root) in page and checks["framework.import"]["message"] in page
