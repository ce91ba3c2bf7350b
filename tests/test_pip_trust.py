"""Plain-http pip locations: pip skips an http index or find-links URL on a host that is neither loopback nor
a --trusted-host, with a warning only, and installs from its other indexes (a CUDA torch from its default
index instead of the CPU wheel served). dlsetup refuses such a URL (planner, CLI, roles) unless
--pip-trusted-host names its host, and passes the trusted hosts to every pip run (roles, dlsetup mirror)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import yaml

from conftest import REPO
from dlsetup import paths
from dlsetup.errors import UsageError
from dlsetup.plan import PlanConflict, Request, load_request, make_plan
import rolecheck
from dlsetup.runner import HostResult
from tests.test_plan import NO_GPU

#: (url, trusted hosts, whether pip ignores it): the cases pip's own decision is checked on too
CASES = [
    ("http://10.0.0.5:8000/wheels/", (), True),
    ("http://mirror.lan/simple/", (), True),
    ("HTTP://Mirror.LAN/simple/", ("mirror.lan",), False),  # names in any case
    ("http://mirror.lan/simple/", ("MIRROR.lan",), False),
    ("http://10.0.0.5:8000/wheels/", ("10.0.0.5",), False),  # a host without a port: every port
    ("http://10.0.0.5:8000/wheels/", ("10.0.0.5:8000",), False),
    ("http://10.0.0.5:8000/wheels/", ("10.0.0.5:80",), True),  # another port
    ("http://10.0.0.5/wheels/", ("10.0.0.5:80",), True),  # a URL without a port matches no port given
    ("http://10.0.0.5/wheels/", ("10.0.0.6", "mirror.lan"), True),
    ("http://[fd00::5]:8000/simple/", ("fd00::5",), False),
    ("http://[fd00::5]:8000/simple/", ("[fd00::5]:8000",), False),
    ("http://[fd00::5]:8000/simple/", (), True),
    ("http://localhost:8000/simple/", (), False),  # loopback is trusted
    ("http://127.0.0.1:9/simple/", (), False),
    ("http://127.3.2.1/simple/", (), False),
    ("http://[::1]:9/simple/", (), False),
    ("https://mirror.lan/simple/", (), False),  # https: always
    ("file:///srv/simple", (), False),
]


@pytest.mark.parametrize("url,trusted,ignored", CASES)
def test_pip_ignores_what_pip_itself_ignores(url, trusted, ignored):
    assert (paths.pip_ignores(url, trusted) is not None) is ignored
    session_module = pytest.importorskip("pip._internal.network.session")
    from pip._internal.models.link import Link

    session = session_module.PipSession(trusted_hosts=list(trusted))
    assert session.is_secure_origin(Link(url)) is not ignored


def test_local_paths_are_never_ignored():
    assert paths.pip_ignores("/opt/wheels") is None and paths.pip_ignores("/srv/my wheels") is None


@pytest.mark.parametrize("value", ["mirror.lan", "mirror.lan:8080", "10.0.0.5", "[fd00::5]:80", "fd00::5"])
def test_trusted_hosts_accepted(value):
    assert paths.trusted_host(value) == value


@pytest.mark.parametrize("value", ["http://mirror.lan/", "mirror.lan/simple", "mirror.lan:http", "x:99999", "",
                                   "a b", "user@mirror.lan", 5, None])
def test_bad_trusted_hosts_refused(value):
    with pytest.raises(UsageError, match="trusted host"):
        paths.trusted_host(value)


# -- the request and the planner ----------------------------------------------------------------------------


def test_trusted_hosts_from_the_config_file_and_the_options(tmp_path):
    config = tmp_path / "plan.yml"
    config.write_text("pip-find-links: http://10.0.0.5:8000/wheels/\npip_trusted_hosts: [10.0.0.5, mirror.lan]\n")
    assert load_request(config).pip_trusted_hosts == ("10.0.0.5", "mirror.lan")
    config.write_text("pip-trusted-host: 10.0.0.5\n")  # one, by the option's own name
    assert load_request(config).pip_trusted_hosts == ("10.0.0.5",)
    assert load_request(config, pip_trusted_hosts=("a.lan", "a.lan")).pip_trusted_hosts == ("a.lan",)
    config.write_text("pip_trusted_hosts: [http://10.0.0.5/]\n")
    with pytest.raises(UsageError, match="pip trusted host 'http://10.0.0.5/' is not HOST or HOST:PORT"):
        load_request(config)


@pytest.mark.parametrize("request_, url, host", [
    (Request(pip_find_links=("/opt/wheels", "http://10.0.0.5:8000/wheels/")), "http://10.0.0.5:8000/wheels/",
     "10.0.0.5"),
    (Request(pip_index_url="http://mirror.lan/simple/"), "http://mirror.lan/simple/", "mirror.lan"),
    (Request(pip_index_url="http://mirror.lan/simple/", pip_trusted_hosts=("mirror.lan:8080",)),
     "http://mirror.lan/simple/", "mirror.lan"),
    (Request(mirror="http://mirror.lan:8642/"), "http://mirror.lan:8642/simple/", "mirror.lan"),
])
def test_the_planner_refuses_a_url_pip_would_skip(request_, url, host):
    with pytest.raises(PlanConflict) as refused:
        make_plan(NO_GPU, request_)
    message = str(refused.value)
    assert url in message and f"--pip-trusted-host {host}" in message and "https" in message
    assert "\n" not in message


@pytest.mark.parametrize("request_", [
    Request(pip_find_links=("/opt/wheels", "https://mirror.lan/wheels/", "http://127.0.0.1:8000/w/")),
    Request(pip_index_url="http://localhost:3141/root/simple/"),
    Request(pip_index_url="file:///srv/simple"),
    Request(pip_index_url="http://mirror.lan/simple/", pip_find_links=("http://10.0.0.5:8000/wheels/",),
            pip_trusted_hosts=("mirror.lan", "10.0.0.5:8000"), jupyter=True, jupyter_user="alice"),
    Request(mirror="/srv/dlsetup-mirror"),
])
def test_the_planner_plans_what_pip_uses(request_):
    variables = make_plan(NO_GPU, request_).variables
    assert variables["frameworks_pip_trusted_hosts"] == list(request_.pip_trusted_hosts)
    if request_.jupyter:
        assert variables["jupyter_pip_trusted_hosts"] == list(request_.pip_trusted_hosts)


def _dlsetup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)


def test_the_cli_refuses_in_one_line_exit_2():
    done = _dlsetup("plan", "--offline", "--pip-find-links", "http://10.0.0.5:8000/wheels/")
    assert done.returncode == 2 and not done.stdout, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("dlsetup: error: --pip-find-links http://10.0.0.5:8000/wheels/ is plain http")
    assert "--pip-trusted-host 10.0.0.5" in done.stderr


@pytest.mark.parametrize("command", [("plan", "--from-bundle", "/nonexistent/bundle"),
                                     ("provision", "-i", "/nonexistent/inventory", "--yes"),
                                     ("mirror", "-i", "/nonexistent/inventory", "-o", "/nonexistent/mirror")])
def test_a_fleet_is_refused_once_before_any_host_is_probed(command):
    """The request is refused as it is read: not per host after probing each (no bundle, no inventory here:
    reading either would be another error)."""
    done = _dlsetup(*command, "--pip-find-links", "http://10.0.0.5:8000/wheels/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and "--pip-trusted-host 10.0.0.5" in done.stderr, done.stderr


def test_provision_refuses_before_changing_anything(tmp_path):
    done = _dlsetup("provision", "--offline", "--check", "--pip-index-url", "http://mirror.lan/simple/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--pip-trusted-host mirror.lan" in done.stderr and "TASK [" not in done.stdout


def test_the_cli_plans_a_trusted_host():
    done = _dlsetup("plan", "--offline", "--json", "--pip-index-url", "http://mirror.lan/simple/",
                    "--pip-trusted-host", "mirror.lan")
    assert done.returncode == 0, done.stderr
    variables = json.loads(done.stdout)["variables"]
    assert variables["frameworks_pip_trusted_hosts"] == ["mirror.lan"]
    assert variables["frameworks_pip_index_url"] == "http://mirror.lan/simple/"


# -- dlsetup mirror and status: pip on the controller, pip suggested --------------------------------------


def test_the_mirror_downloads_with_the_trusted_hosts():
    from dlsetup.mirror.build import _split_vendor
    from dlsetup.mirror.contents import plan_contents
    from dlsetup.mirror.roles import role_data

    request = Request(pip_index_url="http://mirror.lan/simple/", pip_trusted_hosts=("mirror.lan",), torch="2.13.0",
                      offline=True, jupyter=True, jupyter_user="ada")
    plan = make_plan(NO_GPU, request)
    contents = plan_contents("cpu", plan, "debian", "12", "bookworm", "x86_64", "6.1.0", role_data("debian", "12"))
    assert len(contents.wheels) == 2  # the torch venv and JupyterLab's: each downloads with the trusted host
    for wheels in contents.wheels:
        assert wheels.trusted_hosts == ("mirror.lan",)
        runs = _split_vendor(wheels)
        assert runs and all("--trusted-host=mirror.lan" in options for _, options, _ in runs)
    vendor = contents.wheels[0].__class__(venv="/v", python="3.11", platform="manylinux_2_35_x86_64",
                                          requirements=("torch",),
                                       vendor_indexes=(("http://10.0.0.5/whl/cpu", ("torch",)),),
                                       trusted_hosts=("10.0.0.5",))
    assert _split_vendor(vendor) == [(["torch"], ["--index-url", "http://10.0.0.5/whl/cpu",
                                                 "--trusted-host=10.0.0.5"], "http://10.0.0.5/whl/cpu")]


def test_status_suggests_pip_with_the_trusted_hosts():
    from dlsetup.status import _pip_fix

    variables = {"frameworks_pip_index_url": "http://mirror.lan/simple/",
                 "frameworks_pip_trusted_hosts": ["mirror.lan"]}
    assert _pip_fix(variables, "/opt/v", "torch==2.13.0").endswith(
        "--index-url http://mirror.lan/simple/ --trusted-host mirror.lan")


# -- the roles, for plain ansible-playbook users -----------------------------------------------------------

FRAMEWORKS_GATE = "Refuse a plain-http pip index or find-links URL on a host pip does not trust"
VENDOR = "Install the frameworks a vendor index carries, from that index alone"
OTHER = "Install the other packages into the venv"
NOBODY = "http://10.0.0.5:9/"  # nothing listens there: a run that reached it would fail
ROLE_HOSTS = {
    "trusted": {"frameworks_packages": ["torch==2.13.0", "jax"],
                "frameworks_pip_vendor_indexes": [{"url": f"{NOBODY}whl/cpu", "projects": ["torch"]}],
                "frameworks_pip_index_url": f"{NOBODY}simple/",
                "frameworks_pip_find_links": ["http://[fd00::5]:8000/wheels/", "/opt/wheels"],
                "frameworks_pip_trusted_hosts": ["10.0.0.5:9", "[FD00::5]"]},
    "loopback-https-paths": {"frameworks_packages": ["jax"], "frameworks_pip_index_url": "http://127.0.0.1:9/simple/",
                             "frameworks_pip_find_links": ["https://mirror.lan/w/", "/opt/wheels",
                                                           "http://localhost:9/w/", "http://[::1]:9/w/"]},
    "untrusted-find-links": {"frameworks_packages": ["jax"], "frameworks_pip_find_links": [f"{NOBODY}wheels/"]},
    "other-port": {"frameworks_packages": ["jax"], "frameworks_pip_index_url": f"{NOBODY}simple/",
                   "frameworks_pip_trusted_hosts": ["10.0.0.5:8000"]},
    "untrusted-extra-index": {"frameworks_packages": ["jax"],
                              "frameworks_pip_extra_index_urls": ["http://mirror.lan/simple/"],
                              "frameworks_pip_trusted_hosts": ["10.0.0.5"]},
    "untrusted-vendor-index": {"frameworks_packages": ["torch"],
                               "frameworks_pip_vendor_indexes": [{"url": f"{NOBODY}whl/cpu", "projects": ["torch"]}]},
}
REFUSED = {"untrusted-find-links": f"{NOBODY}wheels/", "other-port": f"{NOBODY}simple/",
           "untrusted-extra-index": "http://mirror.lan/simple/", "untrusted-vendor-index": f"{NOBODY}whl/cpu"}

on_debian = pytest.mark.skipif(not Path("/etc/debian_version").exists(),
                               reason="the role runs on this machine: it supports Debian and Ubuntu")


@pytest.fixture(scope="module")
def frameworks(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, HostResult]:
    """roles/frameworks in check mode on this machine for the stand-in hosts: the gate's verdicts and the pip
    tasks' arguments."""
    return rolecheck.frameworks(tmp_path_factory.mktemp("trust"), ROLE_HOSTS, [VENDOR, OTHER])


@on_debian
@pytest.mark.parametrize("host", sorted(REFUSED))
def test_the_frameworks_role_refuses_a_url_pip_would_skip(frameworks, host):
    result = frameworks[host]
    assert result.failed == 1 and result.failure is not None and result.failure.task == FRAMEWORKS_GATE
    assert f"{REFUSED[host]} is plain http to a host pip does not trust" in result.failure.message
    assert "frameworks_pip_trusted_hosts" in result.failure.message and not result.captured


@on_debian
def test_the_frameworks_role_passes_the_trusted_hosts_to_every_pip_run(frameworks):
    result = frameworks["trusted"]
    assert result.failed == 0, result.failure
    (vendor,) = result.captured[VENDOR]["results"]
    trusted = "--trusted-host=10.0.0.5:9 '--trusted-host=[FD00::5]'"
    assert vendor["invocation"]["module_args"]["extra_args"] == f"--index-url {NOBODY}whl/cpu {trusted}"
    assert result.captured[OTHER]["invocation"]["module_args"]["extra_args"] == (
        f"--index-url {NOBODY}simple/ '--find-links=http://[fd00::5]:8000/wheels/' --find-links=/opt/wheels {trusted}")


@on_debian
def test_the_frameworks_role_lets_loopback_https_and_paths_through(frameworks):
    result = frameworks["loopback-https-paths"]
    assert result.failed == 0, result.failure
    assert "--trusted-host" not in result.captured[OTHER]["invocation"]["module_args"]["extra_args"]


JUPYTER_GATE = "Refuse a plain-http pip index or find-links URL on a host pip does not trust"


@on_debian
@pytest.mark.parametrize("trusted", [[], ["mirror.lan"]])
def test_the_jupyter_role_refuses_a_url_pip_would_skip(tmp_path, trusted):
    """In check mode on this machine: with the host untrusted the role stops at its gate, before anything is
    installed; trusted, it passes the gate (and stops at the user lookup here: the user does not exist)."""
    done = rolecheck.jupyter(tmp_path, {"jupyter_pip_find_links": ["/opt/wheels", "http://mirror.lan/wheels/"],
                                        "jupyter_pip_trusted_hosts": trusted, "jupyter_user": "no-such-user-trust"})
    assert done.returncode != 0
    failed = rolecheck.last_task(done.stdout)
    message = "http://mirror.lan/wheels/ is plain http to a host pip does not trust"
    if not trusted:
        assert JUPYTER_GATE in failed and message in done.stdout and "jupyter_pip_trusted_hosts" in done.stdout
    else:
        assert "Look the user up" in failed and message not in done.stdout, done.stdout[-3000:]


@on_debian
def test_the_jupyter_role_passes_the_trusted_hosts_to_pip(tmp_path):
    """The role's pip options, rendered from its own defaults and vars as the role renders them."""
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "args", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Load the role's defaults and vars", "ansible.builtin.include_vars": {"file": "{{ item }}"},
         "loop": [str(REPO / "roles/jupyter/defaults/main.yml"), str(REPO / "roles/jupyter/vars/main.yml")]},
        {"name": "Show", "ansible.builtin.debug": {
            "msg": "{{ {'args': __jupyter_pip_args, 'untrusted': __jupyter_pip_untrusted} }}"}}]}]))
    extra = {"jupyter_pip_index_url": "http://mirror.lan/simple/", "jupyter_pip_trusted_hosts": ["mirror.lan"],
             "ansible_python_interpreter": sys.executable}
    ansible = Path(sys.executable).with_name("ansible-playbook")
    done = subprocess.run([str(ansible), "-c", "local", "-i", "localhost,", str(play), "-e", json.dumps(extra)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1",
                               "ANSIBLE_STDOUT_CALLBACK": "json"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shown = json.loads(done.stdout)["plays"][0]["tasks"][-1]["hosts"]["localhost"]["msg"]
    assert shown == {"args": ["--index-url", "http://mirror.lan/simple/", "--trusted-host=mirror.lan"],
                     "untrusted": ""}
