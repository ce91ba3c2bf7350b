"""``dlsetup plan`` end to end on the real H100 bundle: from the tables (--offline), and asking a package
index served on 127.0.0.1 from recorded answers (tests/index_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from dlsetup.cli import cli
from dlsetup.plan import compat
from tests.conftest import H100_BUNDLE
from tests.index_server import IndexServer

BUNDLE = ["plan", "--from-bundle", str(H100_BUNDLE), "--offline"]
LIVE = ["plan", "--from-bundle", str(H100_BUNDLE)]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.fixture(scope="module")
def index():
    server = IndexServer()
    yield server
    server.close()


def index_env(tmp_path, url: str, timeout: str = "2") -> dict:
    """pip configured with only ``url`` (no pip.conf, no extra index), the cache in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "DLSETUP_"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": url, "XDG_CACHE_HOME": str(tmp_path),
            "DLSETUP_INDEX_TIMEOUT": timeout}


def test_h100_bundle_keeps_driver_and_picks_cu130(fixtures_dir, tmp_path):
    out = tmp_path / "vars.yml"
    result = CliRunner().invoke(cli, [*BUNDLE, "--json", "--emit-vars", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["roles"] == ["common", "frameworks"]
    driver = [d for d in plan["decisions"] if d["topic"] == "driver"]
    assert driver == [{"topic": "driver", "choice": "keep 580.159.04", "rule": "rule:keep-loaded-driver",
                       "reason": "the loaded open driver supports Hopper and CUDA up to 13.0: not reinstalled "
                                 "(long-term branch 580)", "source": "host", "as_of": None}]
    assert plan["variables"]["frameworks_pip_vendor_indexes"] == [
        {"url": "https://download.pytorch.org/whl/cu130", "projects": ["torch", "torchvision", "torchaudio"]}]
    assert plan["variables"]["frameworks_pip_extra_index_urls"] == []
    assert "rocm" not in result.output.lower()
    assert yaml.safe_load(out.read_text()) == plan["variables"]


def test_human_output_shows_reasons_and_roles(fixtures_dir):
    result = CliRunner().invoke(cli, [*BUNDLE, "--framework", "tensorflow"])
    assert result.exit_code == 0, result.output
    assert "tensorflow[and-cuda]==2.21.*" in result.output
    assert "rule:keep-loaded-driver" in result.output and "frameworks" in result.output


def test_config_file_is_read(fixtures_dir, tmp_path):
    config = tmp_path / "plan.yml"
    config.write_text("framework: jax\nvenv: /srv/dl\n")
    result = CliRunner().invoke(cli, [*BUNDLE, "--config", str(config), "--json"])
    variables = json.loads(result.output)["variables"]
    assert (variables["frameworks_packages"], variables["frameworks_venv_path"]) == (["jax[cuda13]==0.12.*"],
                                                                                  "/srv/dl")


def test_conflict_exits_2_with_one_line_and_writes_nothing(fixtures_dir, tmp_path):
    out = tmp_path / "vars.yml"
    result = run(*BUNDLE, "--driver-branch", "535", "--cuda", "13.0", "--emit-vars", str(out))
    assert result.returncode == 2
    assert result.stderr == ("dlsetup: error: --driver-branch 535 supports CUDA up to 12.2, but --cuda 13.0 needs "
                             "driver >= 580.65.06: use --driver-branch 580 or newer, or --cuda 12.2 or older\n")
    assert result.stdout == "" and not out.exists()


def test_dead_framework_and_bad_bundle_exit_2(tmp_path):
    mxnet = run("plan", "--from-bundle", str(tmp_path), "--framework", "mxnet")
    assert mxnet.returncode == 2 and "Apache MXNet" in mxnet.stderr and "Traceback" not in mxnet.stderr
    missing = run("plan", "--from-bundle", str(tmp_path / "absent"))
    assert missing.returncode == 2
    assert missing.stderr == f"dlsetup: error: bundle directory not found: {tmp_path / 'absent'}\n"


def test_plan_on_a_bundle_is_fast(fixtures_dir):
    CliRunner().invoke(cli, [*BUNDLE, "--json"])  # imports and tables loaded once
    start = time.perf_counter()
    result = CliRunner().invoke(cli, [*BUNDLE, "--json"])
    assert result.exit_code == 0
    assert time.perf_counter() - start < 0.5


# -- the five refusals stay one line, exit 2, also for versions nobody publishes -----------------------

REFUSALS = [
    (["--driver-branch", "535", "--cuda", "13.0"], "--driver-branch 535 supports CUDA up to 12.2"),
    (["--rocm", "7.2"], "--rocm 7.2 needs an AMD GPU and this host has only NVIDIA GPUs: drop --rocm"),
    (["--framework", "mxnet"], "Apache MXNet is not maintained"),
    (["--cuda", "99.9"], "CUDA 99.9 is not in the compatibility tables"),
    (["--torch", "7.0"], "torch 7.0 is not in the compatibility tables"),
]


@pytest.mark.parametrize("args, message", REFUSALS, ids=[" ".join(a) for a, _ in REFUSALS])
def test_refusals_exit_2_with_one_line(fixtures_dir, args, message):
    result = run(*BUNDLE, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"dlsetup: error: {message}") and result.stderr.count("\n") == 1


def test_refusals_hold_with_the_index_asked(fixtures_dir, index, tmp_path):
    env = index_env(tmp_path, index.url("good"))
    for args in (["--torch", "7.0"], ["--cuda", "99.9"], ["--torch", "2.16"]):
        result = run(*LIVE, *args, env=env)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "published on " + index.url("good") in result.stderr


# -- freshness ---------------------------------------------------------------------------------------


def plan_json(*args: str, env: dict) -> dict:
    result = run(*LIVE, "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def torch_decision(plan: dict) -> dict:
    return next(d for d in plan["decisions"] if d["topic"] == "torch")


def test_plan_asks_the_index_pip_is_configured_with(fixtures_dir, index, tmp_path):
    plan = plan_json(env=index_env(tmp_path, index.url("good")))
    torch = torch_decision(plan)
    assert (torch["choice"], torch["source"], torch["as_of"]) == ("2.15.0", "index:torch", time.strftime("%Y-%m-%d"))
    assert index.url("good") + "/torch/" in torch["reason"]
    assert plan["variables"]["frameworks_packages"] == ["torch==2.15.*"]
    assert plan["sources"]["index:torch"]["url"] == index.url("good") + "/torch/"
    assert list((tmp_path / "dlsetup" / "index").glob("*.json"))  # cached under XDG_CACHE_HOME


def test_pip_index_url_option_wins_over_pip_config(fixtures_dir, index, tmp_path):
    env = index_env(tmp_path, index.url("garbage"))
    plan = plan_json("--pip-index-url", index.url("good"), env=env)
    assert torch_decision(plan)["source"] == "index:torch"
    assert plan["sources"]["index:torch"]["url"] == index.url("good") + "/torch/"


def test_offline_plans_from_the_tables_with_their_date(fixtures_dir, index, tmp_path):
    plan = plan_json("--offline", env=index_env(tmp_path, index.url("unknown")))
    torch = torch_decision(plan)
    assert (torch["source"], torch["as_of"]) == ("table:pytorch", compat.load().as_of["pytorch"])
    assert plan["sources"]["table:pytorch"]["as_of"] == compat.load().as_of["pytorch"]
    assert not (tmp_path / "dlsetup").exists()  # nothing asked, nothing cached


@pytest.mark.parametrize("mode, timeout", [("garbage", "2"), ("hang", "0.3")])
def test_a_broken_index_falls_back_to_the_tables(fixtures_dir, index, tmp_path, mode, timeout):
    plan = plan_json(env=index_env(tmp_path, index.url(mode), timeout))
    assert torch_decision(plan)["source"] == "table:pytorch"
    expected = "not JSON" if mode == "garbage" else "timed out"
    assert any(n.startswith(f"index: torch on {index.url(mode)}/torch/: {expected}") for n in plan["notes"])


def test_a_version_the_tables_do_not_know_is_planned_unverified(fixtures_dir, index, tmp_path):
    result = run(*LIVE, env={**index_env(tmp_path, index.url("unknown")), "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "torch: 2.16.0" in result.stdout and "rule:newer-than-data" in result.stdout
    assert "warning: torch 2.16.0 is newer than dlsetup's data" in result.stdout
    assert f"index:torch, as of {time.strftime('%Y-%m-%d')}" in result.stdout


def test_a_newer_loaded_driver_keeps_its_place(fixtures_dir, tmp_path):
    """A copy of the H100 bundle whose loaded driver is newer than every branch in the tables."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle)
    newest = max(b.branch for b in compat.load().driver_branches)
    version = f"{newest + 10}.10.01"
    for path in bundle.rglob("*"):
        if path.is_file():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            if "580.159.04" in text:
                path.write_text(text.replace("580.159.04", version))
    result = run("plan", "--from-bundle", str(bundle), "--offline", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    driver = next(d for d in plan["decisions"] if d["topic"] == "driver")
    assert (driver["choice"], driver["rule"]) == (f"keep {version}", "rule:keep-newer-driver")
    assert "nvidia_driver" not in plan["roles"] and plan["reboot_required"] is False


def test_pip_offline_plans_what_the_find_links_hold(fixtures_dir, tmp_path):
    """--pip-offline installs only from the wheels given: the plan picks the torch they hold."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "DLSETUP_OFFLINE"}
    result = run(*LIVE, "--json", "--pip-offline", "--pip-find-links", str(wheels), env=env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    torch = torch_decision(plan)
    assert (torch["choice"], torch["source"]) == ("2.13.0", "index:torch")
    assert plan["variables"]["frameworks_packages"] == ["torch==2.13.*"]
