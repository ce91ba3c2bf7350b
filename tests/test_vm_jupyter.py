"""JupyterLab on a real Debian 12 VM, used the way a person uses it: ``dlsetup provision --jupyter`` over SSH
starts the ``dlsetup-jupyter`` service under systemd as the chosen user on loopback only; headless Chromium on
this machine reaches it through the ``ssh -L`` forward the provision summary prints, logs in on the login page
with the token from the host's token file, opens the LeNet-5 starter notebook, runs every cell, reads the losses
from the output area (the loss falls) and keeps a screenshot.

One VM boots for the module (lab.vm), from an image of its own with what is not under test pre-installed (the
common role's packages, venv support, python3-apt for Ansible's apt module), booted with qemu's ``-cpu max``:
numpy's and torch's wheels need x86-64-v2, which qemu's default CPU model lacks. The plan is a CPU one, PyTorch
only: torch and its dependencies come from the lab's wheelhouse (lab.wheels), served on this machine's 127.0.0.1,
which the guest reaches as 10.0.2.2 (qemu's user network) and trusts in its pip.conf (pip ignores plain-http
wheel servers other than localhost without it); JupyterLab and ipykernel come from the package index
pip is configured with, reached through the guest's NAT with this machine's CA bundle (a TLS-inspecting proxy
here), as a corporate host would have it. Chromium is the Debian package (/usr/bin/chromium), driven with
Playwright for Python (no browser of Playwright's own is downloaded).

The module prints its timings with -s (``pytest -m vm tests/test_vm_jupyter.py -s``).
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
from lab import mirror, wheels
from lab import vm as vm_lab

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[1]
#: Pre-installed in this module's image: what the roles install but this test does not test.
IMAGE_PACKAGES = ("build-essential", "ca-certificates", "gpg", "pciutils", "python3-debian", "python3-venv",
                  "python3-packaging", "python3-apt", "openssl", "iproute2")
#: torch, its CPU build and its dependencies fill more than the lab image's 3 GB root
ROOT_SIZE = "4G"
CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
CHROMIUM = Path(os.environ.get("DLSETUP_CHROMIUM", "/usr/bin/chromium"))
USER = "ada"
#: the local wheel's release (2.13.0): pinned, so pip takes the wheel from the served wheelhouse
TORCH = wheels.TORCH_WHEEL.name.split("-")[1].split("+")[0]
#: this machine, as qemu's user network shows it to the guest
GUEST_HOST = "10.0.2.2"
TOKEN_FILE = "/etc/dlsetup/jupyter/token.env"
NOTEBOOK = "dlsetup-notebooks/01-lenet5.ipynb"
#: the forward line of the provision summary: "from your computer: ssh -N -L 8888:127.0.0.1:8888 HOST  then open URL"
FORWARD = re.compile(r"from your computer: (ssh .*?)  then open (\S+)")
TIMES: dict[str, float] = {}
T = TypeVar("T")


def _timed(name: str, fn: Callable[..., T], *args: Any) -> T:
    start = time.monotonic()
    try:
        return fn(*args)
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
    with vm_lab.boot(tmp_path_factory.mktemp("vm"), image, cpu="max") as machine:
        TIMES["boot"] = time.monotonic() - start
        yield machine
    print("\ntimings (s):", json.dumps({k: round(v) for k, v in TIMES.items()}))


def _host(vm: vm_lab.VM) -> str:
    return f"vm-{vm.port}"  # a name of this VM only, so no cached facts of another run apply


@pytest.fixture(scope="module")
def provisioned(vm: vm_lab.VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The VM after ``dlsetup provision --jupyter``: {"run": the finished process, "work": its folder}."""
    work = tmp_path_factory.mktemp("jupyter")
    # the user who works on the VM, and the trust store a corporate host has (pip reaches the index through
    # this machine's TLS-inspecting proxy)
    vm.ssh(f"useradd --create-home --shell /bin/bash {USER}")
    if CA_BUNDLE.is_file():
        subprocess.run([*vm.ssh_args(), "cat > /etc/ssl/certs/ca-certificates.crt"], input=CA_BUNDLE.read_bytes(),
                       check=True, timeout=60)
    # pip ignores wheels served over plain http by any host but localhost ("not a trusted or secure host") and
    # would take torch's CUDA build from the index instead: the guest trusts the lab's wheel server, as a host
    # with a plain-http wheel mirror on its network is configured to
    vm.ssh(f"printf '[global]\\ntrusted-host = {GUEST_HOST}\\n' > /etc/pip.conf")
    (work / "hosts.ini").write_text(vm.inventory(_host(vm)))
    with mirror.serve(wheels.wheelhouse()) as url:
        links = url.replace("127.0.0.1", GUEST_HOST) + "/"  # this machine, as qemu's NAT shows it to the guest
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_STATE_HOME": str(work / "state"),
               "COLUMNS": "200"}
        command = [sys.executable, "-m", "dlsetup", "provision", "-i", str(work / "hosts.ini"), "--yes", "--json",
                   "--offline", "--framework", "pytorch", "--torch", TORCH, "--pip-find-links", links,
                   "--jupyter", "--jupyter-user", USER]
        run = _timed("provision", lambda: subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                                          timeout=1800, env=env))
    yield {"run": run, "work": work}


def test_provision_converges(provisioned: dict[str, Any], vm: vm_lab.VM) -> None:
    run = provisioned["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    (summary,) = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert summary["roles"] == ["common", "frameworks", "jupyter"], summary
    assert summary["failed"] == 0 and summary["changed"] > 0, summary
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
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
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
            # the notebook opens in its kernel (pytorch), which starts and goes idle
            idle = notebook.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            expect(idle.first).to_be_attached(timeout=300_000)
            TIMES["browser: open"] = time.monotonic() - start
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator(".lm-Menu").get_by_text("Run All Cells", exact=True).click()
            done = page.locator(".jp-OutputArea-output", has_text=re.compile(r"the loss fell|Error"))
            done.first.wait_for(timeout=420_000)
            TIMES["browser: run all"] = time.monotonic() - start - TIMES["browser: open"]
            done.first.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))
            text = _outputs(page)
        finally:
            browser.close()
    print(f"\nscreenshot: {screenshot}")
    # the served CPU wheel, not a build from the index
    assert f"torch {wheels.TORCH_WHEEL.name.split('-')[1]} training on cpu" in text, text[-3000:]
    losses = [float(v) for v in re.findall(r"^step +\d+ +loss ([0-9.]+)$", text, re.M)]
    assert len(losses) >= 3 and losses[-1] < losses[0], text[-3000:]
    first, last = (float(v) for v in re.search(r"^loss ([0-9.]+) -> ([0-9.]+)$", text, re.M).groups())
    assert last < first, text[-3000:]
    assert "the loss fell" in text
    assert screenshot.stat().st_size > 10_000

