"""Requests from the command line and YAML config files."""

from __future__ import annotations

import pytest

from dlsetup.errors import UsageError
from dlsetup.plan import Request, load_request


def test_defaults():
    assert load_request(None) == Request()
    assert Request().frameworks == ("pytorch",) and Request().venv_path == "/opt/dlsetup/venv"


def test_verify_looks_for_the_venvs_where_the_planner_puts_them():
    from dlsetup.commands import verify
    from dlsetup.plan import request

    assert (verify.DEFAULT_VENV_ROOT, verify.DEFAULT_VENV) == (request.DEFAULT_VENV_ROOT, request.DEFAULT_VENV)


def test_cli_overrides_config(tmp_path):
    config = tmp_path / "plan.yml"
    config.write_text("framework: [tensorflow, jax]\ndriver-branch: 580\ncuda: '13.0'\ncontainer_toolkit: true\n"
                      "pip-find-links: /opt/wheels\nvenv: /srv/venv\n")
    request = load_request(config, cuda="12.9", frameworks=(), torch=None)
    assert request == Request(frameworks=("tensorflow", "jax"), driver_branch="580", cuda="12.9",
                              container_toolkit=True, pip_find_links=("/opt/wheels",), venv_path="/srv/venv",
                              shared_venv=True)  # a venv named by path is the one shared venv


@pytest.mark.parametrize("text,message", [
    ("cuda: [13]\n", "cuda: expected a string"),
    ("rocm: seven\n", "rocm 'seven' is not a version like '7.2'"),
    ("driver_branch: 58\n", "driver_branch '58' is not a version like '580'"),
    ("colour: blue\n", "unknown option 'colour'"),
    ("- a list\n", "must be a mapping"),
    ("cuda: [\n", "is not valid YAML"),
    ("container_toolkit: maybe\n", "container_toolkit: expected true or false"),
    ("container_runtimes: [lxc]\n", "container runtime 'lxc' is unknown"),
])
def test_bad_config_is_a_usage_error(tmp_path, text, message):
    config = tmp_path / "plan.yml"
    config.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        load_request(config)


def test_missing_config(tmp_path):
    with pytest.raises(UsageError, match="cannot read config"):
        load_request(tmp_path / "absent.yml")


def test_frameworks_are_normalised():
    assert load_request(None, frameworks=("PyTorch", "pytorch", " jax")).frameworks == ("pytorch", "jax")
