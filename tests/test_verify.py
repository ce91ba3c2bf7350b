"""dlsetup verify: the real workload in a CPU torch venv, host checks on the real H100 capture."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, H100_BUNDLE, PUBLIC, REPO, TORCH_VENV
from dlsetup import gpudb
from dlsetup.errors import EXIT_FAILED, EXIT_USAGE
from dlsetup.parsers.amd import parse_rocminfo
from dlsetup.parsers.nvidia import parse_smi_list, split_capture
from dlsetup.probe import probe
from dlsetup.verify import PAYLOAD, overall_status
from dlsetup.verify.checks import compare_with_peaks, driver_checks, judge_tool

def dlsetup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, cwd=REPO,
                          check=False)


@pytest.fixture(scope="session")
def verify_run(torch_venv: Path) -> tuple[int, dict]:
    done = dlsetup("verify", "--venv", str(torch_venv), "--quick", "--json")
    return done.returncode, json.loads(done.stdout)


def by_id(document: dict) -> dict:
    return {c["id"]: c for c in document["checks"]}


def test_cpu_venv_trains_three_models_with_falling_loss(verify_run):
    returncode, document = verify_run
    checks = by_id(document)
    for model in ("lenet5", "rnn", "lstm"):
        train = checks[f"train.{model}"]
        assert train["status"] == "pass" and train["device"] == "cpu"
        assert train["figures"]["steps"] == 30
        assert train["figures"]["loss_last"] < train["figures"]["loss_first"]
    # cross-entropy over ten classes starts near ln(10) = 2.30
    assert 2.0 < checks["train.lenet5"]["figures"]["loss_first"] < 2.6
    assert document["framework"]["version"] == "2.13.0+cpu" and document["framework"]["cuda"] is None
    # no GPU here: a warning, not a failure, so verify exits 0
    assert checks["framework.devices"]["status"] == "warn"
    assert returncode == 0 and document["status"] == "warn"


def test_cpu_venv_reports_throughput_figures(verify_run):
    _, document = verify_run
    checks = by_id(document)
    assert {"matmul.bf16", "matmul.fp16", "matmul.fp32"} <= set(checks)
    assert checks["matmul.fp32"]["figures"]["tflops"] > 0 and checks["matmul.fp32"]["figures"]["n"] >= 256
    assert "peak" not in checks["matmul.fp32"]["figures"]  # no datasheet peak for a CPU
    assert checks["memory.bandwidth"]["figures"]["gbps"] > 0
    disk = checks["disk.throughput"]
    assert disk["device"] == str(TORCH_VENV) and disk["figures"]["bytes"] == 128 << 20
    assert disk["figures"]["write_mbps"] > 0 and disk["figures"]["read_mbps"] > 0


def test_venv_without_torch_fails_with_a_clear_message(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    done = dlsetup("verify", "--venv", str(tmp_path / "bare"), "--quick", "--json")
    assert done.returncode == EXIT_FAILED
    item = by_id(json.loads(done.stdout))["framework.import"]
    assert item["status"] == "fail"
    assert "torch cannot be imported" in item["message"] and "No module named 'torch'" in item["message"]
    assert "Traceback" not in done.stderr


def test_not_a_venv_is_a_usage_error(tmp_path):
    done = dlsetup("verify", "--venv", str(tmp_path), "--quick")
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip() == f"dlsetup: error: no Python interpreter at {tmp_path}/bin/python: " \
                                  f"is {tmp_path} a virtual environment?"


def test_allreduce_sums_across_two_ranks(torch_venv):
    """The all-reduce code NCCL runs on GPUs, run with gloo over two CPU processes."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import payload; "
            "print(json.dumps(payload.allreduce_check('gloo', 2, 'cpu', 1 << 20)))")
    done = subprocess.run([str(torch_venv / "bin" / "python"), "-c", code, str(PAYLOAD.parent)],
                          capture_output=True, text=True, timeout=120, check=True)
    item = json.loads(done.stdout.strip().splitlines()[-1])
    assert item["status"] == "pass", item["message"]
    assert item["figures"]["ranks"] == 2 and item["figures"]["bytes"] == 1 << 20
    assert item["figures"]["busbw_gbps"] > 0


def test_benchmark_matches_direct_torch_measurement(torch_venv):
    done = subprocess.run([str(torch_venv / "bin" / "python"), str(REPO / "benchmarks" / "verify.py"),
                           "--dtype", "fp32"], capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and set(result["dtypes"]) == {"fp32"}
    # How close the two measurements come is the benchmark's figure, read on an idle machine, never a
    # test's: a shared test box slows either side at random. The test holds the output's contract.
    assert result["dtypes"]["fp32"]["ratio"] > 0, result
    assert done.returncode == (0 if result["agree"] else 1)


# -- host checks on real captures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def h100():
    return probe(bundle=H100_BUNDLE)


def test_driver_check_on_the_h100_capture(h100):
    (item,) = driver_checks(h100)
    assert item["status"] == "pass"
    assert item["message"] == "nvidia open module 580.159.04 loaded, library 580.159.04"


def test_driver_check_fails_when_module_is_not_loaded_or_stale(h100):
    unloaded = dataclasses.replace(h100, nvidia=dataclasses.replace(h100.nvidia, kernel_module_loaded=False))
    assert driver_checks(unloaded)[0]["status"] == "fail"
    stale = dataclasses.replace(h100, nvidia=dataclasses.replace(h100.nvidia, reboot_required=True))
    assert "reboot" in driver_checks(stale)[0]["message"]


def test_vendor_tools_judged_on_real_outputs():
    h100_list = (H100_BUNDLE / "cmd" / "nvidia-smi-L.out").read_text()
    assert judge_tool("t", "nvidia-smi -L", 0, h100_list, parse_smi_list, 1)["status"] == "pass"
    mig = split_capture((PUBLIC / "nvidia" / "capture_h100-80gb-hbm3_mig4_drv590.48.01.txt").read_text())
    assert judge_tool("t", "nvidia-smi -L", 0, mig["capabilities :: list (-L)"], parse_smi_list, 1)["status"] == "pass"
    rocminfo = (PUBLIC / "amd" / "rocminfo_4x-mi300x_2x-epyc9474f.txt").read_text()
    assert judge_tool("t", "rocminfo", 0, rocminfo, parse_rocminfo, 4)["message"] == "rocminfo lists 4 of 4 GPUs"
    missing = judge_tool("t", "rocminfo", 0, rocminfo, parse_rocminfo, 8)
    assert missing["status"] == "fail" and missing["figures"] == {"gpus": 4}
    broken = judge_tool("t", "nvidia-smi -L", 18, "Failed to initialize NVML: Driver/library version mismatch\n"
                        "NVML library version: 580.95\n", parse_smi_list, 1)
    assert broken == {"id": "t", "status": "fail", "device": None, "figures": {},
                      "message": "nvidia-smi -L failed: Failed to initialize NVML: Driver/library version mismatch"}


def test_h100_figures_against_datasheet_peak():
    """Figures torch measured on the real H100 host, compared with the sourced peak table."""
    measured = json.loads((H100_BUNDLE / "expected.json").read_text())["torch_at_capture"]
    devices = [{"device": "cuda:0", "name": "NVIDIA H100 80GB HBM3"}, {"device": "cpu", "name": "Xeon"}]
    checks = [
        {"id": "matmul.bf16", "status": "pass", "message": "bf16", "device": "cuda:0",
         "figures": {"tflops": measured["bf16_matmul_tflops"], "n": 8192}},
        {"id": "memory.bandwidth", "status": "pass", "message": "copy", "device": "cuda:0",
         "figures": {"gbps": measured["d2d_copy_GBps_rw"]}},
        {"id": "matmul.fp32", "status": "pass", "message": "cpu", "device": "cpu", "figures": {"tflops": 0.09}},
    ]
    matmul, bandwidth, cpu = compare_with_peaks(checks, devices, gpudb.by_name)
    assert matmul["figures"]["peak"] == 989.5
    assert matmul["figures"]["fraction_of_peak"] == pytest.approx(0.797, abs=1e-3)
    assert matmul["status"] == "pass" and "80% of the NVIDIA H100 80GB HBM3 peak 989.5 TFLOP/s" in matmul["message"]
    assert bandwidth["figures"]["peak"] == 3350.0
    assert bandwidth["figures"]["fraction_of_peak"] == pytest.approx(0.610, abs=1e-3)
    assert cpu is checks[2]
    slow = compare_with_peaks([{**checks[0], "figures": {"tflops": 400.0}}], devices, gpudb.by_name)[0]
    assert slow["status"] == "warn"


def test_overall_status_is_the_worst():
    assert overall_status([{"status": "pass"}, {"status": "warn"}]) == "warn"  # type: ignore[list-item]
    assert overall_status([{"status": "fail"}, {"status": "warn"}]) == "fail"  # type: ignore[list-item]
    assert overall_status([]) == "pass"
    assert FIXTURES.is_dir()


def test_verify_finds_each_framework_venv_with_torch(tmp_path):
    """Without --venv or an active venv, verify runs in every venv of the root that has torch (the workload
    trains with torch), then the shared venv; a TensorFlow-only venv and a folder without Python are left out."""
    from dlsetup.commands.verify import installed_venvs

    def make(path, torch):
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("")
        site = path / "lib" / "python3.11" / "site-packages"
        site.mkdir(parents=True)
        if torch:
            (site / "torch").mkdir()
            (site / "torch" / "__init__.py").write_text("")

    root, legacy = tmp_path / "venvs", tmp_path / "venv"
    make(root / "pytorch", True)
    make(root / "keras", True)
    make(root / "tensorflow", False)
    (root / "empty").mkdir()
    assert installed_venvs(root, legacy) == [root / "keras", root / "pytorch"]
    make(legacy, True)
    assert installed_venvs(root, legacy)[-1] == legacy
    assert installed_venvs(tmp_path / "none", tmp_path / "none2") == []
