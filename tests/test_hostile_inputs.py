"""Hostile input: config files, report inputs, bundles and venv interpreters that are broken or malicious
give one clear line and exit 2 (verify: a failed check, exit 1), never a traceback, a hang or a blow-up."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import H100_BUNDLE, REPO
from dlsetup.documents import MAX_DEPTH
from dlsetup.errors import UsageError
from dlsetup.plan import load_request
from dlsetup.plan.request import MAX_CONFIG_BYTES, _ConfigLoader
from dlsetup.probe import probe
from dlsetup.probe.host import MAX_READ_BYTES
from dlsetup.probe.util import read_regular
from dlsetup.report import read_inputs, render
from dlsetup.verify import run_payload


def dlsetup(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def one_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlsetup: error: "), done.stderr
    return lines[0]


# -- config files --------------------------------------------------------------------------------------

#: 530 bytes that expand to 10**9 strings if anything walks them (the repr of an error message did).
ALIAS_BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)) + "cuda: *i\n"


@pytest.mark.parametrize("raw,words", [
    (b"cuda: '13.0'\n\xff\xfe\n", "is not UTF-8 text (byte 0xff"),
    (b"cuda: '13.0'\ncuda: '12.9'\n", "duplicate key 'cuda'"),
    (b"storage:\n  arrays: [{mountpoint: /data, mountpoint: /x}]\n", "duplicate key 'mountpoint'"),
    (b"framework: pytorch\nframeworks: jax\n", "'framework' and 'frameworks' are the same option"),
    (b"storage:\n  arrays: [{mountpoint: /data}]\n  colour: blue\n", "storage: unknown key 'colour'"),
    (b"storage:\n  arrays: [{mountpoint: /data, raid: 1}]\n", "unknown key 'raid'"),
    (b"storage: [{mountpoint: /data, level: [raid1]}]\n", "storage: RAID level ['raid1'] is unknown"),
    (b"storage: [{mountpoint: /data, filesystem: {a: 1}}]\n", "storage: filesystem {'a': 1} is not supported"),
    (b"storage: [{mountpoint: /data, disks: nvme0n1}]\n", "storage: disks must be a list"),
    (b"storage: [{mountpoint: /data, disks: [[nvme0n1]]}]\n", "storage: disks must be a list"),
    (b'storage: [{mountpoint: /data, disks: ["nvme0n1\\tx"]}]\n', "storage: disks must be a list"),
    (b"storage: {arrays: []}\n", "arrays must be a non-empty list"),
    (b"storage: [5]\n", "storage: array 1: expected a mapping"),
    (b"storage: {arrays: [{}], destroy_data: yes please}\n", "destroy_data must be true or false"),
    (b"venv: 5\n", "venv: expected an absolute path, got 5"),
    (b"venv: [/opt/venv]\n", "venv: expected an absolute path"),
    (b"pip_index_url: 5\n", "pip index URL: expected a URL"),
    (b"pip_find_links: [[/srv]]\n", "pip_find_links: expected a name or a list of names"),
    (b"cuda: !!python/object:os.system [echo]\n", "is not valid YAML"),
    (b"torch: 2020-01-01\n", "torch: expected a string"),
    (b"cuda: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (ALIAS_BOMB.encode(), "aliases (*name) are not allowed"),
    (b"base: &b {cuda: '13.0'}\n<<: *b\n", "aliases (*name) are not allowed"),
    (b"x" * (MAX_CONFIG_BYTES + 1), "is larger than"),
])
def test_bad_config_is_one_bounded_line(tmp_path, raw, words):
    config = tmp_path / "dlsetup.yml"
    config.write_bytes(raw)
    with pytest.raises(UsageError) as err:
        load_request(config)
    message = str(err.value)
    assert words in message
    assert "\n" not in message and len(message) < 300 + len(str(config))


def test_the_config_loader_cannot_expand_an_alias():
    assert len(ALIAS_BOMB) < 600
    with pytest.raises(yaml.YAMLError, match="aliases"):
        yaml.load("a: &x [1]\nb: *x\n", Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    assert yaml.load("a: &x [1]\n", Loader=_ConfigLoader) == {"a": [1]}  # noqa: S506


def test_alias_bomb_on_the_command_line_is_one_line(tmp_path, fixtures_dir):
    config = tmp_path / "bomb.yml"
    config.write_text(ALIAS_BOMB)
    line = one_line(dlsetup("plan", "--from-bundle", str(H100_BUNDLE), "--config", str(config), timeout=30))
    assert "aliases" in line and len(line) < 300


# -- report inputs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documents(fixtures_dir) -> dict:
    """probe, check and plan as the commands print them for the H100 capture, and a verify document."""
    docs = {kind: json.loads(dlsetup(kind, "--from-bundle", str(H100_BUNDLE), "--json").stdout)
            for kind in ("probe", "check", "plan")}
    docs["verify"] = {"kind": "verify", "host": "vm", "python": "/opt/v/bin/python", "quick": True,
                      "framework": {"name": "torch", "version": "2.13.0", "cuda": None, "hip": None},
                      "devices": [{"device": "cuda:0", "name": "NVIDIA H100 80GB HBM3"}],
                      "checks": [{"id": "matmul.bf16", "status": "pass", "message": "bf16", "device": "cuda:0",
                                  "figures": {"tflops": 700.0, "peak": 989.0, "fraction_of_peak": 0.71}}],
                      "status": "pass"}
    return docs


def _set(document: dict, path: tuple, value) -> dict:
    document = copy.deepcopy(document)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


@pytest.mark.parametrize("kind,path,value,words", [
    ("check", ("host",), ["a", "b"], "check document: host: expected a string or null, got ['a', 'b']"),
    ("check", ("host",), 7, "host: expected a string or null, got 7"),
    ("check", ("findings", 0, "severity"), None, "findings[0].severity: expected one of"),
    ("check", ("findings",), {"a": 1}, "findings: expected a list"),
    ("verify", ("checks", 0, "figures"), [1], "checks[0].figures: expected a mapping, got [1]"),
    ("verify", ("checks", 0, "figures", "fraction_of_peak"), "0.7", "fraction_of_peak: expected a number"),
    ("verify", ("checks", 0, "status"), "great", "checks[0].status: expected one of"),
    ("verify", ("devices",), "cuda:0", "devices: expected a list"),
    ("verify", ("framework",), 5, "framework: expected null or a mapping, got 5"),
    ("probe", ("memory",), "64 GiB", "probe document: memory: expected a mapping, got '64 GiB'"),
    ("probe", ("memory", "total_bytes"), "lots", "memory.total_bytes: expected an integer"),
    ("probe", ("gpus",), 1, "gpus: expected a list, got 1"),
    ("probe", ("hostname",), ["vm"], "hostname: expected a string or null"),
    ("plan", ("roles",), "nvidia_driver", "plan document: roles: expected a list"),
    ("plan", ("decisions", 0, "reason"), 5, "decisions[0].reason: expected a string, got 5"),
    ("plan", ("decisions",), [[1]], "decisions[0]: expected a mapping"),
    ("plan", ("reboot_required",), "no", "reboot_required: expected true or false"),
])
def test_report_inputs_of_the_wrong_shape_name_file_and_field(documents, tmp_path, kind, path, value, words):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_set(documents[kind], path, value)))
    with pytest.raises(UsageError) as err:
        read_inputs([bad])
    assert str(err.value).startswith(f"{bad}: ") and words in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200 + len(str(bad))


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield prefix + (key,)
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list) and value:
        yield prefix + (0,)
        yield from _paths(value[0], prefix + (0,))


def test_every_field_of_every_kind_with_any_wrong_value_is_an_error_or_renders(documents, tmp_path):
    """Each field of each document replaced by a value of each JSON type: read_inputs refuses it with a
    UsageError, or what it accepts renders. Nothing else may happen (a TypeError mid-template did)."""
    bad = tmp_path / "in.json"
    refused = rendered = 0
    for kind, document in documents.items():
        # the profile's fields below its sections are checked by its full schema: two levels suffice here
        for path in (p for p in _paths(document) if kind != "probe" or len(p) <= 2):
            for value in ([1], {"x": [1]}, "text", -1, 1.5, None, True):
                bad.write_text(json.dumps(_set(document, path, value)))
                try:
                    hosts = read_inputs([bad])
                except UsageError:
                    refused += 1
                    continue
                render(hosts)
                rendered += 1
    assert refused > 100 and rendered > 100


@pytest.mark.parametrize("text,words", [
    ("[" * 100000 + "]" * 100000, f"nested deeper than {MAX_DEPTH} levels"),
    ('{"kind": "verify", "checks": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", "nested deeper"),
    ("1" * 5000, "not JSON"),
    ("{nope", "not JSON"),
    ("", "not JSON"),
    ('{"a": {"b": 1}}', "host a: not the JSON of"),
    ("[1]", "not the JSON of"),
])
def test_unparsable_report_inputs(tmp_path, text, words):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(UsageError, match=words):
        read_inputs([bad])


def test_report_input_not_utf8_or_too_large(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"host": "\xff"}')
    with pytest.raises(UsageError, match="not UTF-8"):
        read_inputs([bad])
    monkeypatch.setattr("dlsetup.report.MAX_BYTES", 10)
    bad.write_text('{"host": "a long enough document"}')
    with pytest.raises(UsageError, match="larger than"):
        read_inputs([bad])


def test_report_reads_what_probe_i_check_i_and_provision_json_print(documents, tmp_path):
    failure = {"host": "gpu-b", "status": "unreachable", "message": "ssh: connect to host gpu-b: No route to host"}
    probe_i = tmp_path / "probe-i.json"
    probe_i.write_text(json.dumps({"gpu-a": documents["probe"], "gpu-b": failure}, indent=2))
    check_i = tmp_path / "check-i.json"
    check_i.write_text(json.dumps({"gpu-a": documents["check"], "gpu-b": failure}, indent=2))
    provision = tmp_path / "provision.json"
    provision.write_text("".join(json.dumps(
        {"host": host, "status": status, "ok": 9, "changed": 2, "failed": int(status == "failed"), "unreachable": 0,
         "skipped": 1, "rescued": 0, "ignored": 0, "reboot_required": False,
         "failure": {"task": "nvidia_driver : install", "message": "E: broken <pkg>"} if status == "failed" else None,
         "check": False, "roles": ["common"]}) + "\n" for host, status in (("gpu-a", "ok"), ("gpu-c", "failed"))))
    hosts = {h.host: h for h in read_inputs([probe_i, check_i, provision])}
    assert set(hosts) == {"gpu-a", "gpu-b", "gpu-c"}
    assert set(hosts["gpu-a"].documents) == {"probe", "check", "provision"}
    assert hosts["gpu-b"].readiness == ("unreachable", "fail")
    assert hosts["gpu-c"].readiness == ("provision failed", "fail")
    page = render(list(hosts.values()))
    assert "No route to host" in page and "E: broken &lt;pkg&gt;" in page


@pytest.mark.parametrize("shape", ["host_list", "deep", "not_utf8"])
def test_report_cli_bad_input_is_one_line(tmp_path, documents, shape):
    bad = tmp_path / "bad.json"
    if shape == "host_list":
        bad.write_text(json.dumps({**documents["check"], "host": ["a"]}))
    elif shape == "deep":
        bad.write_text("[" * 100000 + "]" * 100000)
    else:
        bad.write_bytes(b"\xff\xfe{}")
    one_line(dlsetup("report", "-o", str(tmp_path / "out.html"), str(bad)))
    assert not (tmp_path / "out.html").exists()


# -- bundles: reads never block --------------------------------------------------------------------------


def _bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle)
    return bundle


def test_fifos_devices_and_sockets_in_a_bundle_are_unknown_not_a_hang(tmp_path, fixtures_dir):
    bundle = _bundle(tmp_path)
    for victim in ("proc/cpuinfo", "cmd/lscpu.out", "proc/driver/nvidia/version"):
        (bundle / victim).unlink()
        os.mkfifo(bundle / victim)
    (bundle / "proc/meminfo").unlink()
    (bundle / "proc/meminfo").symlink_to("/dev/zero")
    (bundle / "etc/os-release").unlink()
    (bundle / "usr/lib").mkdir(parents=True, exist_ok=True)
    (bundle / "usr/lib/os-release").unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(bundle / "etc/os-release"))
        # a subprocess with a timeout: a regression fails here instead of hanging the test run
        done = subprocess.run([sys.executable, "-m", "dlsetup", "probe", "--from-bundle", str(bundle), "--json"],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    profile = json.loads(done.stdout)
    assert profile["cpu"]["model"] is None and profile["memory"]["total_bytes"] is None
    assert profile["os"]["id"] is None
    notes = "\n".join(profile["notes"])
    for words in ("/proc/cpuinfo: is a FIFO", "cmd/lscpu.out: is a FIFO", "/proc/driver/nvidia/version: is a FIFO",
                  "/proc/meminfo: is a character device",
                  "/etc/os-release: is a socket"):
        assert words in notes
    assert profile["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"  # the rest of the bundle still reads


def test_an_oversized_bundle_file_is_not_read(tmp_path, fixtures_dir):
    bundle = _bundle(tmp_path)
    with open(bundle / "proc/cpuinfo", "r+b") as fh:
        fh.truncate(MAX_READ_BYTES + 1)  # sparse: no disk used
    profile = probe(bundle=bundle)
    assert any(n.startswith("/proc/cpuinfo: is larger than") for n in profile.notes)


def test_read_regular(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_regular(fifo, 100) == (None, "is a FIFO, not a regular file")
    assert read_regular("/dev/null", 100) == (None, "is a character device, not a regular file")
    assert read_regular(tmp_path, 100) == (None, "is a directory, not a regular file")
    assert read_regular(tmp_path / "absent", 100) == (None, None)
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "f", 10) == (b"x" * 10, None)
    assert read_regular(tmp_path / "f", 9) == (None, "is larger than 9 bytes")
    assert read_regular(tmp_path / "f", 4, whole=False) == (b"xxxx", None)
    assert read_regular("/proc/self/status", 1 << 20)[0].startswith(b"Name:")  # procfs: size 0, still read


# -- verify: whatever the venv's python prints -------------------------------------------------------------


def _fake_python(tmp_path: Path, script: str) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    return python


@pytest.mark.parametrize("script,words", [
    ("echo '{}'", "no verify result (the document: missing 'checks')"),
    ("echo '[1]'", "no verify result (the document: expected a mapping, got [1])"),
    ("echo garbage", "no verify result (not JSON"),
    ("printf '\\377\\376\\n'", "no verify result (not JSON"),
    ("true", "the workload crashed: exit status 0"),
    ("echo oops >&2; exit 3", "the workload crashed: oops"),
    ("echo '{\"checks\": [{\"id\": \"matmul.bf16\", \"status\": \"pass\", \"message\": \"m\", \"device\": \"cuda:0\", "
     "\"figures\": {\"tflops\": \"fast\"}}], \"devices\": [{\"device\": \"cuda:0\", \"name\": \"x\"}]}'",
     "checks[0].figures.tflops: expected a number"),
    ("echo '{\"checks\": [], \"devices\": [{\"device\": 0}]}'", "devices[0].device: expected a string"),
])
def test_payload_output_of_the_wrong_shape_is_one_failed_check(tmp_path, script, words):
    document = run_payload(_fake_python(tmp_path, script), True, tmp_path)
    (item,) = document["checks"]
    assert item["id"] == "framework.run" and item["status"] == "fail"
    assert words in item["message"] and len(item["message"]) < 300


def test_verify_cli_with_a_python_printing_braces_exits_1(tmp_path):
    python = _fake_python(tmp_path, "echo '{}'")
    done = dlsetup("verify", "--venv", str(python.parents[1]), "--quick", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    checks = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["framework.run"]["status"] == "fail" and "missing 'checks'" in checks["framework.run"]["message"]


# -- config and report files: no device, no wait on a FIFO nobody writes to -------------------------------


def test_config_and_report_from_a_pipe_a_lonely_fifo_or_a_device(tmp_path, documents):
    read, write = os.pipe()  # what <(command) gives: a pipe with the data in it
    os.write(write, b"cuda: '13.0'\n")
    os.close(write)
    try:
        assert load_request(Path(f"/proc/self/fd/{read}")).cuda == "13.0"
    finally:
        os.close(read)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes: read as empty at once, never waited on
    assert load_request(fifo) == load_request(None)
    with pytest.raises(UsageError, match="not JSON"):
        read_inputs([fifo])
    for device in ("/dev/zero", "/dev/null"):
        with pytest.raises(UsageError, match=f"cannot read config {device}: it is a device or socket"):
            load_request(Path(device))
        with pytest.raises(UsageError, match=f"{device}: is a device or socket"):
            read_inputs([Path(device)])
    with pytest.raises(UsageError, match="is a directory"):
        read_inputs([tmp_path])
