"""An air-gapped Debian 12 VM made a JupyterLab workstation from a mirror, and used the way a person uses it.

The VM has no network at all: qemu's user network with ``restrict=on`` routes nothing out of the guest, not even
to this machine; only the forwarded SSH port reaches it. ``dlsetup mirror`` plans it over SSH (CPU plan, PyTorch,
``--jupyter``) and fetches everything on this machine: the .deb closure from this machine's apt sources, the CPU
torch wheel and its dependencies from the lab's wheelhouse (lab.wheels), JupyterLab's and ipykernel's wheels
from a wheelhouse downloaded once from the index pip is configured with; each venv is resolved on its own.
``dlsetup provision --mirror DIR`` then converges the VM: the folder is served on this machine's loopback and
reaches the guest through a reverse forward on Ansible's own SSH connection, apt reads only the mirror and pip
only its index. The ``dlsetup-jupyter`` service runs under systemd as the chosen user on loopback only;
headless Chromium on this machine reaches it through the ``ssh -L`` forward the provision summary prints, logs
in on the login page with the token from the host's token file, opens the LeNet-5 starter notebook, runs every
cell, reads the losses from the output area (the loss falls) and keeps a screenshot.

One VM boots for the module (lab.vm), from an image of its own with what is not under test pre-installed (the
common role's packages, venv support, python3-apt for Ansible's apt module), booted with qemu's ``-cpu max``:
numpy's and torch's wheels need x86-64-v2, which qemu's default CPU model lacks. Chromium is the Debian package
(/usr/bin/chromium), driven with Playwright for Python (no browser of Playwright's own is downloaded).

The module prints its timings with -s (``pytest -m vm tests/test_vm_airgap.py -s``). Measured in a CI-like run on
the lab machine (2 cores, beside the other tiers): about 22 min with its image build; the provision about 12 min,
of which pip spends about 5 on torch, 3.5 on JupyterLab and 1.5 on ipykernel (unpacking and byte-compiling under
software emulation); the mirror about 15 s.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from conftest import missing_tool
from lab import wheels
from lab import vm as vm_lab

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[1]
#: Pre-installed in this module's image: what the roles install but this test does not test.
IMAGE_PACKAGES = ("build-essential", "ca-certificates", "gpg", "pciutils", "python3-debian", "python3-venv",
                  "python3-packaging", "python3-apt", "openssl", "iproute2")
#: torch, its CPU build and its dependencies fill more than the lab image's 3 GB root
ROOT_SIZE = "4G"
CHROMIUM = Path(os.environ.get("DLSETUP_CHROMIUM", "/usr/bin/chromium"))
USER = "ada"
#: this machine, as qemu's user network shows it to the guest
GUEST_HOST = "10.0.2.2"
TOKEN_FILE = "/etc/dlsetup/jupyter/token.env"
NOTEBOOK = "dlsetup-notebooks/01-lenet5.ipynb"
#: the forward line of the provision summary: "from your computer: ssh -N -L 8888:127.0.0.1:8888 HOST  then open URL"
FORWARD = re.compile(r"from your computer: (ssh .*?)  then open (\S+)")
TIMES: dict[str, float] = {}
T = TypeVar("T")


def _timed(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMES[name] = time.monotonic() - start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Chromium and Playwright, checked before the VM is built or booted."""
    if not os.access(CHROMIUM, os.X_OK):
        missing_tool(f"headless Chromium is not installed at {CHROMIUM} (Debian package 'chromium')")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_tool("Playwright for Python is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def image(browser_tools: None) -> vm_lab.Image:
    return _timed("image", vm_lab.build_image, vm_lab.image_dir().parent / "vm-bookworm-jupyter", IMAGE_PACKAGES,
                  False, ROOT_SIZE)


@pytest.fixture(scope="module")
def vm(image: vm_lab.Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[vm_lab.VM]:
    start = time.monotonic()
    with vm_lab.boot(tmp_path_factory.mktemp("vm"), image, cpu="max", isolated=True) as machine:
        TIMES["boot"] = time.monotonic() - start
        yield machine
    print("\ntimings (s):", json.dumps({k: round(v) for k, v in TIMES.items()}))


def _host(vm: vm_lab.VM) -> str:
    return f"vm-{vm.port}"  # a name of this VM only, so no cached facts of another run apply


def _dlsetup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "dlsetup", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=2400, env=env)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def provisioned(vm: vm_lab.VM, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The VM after ``dlsetup mirror`` and ``dlsetup provision --mirror DIR --jupyter``: {"mirror": the mirror
    run, "run": the provision run, "work": their folder, "sources": the guest's apt sources before}."""
    work = tmp_path_factory.mktemp("airgap")
    vm.ssh(f"useradd --create-home --shell /bin/bash {USER}")  # the user who works on the VM
    (work / "hosts.ini").write_text(vm.inventory(_host(vm)))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_STATE_HOME": str(work / "state"),
           "XDG_DATA_HOME": str(work / "data"), "DLSETUP_MIRROR_PORT": str(_free_port()), "COLUMNS": "200"}
    plan = ("--framework", "pytorch", "--pip-find-links", str(wheels.wheelhouse()),
            "--pip-find-links", str(wheels.jupyter_wheelhouse()), "--pip-offline", "--jupyter", "--jupyter-user", USER)
    sources = vm.ssh("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null", check=False).stdout
    mirror_run = _timed("mirror", _dlsetup, "mirror", "-i", str(work / "hosts.ini"), "-o", str(work / "mirror"),
                        *plan, env=env)
    assert mirror_run.returncode == 0, mirror_run.stderr[-3000:]
    run = _timed("provision", _dlsetup, "provision", "-i", str(work / "hosts.ini"), "--yes", "--json",
                 "--mirror", str(work / "mirror"), *plan, env=env)
    return {"mirror": mirror_run, "run": run, "work": work, "sources": sources}


def test_the_vm_reaches_nothing_but_its_ssh_forward(vm: vm_lab.VM) -> None:
    """This machine listens on its loopback, which qemu's user network shows the guest as 10.0.2.2 (without
    restrict=on the guest connects to it, as the kernel test's VM reaches the archive): the guest cannot."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = vm.ssh(f"timeout 20 bash -c 'exec 3<>/dev/tcp/{GUEST_HOST}/{port}'", check=False, timeout=60)
        assert probe.returncode != 0, probe
        # the control: the same probe to a port the guest listens on itself succeeds
        assert vm.ssh("timeout 20 bash -c 'exec 3<>/dev/tcp/127.0.0.1/22'", check=False).returncode == 0


def test_provision_from_the_mirror_converges(provisioned: dict[str, Any], vm: vm_lab.VM) -> None:
    manifest = json.loads((provisioned["work"] / "mirror" / "manifest.json").read_text())
    [host] = manifest["hosts"].values()
    assert sorted(host["venvs"]) == ["/opt/dlsetup/jupyter", "/opt/dlsetup/venvs/pytorch"], host
    run = provisioned["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    (summary,) = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert "jupyter" in summary["roles"] and "frameworks" in summary["roles"], summary
    assert summary["failed"] == 0 and summary["changed"] > 0, summary
    torch = vm.ssh("/opt/dlsetup/venvs/pytorch/bin/python -c 'import torch; print(torch.__version__)'", timeout=600)
    assert torch.stdout.strip() == wheels.TORCH_WHEEL.name.split("-")[1]  # the mirror's CPU wheel
    # the guest's own apt sources were neither used nor changed
    after = vm.ssh("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null", check=False).stdout
    assert after == provisioned["sources"]
    token = vm.ssh(f"cat {TOKEN_FILE}").stdout.strip().removeprefix("JUPYTER_TOKEN=")
    assert len(token) == 48 and token not in run.stdout + run.stderr


def test_the_service_runs_under_systemd_as_the_user_on_loopback(provisioned: dict[str, Any], vm: vm_lab.VM) -> None:
    assert provisioned["run"].returncode == 0
    assert vm.ssh("systemctl is-active dlsetup-jupyter", check=False).stdout.strip() == "active"
    assert vm.ssh("systemctl is-enabled dlsetup-jupyter", check=False).stdout.strip() == "enabled"
    pid = vm.ssh("systemctl show --property=MainPID --value dlsetup-jupyter").stdout.strip()
    assert pid not in ("", "0")
    assert vm.ssh(f"ps -o user= -p {pid}").stdout.strip() == USER
    # every listening socket of the server is on loopback, one on 8888 (it
    # listens some seconds after systemd starts it, more under software emulation)
    deadline = time.monotonic() + 180
    while True:
        listening = vm.ssh(f"ss -Hltnp | grep 'pid={pid},'", check=False).stdout.split("\n")
        local = sorted({line.split()[3] for line in listening if line.strip()})
        if local or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert "127.0.0.1:8888" in local, local
    assert all(address.startswith("127.0.0.1:") for address in local), local
    # it answers on loopback, and not on the guest's own network address
    address = vm.ssh("hostname -I").stdout.split()[0]
    connect = "timeout 10 bash -c 'exec 3<>/dev/tcp/{}/8888'"
    assert vm.ssh(connect.format("127.0.0.1"), check=False).returncode == 0
    assert vm.ssh(connect.format(address), check=False).returncode != 0


@pytest.fixture()
def forward(provisioned: dict[str, Any], vm: vm_lab.VM) -> Iterator[str]:
    """The summary's ``ssh -L`` line, run here (the host named through an ssh_config, as a user's
    ~/.ssh/config names it, and a free local port instead of 8888, which another test may hold); yields the URL
    to open."""
    run = provisioned["run"]
    assert run.returncode == 0
    found = FORWARD.search(run.stderr)
    assert found, run.stderr[-3000:]
    argv, url = shlex.split(found.group(1)), found.group(2)
    assert argv[:3] == ["ssh", "-N", "-L"] and argv[-1] == _host(vm), argv
    local, remote = argv[3].split(":", 1)
    assert url == f"http://127.0.0.1:{local}/lab", url
    port = _free_port()
    config = provisioned["work"] / "ssh_config"
    config.write_text(f"Host {_host(vm)}\n  HostName 127.0.0.1\n  Port {vm.port}\n  User root\n"
                      f"  IdentityFile {vm.image.key}\n  UserKnownHostsFile {vm.known_hosts}\n"
                      "  StrictHostKeyChecking yes\n  BatchMode yes\n  ExitOnForwardFailure yes\n")
    command = [argv[0], "-F", str(config), *argv[1:3], f"{port}:{remote}", *argv[4:]]
    ssh = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/login", timeout=10) as answer:  # noqa: S310 - our forward
                    assert answer.status == 200
                    break
            except (OSError, urllib.error.URLError):
                assert ssh.poll() is None, ssh.stderr.read().decode() if ssh.stderr else ""
                assert time.monotonic() < deadline, f"no answer through {command}"
                time.sleep(1)
        yield url.replace(f":{local}/", f":{port}/")
    finally:
        ssh.terminate()
        ssh.wait(timeout=30)


def _outputs(page: Any) -> str:
    return "\n".join(page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts())


def test_chromium_logs_in_runs_lenet5_and_sees_the_loss_fall(forward: str, vm: vm_lab.VM, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    token = vm.ssh(f"cat {TOKEN_FILE}").stdout.strip().removeprefix("JUPYTER_TOKEN=")
    assert len(token) == 48
    base = forward.removesuffix("/lab")
    screenshot = tmp_path / "lenet5.png"
    start = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        try:
            # the server sends the browser to its login page; a wrong token keeps it there
            page.goto(forward)
            assert "/login" in page.url, page.url
            page.fill("#password_input", "not-the-token")
            page.click("#login_submit")
            expect(page.locator(".message.error")).to_be_visible(timeout=120_000)
            assert "/login" in page.url
            page.fill("#password_input", token)
            page.click("#login_submit")
            page.wait_for_url(re.compile(r"/lab"))
            page.goto(f"{base}/lab/tree/{NOTEBOOK}")
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            expect(notebook.locator(".jp-Cell").first).to_be_visible(timeout=300_000)
            # the notebook opens in its kernel (pytorch), which starts and goes idle: as a person does, wait for
            # the status bar's "| Idle" (cells run while it still says "Connecting" are queued and can be lost;
            # the toolbar's execution indicator says idle before the kernel is connected)
            idle = page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\| Idle$"))
            expect(idle.first).to_be_visible(timeout=300_000)
            TIMES["browser: open"] = time.monotonic() - start
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator(".lm-Menu").get_by_text("Run All Cells", exact=True).click()
            done = page.locator(".jp-OutputArea-output", has_text=re.compile(r"the loss fell|Error"))
            done.first.wait_for(timeout=420_000)
            TIMES["browser: run all"] = time.monotonic() - start - TIMES["browser: open"]
            done.first.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))
            text = _outputs(page)
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"))  # what the browser showed when it failed
            print(f"\nscreenshot of the failure: {tmp_path / 'failed.png'}")
            raise
        finally:
            browser.close()
    print(f"\nscreenshot: {screenshot}")
    # the served CPU wheel, not a build from the index
    assert f"torch {wheels.TORCH_WHEEL.name.split('-')[1]} training on cpu" in text, text[-3000:]
    losses = [float(v) for v in re.findall(r"^step +\d+ +loss ([0-9.]+)$", text, re.M)]
    assert len(losses) >= 3 and losses[-1] < losses[0], text[-3000:]
    summary = re.search(r"^loss ([0-9.]+) -> ([0-9.]+)$", text, re.M)
    assert summary, text[-3000:]
    first, last = (float(v) for v in summary.groups())
    assert last < first, text[-3000:]
    assert "the loss fell" in text
    assert screenshot.stat().st_size > 10_000

