"""``dlsetup plan`` end to end on the real H100 bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import yaml
from click.testing import CliRunner

from dlsetup.cli import cli
from tests.conftest import H100_BUNDLE

BUNDLE = ["plan", "--from-bundle", str(H100_BUNDLE)]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, timeout=60)


def test_h100_bundle_keeps_driver_and_picks_cu130(fixtures_dir, tmp_path):
    out = tmp_path / "vars.yml"
    result = CliRunner().invoke(cli, [*BUNDLE, "--json", "--emit-vars", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["roles"] == ["common", "frameworks"]
    driver = [d for d in plan["decisions"] if d["topic"] == "driver"]
    assert driver == [{"topic": "driver", "choice": "keep 580.159.04", "rule": "rule:keep-loaded-driver",
                       "reason": "the loaded open driver supports Hopper and CUDA up to 13.0: not reinstalled"}]
    assert plan["variables"]["frameworks_pip_vendor_indexes"] == [
        {"url": "https://download.pytorch.org/whl/cu130", "projects": ["torch", "torchvision", "torchaudio"]}]
    assert plan["variables"]["frameworks_pip_extra_index_urls"] == []
    assert "rocm" not in result.output.lower()
    assert yaml.safe_load(out.read_text()) == plan["variables"]


def test_human_output_shows_reasons_and_roles(fixtures_dir):
    result = CliRunner().invoke(cli, [*BUNDLE, "--framework", "tensorflow"])
    assert result.exit_code == 0, result.output
    assert "tensorflow[and-cuda]==2.21.0" in result.output
    assert "rule:keep-loaded-driver" in result.output and "frameworks" in result.output


def test_config_file_is_read(fixtures_dir, tmp_path):
    config = tmp_path / "plan.yml"
    config.write_text("framework: jax\nvenv: /srv/dl\n")
    result = CliRunner().invoke(cli, [*BUNDLE, "--config", str(config), "--json"])
    variables = json.loads(result.output)["variables"]
    assert (variables["frameworks_packages"], variables["frameworks_venv_path"]) == (["jax[cuda13]"], "/srv/dl")


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
