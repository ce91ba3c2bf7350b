"""The lab: ``dlsetup provision --jupyter`` on a fresh Debian 12 chroot, with a PyTorch venv and a Keras venv on
the torch backend (the local CPU torch wheel). It converges and changes nothing the second time; every starter
notebook runs headless (``jupyter nbconvert --execute``) in its kernel as the user; the Keras kernel and the
Keras venv's activate script both carry KERAS_BACKEND=torch, and Keras trains a step on the CPU.

JupyterLab, ipykernel and Keras come from the package index pip is configured with (the host's CA bundle is
copied in, as a corporate host would have it); torch from the lab wheelhouse in /opt/wheels."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lab import rootfs, wheels
from lab.fixtures import lab_root, lab_wheels  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]
CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: the local wheel's release (2.13.0): pinned, so pip takes the wheel in /opt/wheels
TORCH = wheels.TORCH_WHEEL.name.split("-")[1].split("+")[0]
USER = "alice"
PLAN = ("--offline", "--framework", "pytorch", "--framework", "keras", "--keras-backend", "torch", "--torch", TORCH,
        "--pip-find-links", "/opt/wheels", "--jupyter", "--jupyter-user", USER)
MOUNTS = ("proc", "dev")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"

pytestmark = pytest.mark.lab


def provision(inventory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "--yes", "--json",
                           *PLAN], cwd=REPO, capture_output=True, text=True, timeout=1800)


def summary(run: subprocess.CompletedProcess) -> dict:
    (host,) = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return host


def as_user(root: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": f"/home/{USER}", "LANG": "C.UTF-8"}
    return subprocess.run([CHROOT, f"--userspec={USER}:{USER}", str(root), *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)


def text_of(outputs: list) -> str:
    """The stream text of notebook cell outputs (a string or, as nbformat stores it, a list of lines)."""
    texts = (o.get("text", "") for o in outputs)
    return "".join(t if isinstance(t, str) else "".join(t) for t in texts)


@pytest.fixture(scope="module")
def converged(lab_root: Path, lab_wheels: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("jupyter")
    root = rootfs.fresh_copy(tmp / "target")
    root.chmod(0o755)  # a system's / (the cached root is made private): the user must reach its files
    shutil.copytree(lab_wheels, root / "opt" / "wheels")
    # pip in the chroot reaches the index as this machine does (a TLS-inspecting proxy here): its trust store
    # is this machine's, as a corporate host's would be (the chroot connection passes PIP_CERT, SSL_CERT_FILE
    # and the like, which name this path, on to the chroot's pip)
    if CA_BUNDLE.is_file():
        shutil.copy2(CA_BUNDLE, root / SYSTEM_CA_BUNDLE.relative_to("/"))
    subprocess.run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    inventory = tmp / "hosts.ini"
    inventory.write_text(f"{root} ansible_connection=community.general.chroot "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    mounted = []
    try:
        first = provision(inventory)
        second = provision(inventory)
        for name in MOUNTS:  # the kernels' torch reads /proc; ipykernel talks over loopback sockets
            subprocess.run(["mount", "--bind", f"/{name}", str(root / name)], check=True)
            mounted.append(root / name)
        yield root, first, second
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", str(path)], check=False)
        # never remove through a mount of this machine's /proc or /dev: the copy is left behind instead
        still = [path for path in mounted if os.path.ismount(path)]
        assert not still, f"still mounted, {root} left in place: {still}"
        rootfs.remove_copy(root)


def test_provision_converges_and_is_idempotent(converged) -> None:
    root, first, second = converged
    assert first.returncode == 0, first.stderr[-4000:]
    host = summary(first)
    assert host["roles"] == ["common", "frameworks", "jupyter"] and host["changed"] > 0 and host["failed"] == 0
    assert "ssh -N -L 8888:127.0.0.1:8888" in first.stderr and "JUPYTER_TOKEN" not in first.stderr
    assert second.returncode == 0, second.stderr[-4000:]
    assert summary(second)["changed"] == 0


def test_a_venv_per_framework_and_a_kernel_for_each(converged) -> None:
    root, _, _ = converged
    kernels = root / "opt/dlsetup/jupyter/share/jupyter/kernels"
    assert sorted(p.name for p in kernels.iterdir()) == ["keras", "pytorch"]
    keras = json.loads((kernels / "keras" / "kernel.json").read_text())
    assert keras["argv"][0] == "/opt/dlsetup/venvs/keras/bin/python" and keras["env"] == {"KERAS_BACKEND": "torch"}
    assert json.loads((kernels / "pytorch" / "kernel.json").read_text())["env"] == {}
    assert "export KERAS_BACKEND=torch" in (root / "opt/dlsetup/venvs/keras/bin/activate").read_text()
    assert "KERAS_BACKEND" not in (root / "opt/dlsetup/venvs/pytorch/bin/activate").read_text()
    assert not (root / "opt/dlsetup/venvs/pytorch/lib/python3.11/site-packages/keras").exists()


def test_the_service_is_for_the_user_on_loopback_with_a_token(converged) -> None:
    root, _, _ = converged
    unit = (root / "etc/systemd/system/dlsetup-jupyter.service").read_text()
    assert f"User={USER}" in unit and "--ServerApp.ip=127.0.0.1 " in unit and "certfile" not in unit
    token = root / "etc/dlsetup/jupyter/token.env"
    info = token.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    uid = int(subprocess.run(["chroot", str(root), "id", "-u", USER], capture_output=True, text=True).stdout)
    assert info.st_uid == uid
    value = token.read_text().strip().removeprefix("JUPYTER_TOKEN=")
    assert len(value) == 48 and value.isalnum()


@pytest.mark.parametrize("notebook", ["01-lenet5", "02-simple-rnn", "03-lstm"])
def test_every_starter_notebook_runs_headless_in_its_kernel(converged, notebook: str) -> None:
    root, _, _ = converged
    path = f"/home/{USER}/dlsetup-notebooks/{notebook}.ipynb"
    kernel = json.loads((root / path.lstrip("/")).read_text())["metadata"]["kernelspec"]["name"]
    assert kernel == "pytorch"
    run = as_user(root, "/opt/dlsetup/jupyter/bin/jupyter", "nbconvert", "--to", "notebook", "--execute",
                  "--output", f"/tmp/{notebook}-run.ipynb", path)
    assert run.returncode == 0, run.stderr[-3000:]
    executed = json.loads((root / f"tmp/{notebook}-run.ipynb").read_text())
    output = text_of([o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])])
    assert "training on cpu" in output and "the loss fell" in output, output[-2000:]


def test_keras_trains_a_step_on_the_torch_backend(converged) -> None:
    """In the Keras venv, as its activate script sets it up, and in the Keras kernel."""
    root, _, _ = converged
    step = ("import numpy as np, keras; "
            "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]); model.compile('sgd', 'mse'); "
            "x = np.ones((8, 4), 'float32'); loss = model.train_on_batch(x, x[:, :1]); "
            "print(keras.backend.backend(), float(np.asarray(loss).ravel()[0]))")
    run = as_user(root, "/bin/sh", "-c", f". /opt/dlsetup/venvs/keras/bin/activate && python -c \"{step}\"")
    assert run.returncode == 0, run.stderr[-3000:]
    backend, loss = run.stdout.split()[-2:]
    assert backend == "torch" and float(loss) == float(loss)  # not NaN
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                           "source": step.replace("; ", "\n")}],
                "metadata": {"kernelspec": {"name": "keras", "display_name": "keras", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (root / "tmp" / "keras.ipynb").write_text(json.dumps(notebook))
    run = as_user(root, "/opt/dlsetup/jupyter/bin/jupyter", "nbconvert", "--to", "notebook", "--execute",
                  "--output", "/tmp/keras-run.ipynb", "/tmp/keras.ipynb")
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = json.loads((root / "tmp/keras-run.ipynb").read_text())["cells"][0]["outputs"]
    assert text_of(outputs).startswith("torch "), outputs


def test_the_service_command_serves_only_with_the_token(converged) -> None:
    """The unit's ExecStart, run as the user with the unit's environment file (the chroot has no systemd), on a
    free loopback port: the API answers with the token and refuses without it; both kernels are offered; the
    browser gets the role's default settings (no news feed, no update check)."""
    import re
    import socket
    import time
    import urllib.error
    import urllib.request

    root, _, _ = converged
    unit = (root / "etc/systemd/system/dlsetup-jupyter.service").read_text()
    command = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [f"--ServerApp.port={port}" if arg.startswith("--ServerApp.port=") else arg for arg in command]
    token = (root / "etc/dlsetup/jupyter/token.env").read_text().strip().removeprefix("JUPYTER_TOKEN=")
    env = {"PATH": "/usr/bin:/bin", "HOME": f"/home/{USER}", "LANG": "C.UTF-8", "JUPYTER_TOKEN": token}
    server = subprocess.Popen([CHROOT, f"--userspec={USER}:{USER}", str(root), *command], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"

    def get(path: str, with_token: bool) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"} if with_token
                                         else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - our loopback server
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, b""

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get("/api/status", True)[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-3000:]
            time.sleep(1)
        status, body = get("/api/kernelspecs", True)
        assert status == 200 and sorted(json.loads(body)["kernelspecs"]) == ["keras", "pytorch"]
        assert get("/api/kernelspecs", False)[0] == 403
        # the role's defaults for every user, as JupyterLab serves them to the browser (overrides.json becomes
        # the schema's defaults; a user's own settings would still win): no news, no update check
        status, body = get("/lab/api/settings/@jupyterlab/apputils-extension:notification", True)
        assert status == 200, body[:500]
        defaults = {k: v.get("default") for k, v in json.loads(body)["schema"]["properties"].items()}
        assert (defaults["fetchNews"], defaults["checkForUpdates"]) == ("false", False), defaults
    finally:
        server.terminate()
        server.wait(timeout=30)
