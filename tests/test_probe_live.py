"""Live ``dlsetup probe`` on this machine, checked against independent sources (psutil, os, platform)."""

import json
import os
import platform
import socket
import subprocess
import sys

import psutil
import pytest

from conftest import REPO
from dlsetup.probe import probe


@pytest.fixture(scope="module")
def live():
    return probe()


def test_live_profile_matches_independent_sources(live):
    assert live.hostname == socket.gethostname()
    assert live.os.kernel == platform.release()
    assert live.os.arch == platform.machine()
    assert live.cpu.logical_cpus == os.cpu_count()
    assert live.cpu.physical_cores == psutil.cpu_count(logical=False)
    assert live.memory.total_bytes == psutil.virtual_memory().total
    assert live.os.id == platform.freedesktop_os_release()["ID"]
    assert live.notes == ()


def test_live_root_filesystem_is_reported(live):
    root = next(m for m in live.storage.mounts if m.mountpoint == "/")
    usage = psutil.disk_usage("/")
    assert root.size_bytes == pytest.approx(usage.total, rel=0.01)
    assert any("/" in d.mountpoints for d in live.storage.devices)


def test_live_avx_flags_agree_with_proc_cpuinfo(live):
    flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split())
    assert live.cpu.avx2 == ("avx2" in flags)
    assert live.cpu.avx512f == ("avx512f" in flags)


def test_save_bundle_reads_back_the_same(tmp_path):
    bundle = tmp_path / "bundle"
    saved = probe(save_bundle=bundle)
    again = probe(bundle=bundle)
    assert (bundle / "commands.json").is_file() and (bundle / "proc" / "cpuinfo").is_file()
    assert again.cpu == saved.cpu
    assert again.os == saved.os
    assert again.gpus == saved.gpus
    assert again.storage.devices == saved.storage.devices
    assert again.memory.total_bytes == saved.memory.total_bytes
    commands = json.loads((bundle / "commands.json").read_text())
    assert commands["cmd/lscpu.out"] == "lscpu"


def test_cli_live_json_is_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from dlsetup.model import json_schema

    out = subprocess.run([sys.executable, "-m", "dlsetup", "probe", "--json"], capture_output=True, text=True,
                         cwd=REPO, check=True)
    jsonschema.validate(json.loads(out.stdout), json_schema())
