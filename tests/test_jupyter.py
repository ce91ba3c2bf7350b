"""Keras, one venv per framework, and JupyterLab: the plan's choices and refusals (the TLS gate among them),
the jupyter role's own gate, the starter notebooks being verify's models, and what provision prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rolecheck
from conftest import REPO
from dlsetup import notebooks
from dlsetup.jupyter import access_lines, invoking_user
from dlsetup.verify import PAYLOAD


def dlsetup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)


def plan(*args: str) -> dict:
    done = dlsetup("plan", "--offline", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(*args: str) -> str:
    done = dlsetup("plan", "--offline", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr


def venvs(document: dict) -> dict:
    return {v["name"]: v for v in document["variables"]["frameworks_venvs"]}


def decision(document: dict, topic: str) -> dict:
    (found,) = [d for d in document["decisions"] if d["topic"] == topic]
    return found


# -- Keras ----------------------------------------------------------------------------------------------


def test_keras_with_the_torch_backend_is_planned_and_explained():
    document = plan("--framework", "keras", "--keras-backend", "torch")
    keras = venvs(document)["keras"]
    assert keras["path"] == "/opt/dlsetup/venvs/keras"
    assert keras["environment"] == {"KERAS_BACKEND": "torch"}
    names = [p.split("==")[0] for p in keras["packages"]]
    assert names == ["torch", "keras"] and keras["packages"][1].startswith("keras==3.")
    # torch comes from PyTorch's CPU index alone (this plan's host has no GPU), as for --framework pytorch
    assert document["variables"]["frameworks_pip_vendor_indexes"][0]["url"].endswith("/cpu")
    why = decision(document, "keras")
    assert "torch backend" in why["reason"] and why["rule"].startswith("keras:3.")
    assert why["source"] == "table:keras" and why["as_of"]
    assert decision(document, "keras backend")["choice"] == "torch"


def test_plan_text_says_why_keras_and_its_backend():
    done = dlsetup("plan", "--offline", "--framework", "keras", "--keras-backend", "torch")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "keras backend: torch" in text and "Keras 3 on the torch backend" in text


@pytest.mark.parametrize("frameworks,backend", [
    (("keras",), "torch"),
    (("keras", "tensorflow"), "tensorflow"),
    (("jax", "keras"), "jax"),
    (("keras", "pytorch", "tensorflow"), "torch"),
])
def test_the_default_backend_is_the_other_framework_planned_else_torch(frameworks, backend):
    args = [a for f in frameworks for a in ("--framework", f)]
    document = plan(*args)
    keras = venvs(document)["keras"]
    assert keras["environment"] == {"KERAS_BACKEND": backend}
    provider = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}[backend]
    assert any(p.startswith(provider) for p in keras["packages"])
    if len(frameworks) > 1:  # the backend's venv and the keras venv carry the same build of it
        other = "pytorch" if backend == "torch" else backend
        build = [p for p in venvs(document)[other]["packages"]]
        assert set(build) <= set(keras["packages"])


def test_keras_needs_python_that_its_release_supports():
    """Python 3.10 (Ubuntu 22.04's): the newest Keras line in the tables for 3.10 (3.12), not 3.15."""
    document = plan("--framework", "keras", "--python", "3.10", "--torch", "2.14")
    assert "keras==3.12.*" in venvs(document)["keras"]["packages"]


def test_keras_backend_without_keras_is_refused():
    assert "add --framework keras" in refused("--framework", "pytorch", "--keras-backend", "jax")


def test_unknown_keras_backend_is_refused():
    assert "use jax, tensorflow, torch" in refused("--framework", "keras", "--keras-backend", "theano")


# -- one venv per framework ----------------------------------------------------------------------------


def test_one_venv_per_framework_by_default():
    document = plan("--framework", "pytorch", "--framework", "tensorflow")
    found = venvs(document)
    assert {n: v["path"] for n, v in found.items()} == {"pytorch": "/opt/dlsetup/venvs/pytorch",
                                                         "tensorflow": "/opt/dlsetup/venvs/tensorflow"}
    assert [p.split("==")[0] for p in found["pytorch"]["packages"]] == ["torch"]
    assert [p.split("==")[0] for p in found["tensorflow"]["packages"]] == ["tensorflow"]


def test_shared_venv_keeps_one_with_everything():
    document = plan("--framework", "pytorch", "--framework", "keras", "--shared-venv")
    (shared,) = document["variables"]["frameworks_venvs"]
    assert shared["path"] == "/opt/dlsetup/venv" and shared["environment"] == {"KERAS_BACKEND": "torch"}
    assert [p.split("==")[0] for p in shared["packages"]] == ["torch", "keras"]
    assert document["variables"]["frameworks_venv_path"] == "/opt/dlsetup/venv"


def test_venv_root_moves_every_venv_and_venv_implies_shared():
    document = plan("--framework", "jax", "--venv-root", "/srv/envs")
    assert venvs(document)["jax"]["path"] == "/srv/envs/jax"
    (shared,) = plan("--framework", "jax", "--framework", "pytorch", "--venv", "/srv/venv")["variables"][
        "frameworks_venvs"]
    assert shared["path"] == "/srv/venv"


def test_a_system_path_as_venv_root_is_refused():
    assert "venv" in refused("--venv-root", "/usr")


# -- JupyterLab: the plan --------------------------------------------------------------------------------


def test_jupyter_is_planned_on_loopback_with_a_kernel_per_venv():
    document = plan("--framework", "pytorch", "--framework", "keras", "--keras-backend", "jax", "--jupyter",
                    "--jupyter-user", "alice")
    variables = document["variables"]
    assert document["roles"][-1] == "jupyter"
    assert (variables["jupyter_listen_address"], variables["jupyter_port"], variables["jupyter_tls"]) == (
        "127.0.0.1", 8888, "none")
    kernels = {k["name"]: k for k in variables["jupyter_kernels"]}
    assert kernels["keras"] == {"name": "keras", "venv": "/opt/dlsetup/venvs/keras",
                                "environment": {"KERAS_BACKEND": "jax"}, "display_name": "Keras 3 (jax backend)"}
    assert kernels["pytorch"]["environment"] == {}
    assert variables["jupyter_user"] == "alice"
    # the starter notebooks train with torch: they open in the pytorch kernel (the keras one has jax here)
    assert variables["jupyter_notebooks_kernel"] == "pytorch"


def test_without_torch_no_starter_notebooks_and_a_note():
    document = plan("--framework", "tensorflow", "--jupyter")
    assert document["variables"]["jupyter_notebooks_dir"] == ""
    assert any("starter notebooks" in n for n in document["notes"])


@pytest.mark.parametrize("listen", ["0.0.0.0:8888", "192.168.1.5:9000", "[::]:8888"])
def test_an_address_off_loopback_without_tls_is_refused(listen):
    """The TLS gate: never an open server. (Mutation: dropping the check in check_jupyter fails this test.)"""
    message = refused("--jupyter", "--jupyter-listen", listen)
    assert "not loopback and has no TLS" in message and listen in message


@pytest.mark.parametrize("args,tls", [
    (("--jupyter-self-signed",), "self-signed"),
    (("--jupyter-cert", "/etc/ssl/j.crt", "--jupyter-key", "/etc/ssl/private/j.key"), "given"),
])
def test_an_address_off_loopback_with_tls_is_planned(args, tls):
    variables = plan("--jupyter", "--jupyter-listen", "0.0.0.0:8443", *args)["variables"]
    assert (variables["jupyter_listen_address"], variables["jupyter_port"], variables["jupyter_tls"]) == (
        "0.0.0.0", 8443, tls)


@pytest.mark.parametrize("listen", ["127.0.0.2:8888", "[::1]:8888"])
def test_any_loopback_address_needs_no_tls(listen):
    assert plan("--jupyter", "--jupyter-listen", listen)["variables"]["jupyter_tls"] == "none"


@pytest.mark.parametrize("args,message", [
    (("--jupyter", "--jupyter-listen", "localhost"), "is not ADDR:PORT"),
    (("--jupyter", "--jupyter-listen", "0.0.0.0:0"), "is not ADDR:PORT"),
    (("--jupyter", "--jupyter-listen", "::1:8888"), "is not ADDR:PORT"),
    (("--jupyter", "--jupyter-cert", "/a.crt"), "go together"),
    (("--jupyter", "--jupyter-cert", "a.crt", "--jupyter-key", "/a.key"), "absolute path"),
    (("--jupyter", "--jupyter-self-signed", "--jupyter-cert", "/a", "--jupyter-key", "/b"), "keep one"),
    (("--jupyter-user", "alice"), "add --jupyter"),
    (("--jupyter", "--jupyter-user", "al ice"), "not a user name"),
])
def test_bad_jupyter_options_are_one_line_exit_2(args, message):
    assert message in refused(*args)


# -- JupyterLab: the role's own gate (plain ansible-playbook users have no planner) ----------------------


@pytest.mark.skipif(not Path("/etc/debian_version").exists(), reason="the role runs on this machine: Debian/Ubuntu")
@pytest.mark.parametrize("tls", ["none", "self-signed"])
def test_the_role_refuses_an_open_address_without_tls(tmp_path, tls):
    """In check mode on this machine: without TLS the role stops at its gate, before anything is installed;
    with TLS it passes the gate (and stops at the next task here: the user it is given does not exist)."""
    done = rolecheck.jupyter(tmp_path, {"jupyter_listen_address": "0.0.0.0", "jupyter_tls": tls,
                                        "jupyter_user": "no-such-user-h17"})
    assert done.returncode != 0
    failed = rolecheck.last_task(done.stdout)
    if tls == "none":
        assert "Refuse a listen address off loopback without TLS" in failed and "needs TLS" in done.stdout
    else:
        assert "Look the user up" in failed and "needs TLS" not in done.stdout, done.stdout[-3000:]


# -- the starter notebooks -----------------------------------------------------------------------------


def test_the_shipped_notebooks_are_the_generated_ones():
    shipped = REPO / "roles" / "jupyter" / "files" / "notebooks"
    generated = notebooks.generate()
    assert sorted(p.name for p in shipped.glob("*.ipynb")) == sorted(generated)
    for name, text in generated.items():
        assert (shipped / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: python -m dlsetup.notebooks roles/jupyter/files/notebooks")


def test_the_notebooks_train_verify_s_own_models():
    """Each notebook's code is cut out of the verify workload, not a copy that could drift from it."""
    payload = PAYLOAD.read_text(encoding="utf-8")
    functions = notebooks._functions(payload)
    for stem, (_, task, needs) in notebooks.NOTEBOOKS.items():
        code = "\n".join("".join(c["source"]) for c in notebooks.build(stem, payload)["cells"]
                         if c["cell_type"] == "code")
        for name in (*needs, "train"):
            assert functions[name][0] in code, (stem, name)
        compile(code, stem, "exec")
        assert f"train({task!r}" in code and "assert last < first" in code


def test_a_changed_model_changes_the_notebook(tmp_path):
    payload = tmp_path / "payload.py"
    payload.write_text(PAYLOAD.read_text(encoding="utf-8").replace("nn.Linear(120, 84)", "nn.Linear(120, 85)"))
    assert notebooks.generate(payload)["01-lenet5.ipynb"] != notebooks.generate()["01-lenet5.ipynb"]


# -- what provision prints -------------------------------------------------------------------------------


def test_loopback_access_gives_the_ssh_tunnel_and_never_the_token():
    variables = plan("--jupyter", "--jupyter-user", "alice")["variables"]
    lines = access_lines(variables, "gpu1", local=False)
    assert lines[0] == "JupyterLab on gpu1: http://127.0.0.1:8888/lab (listening on loopback only)"
    assert "ssh -N -L 8888:127.0.0.1:8888 gpu1" in lines[1]
    assert "/etc/dlsetup/jupyter/token.env" in lines[-1] and "alice" in lines[-1]
    assert access_lines({"dlsetup_roles": ["common", "frameworks"]}, "gpu1", local=False) == []
    here = access_lines(variables, "ws7", local=True)
    assert here[0] == "JupyterLab on this machine: http://127.0.0.1:8888/lab" and "8888:127.0.0.1:8888 ws7" in here[1]


def test_tls_access_is_https_on_the_host():
    variables = plan("--jupyter", "--jupyter-listen", "0.0.0.0:8443", "--jupyter-self-signed")["variables"]
    lines = access_lines(variables, "gpu1", local=False)
    assert lines[0] == "JupyterLab on gpu1: https://gpu1:8443/lab" and "self-signed" in lines[1]


def test_the_invoking_user_is_sudo_s_user_never_root():
    assert invoking_user({"SUDO_USER": "alice"}) == "alice"
    assert invoking_user({"SUDO_USER": "root", "LOGNAME": "root", "USER": "root"}) in (None, invoking_user({}))
