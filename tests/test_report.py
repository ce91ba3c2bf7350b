"""dlsetup report: real probe/check/plan JSON of the H100 capture, rendered and opened in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import H100_BUNDLE, REPO
from dlsetup import gpudb
from dlsetup.errors import UsageError
from dlsetup.report import kind_of, read_inputs, render
from dlsetup.verify.checks import compare_with_peaks

CHROMIUM = shutil.which("chromium")


def dlsetup(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, cwd=REPO,
                          check=True).stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """probe/check/plan of the H100 capture as the commands print them, and a verify document carrying
    the figures torch measured on that host."""
    out = tmp_path_factory.mktemp("inputs")
    paths = {}
    for kind in ("probe", "check", "plan"):
        paths[kind] = out / f"{kind}.json"
        paths[kind].write_text(dlsetup(kind, "--from-bundle", str(H100_BUNDLE), "--json"))
    measured = json.loads((H100_BUNDLE / "expected.json").read_text())["torch_at_capture"]
    devices = [{"device": "cuda:0", "name": "NVIDIA H100 80GB HBM3"}]
    checks = compare_with_peaks([
        {"id": "matmul.bf16", "status": "pass", "message": "bf16 matmul 8192^3", "device": "cuda:0",
         "figures": {"tflops": measured["bf16_matmul_tflops"], "n": 8192}},
        {"id": "memory.bandwidth", "status": "pass", "message": "copy <1 GiB>", "device": "cuda:0",
         "figures": {"gbps": measured["d2d_copy_GBps_rw"]}},
    ], devices, gpudb.by_name)
    paths["verify"] = out / "verify.json"
    paths["verify"].write_text(json.dumps({"kind": "verify", "host": "vm", "devices": devices, "checks": checks,
                                           "framework": {"name": "torch", "version": measured["version"],
                                                         "cuda": measured["cuda"], "hip": None},
                                           "python": "/opt/venv/bin/python", "quick": False}))
    # a second host: the same capture under another name, as a fleet would list it
    fleet = json.loads(paths["check"].read_text())
    paths["other"] = out / "other-check.json"
    paths["other"].write_text(json.dumps([{**fleet, "host": "gpu-b"}]))
    return paths


def test_each_input_is_recognised(inputs):
    kinds = {k: kind_of(json.loads(p.read_text())) for k, p in inputs.items() if k != "other"}
    assert kinds == {"probe": "probe", "check": "check", "plan": "plan", "verify": "verify"}


def test_inputs_grouped_per_host(inputs):
    hosts = read_inputs(inputs.values())
    assert [h.host for h in hosts] == ["gpu-b", "vm"]
    assert set(hosts[1].documents) == {"probe", "check", "plan", "verify"}
    assert hosts[1].readiness == ("ready", "pass")
    assert hosts[0].readiness == ("not verified", "info")


def test_bad_inputs_are_usage_errors(inputs, tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "other.json").write_text('{"a": 1}')
    for path, words in ((tmp_path / "bad.json", "bad.json: not JSON"), (tmp_path / "other.json", "not the JSON of"),
                        (tmp_path / "missing.json", "cannot read")):
        with pytest.raises(UsageError, match=words):
            read_inputs([path])


def _probe_of(inputs, tmp_path, name: str, machine_id: str, probed_at: str, memory: int) -> Path:
    doc = json.loads(inputs["probe"].read_text())
    doc.update(machine={"machine_id": machine_id, "product_uuid": None}, probed_at=probed_at)
    doc["memory"]["total_bytes"] = memory
    path = tmp_path / f"{name}-{machine_id[:4]}-{probed_at[:13]}.json"
    path.write_text(json.dumps(doc))
    return path


def test_two_machines_with_one_host_name_are_two_hosts(inputs, tmp_path):
    a = _probe_of(inputs, tmp_path, "vm", "a" * 32, "2026-11-28T06:00:00Z", 1)
    b = _probe_of(inputs, tmp_path, "vm", "b" * 32, "2026-11-28T06:00:00Z", 2)
    check_b = tmp_path / "check-b.json"
    check_b.write_text(json.dumps({**json.loads(inputs["check"].read_text()), "machine": "b" * 32}))
    hosts = read_inputs([a, b, check_b])
    assert [(h.host, h.machine, h.label) for h in hosts] == [
        ("vm", "a" * 32, "vm (aaaaaaaa)"), ("vm", "b" * 32, "vm (bbbbbbbb)")]
    assert set(hosts[0].documents) == {"probe"} and set(hosts[1].documents) == {"probe", "check"}
    html = render(hosts)
    assert "vm (aaaaaaaa)" in html and "vm (bbbbbbbb)" in html


def test_the_same_machine_twice_keeps_its_newest_result(inputs, tmp_path):
    old = _probe_of(inputs, tmp_path, "vm", "c" * 32, "2026-11-27T06:00:00Z", 1)
    new = _probe_of(inputs, tmp_path, "vm", "c" * 32, "2026-11-28T06:00:00Z", 2)
    for order in ([old, new], [new, old]):
        hosts = read_inputs(order)
        assert len(hosts) == 1 and hosts[0].label == "vm"
        assert hosts[0].documents["probe"]["memory"]["total_bytes"] == 2
    # a host's documents without a machine id (provision lines, older files) join its one machine
    hosts = read_inputs([new, inputs["check"], inputs["check"]])
    assert len(hosts) == 1 and set(hosts[0].documents) == {"probe", "check"}


def test_html_is_escaped_and_self_contained(inputs, tmp_path):
    hostile = tmp_path / "hostile.json"
    doc = json.loads(inputs["check"].read_text())
    doc["findings"][0]["message"] = "<script>alert(1)</script>"
    hostile.write_text(json.dumps(doc))
    html = render(read_inputs([hostile]))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert "http://" not in html and "https://" not in html and "<link" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package 'chromium') is not installed")
def test_report_in_headless_chromium(inputs, tmp_path):
    page = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "dlsetup", "report", "-o", str(page), *map(str, inputs.values())],
                   cwd=REPO, check=True, capture_output=True)
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120, check=True)
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--window-size=1280,1800",
                               f"--screenshot={artifacts / 'report.png'}", page.as_uri()],
                              capture_output=True, text=True, timeout=120, check=True)
    for log in (dom.stderr, shot.stderr):
        assert "Uncaught" not in log and "CONSOLE" not in log
    text = dom.stdout
    for visible in ("vm", "gpu-b", "Ubuntu 24.04.3 LTS", "NVIDIA H100 80GB HBM3", "580.159.04", "126 GiB",
                    "matmul.bf16", "80% of peak", "61% of peak", "memory.vs_vram", "torch build", "cu130",
                    "copy &lt;1 GiB&gt;"):
        assert visible in text, visible
    assert text.count('class="badge pass">ready</span>') == 2  # fleet row and host heading
    assert (artifacts / "report.png").stat().st_size > 10_000


def test_host_name_is_escaped_everywhere(inputs, tmp_path):
    """The host name comes from the probed machine (or an inventory): never markup in the page."""
    hostile = tmp_path / "probe.json"
    doc = json.loads(inputs["probe"].read_text())
    doc["hostname"] = "<script>alert(1)</script>"
    hostile.write_text(json.dumps(doc))
    html = render(read_inputs([hostile]))
    assert "<script" not in html
    # the fleet table and the host's section both name it, escaped
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2


def _verify(host: str, *statuses: str) -> dict:
    return {"kind": "verify", "host": host, "devices": [], "python": "/opt/venv/bin/python", "quick": True,
            "checks": [{"id": f"check.{i}", "status": s, "message": s, "device": None, "figures": {}}
                       for i, s in enumerate(statuses)]}


@pytest.mark.parametrize("statuses, expected", [
    (("pass", "pass"), ("ready", "pass")),
    (("pass", "warn"), ("ready, with warnings", "warn")),
    (("pass", "fail"), ("not ready", "fail")),
    (("fail", "warn", "pass"), ("not ready", "fail")),
    (("fail",), ("not ready", "fail")),
])
def test_readiness_follows_the_verify_checks(tmp_path, statuses, expected):
    path = tmp_path / "verify.json"
    path.write_text(json.dumps(_verify("gpu-a", *statuses)))
    (host,) = read_inputs([path])
    assert host.readiness == expected
    assert f">{expected[0]}<" in render([host])


def test_failed_check_findings_block_readiness(inputs, tmp_path):
    doc = json.loads(inputs["check"].read_text())
    doc["findings"] = [{**doc["findings"][0], "severity": "fail"}] if doc["findings"] else [
        {"id": "x", "severity": "fail", "message": "blocked"}]
    path = tmp_path / "check.json"
    path.write_text(json.dumps({**doc, "host": "gpu-c"}))
    (host,) = read_inputs([path])
    assert host.readiness == ("blocked", "fail")
