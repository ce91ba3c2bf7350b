"""No parser or reader raises on a real capture cut short at any line.

A probe that dies mid-write, a command killed by the probe's timeout or a copy-paste that stopped early
leaves a capture truncated anywhere. Every parser is run on every prefix (whole lines) of every text
capture of ``tests/fixtures`` of its kind, and the bundle reader on a bundle whose files are each cut
short. The only exception allowed is :class:`~dlsetup.parsers.nvidia.SmiParseError` (a ``UsageError``:
one clear line for input that is not nvidia-smi output at all), and only where even the first line of
the real output was already missing.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import pytest

from dlsetup.parsers import amd, cpu, dmi, kernel, lsblk, mdstat, nvidia, pci, system
from dlsetup.probe import probe_host
from dlsetup.probe.host import Host

from conftest import FIXTURES, H100_BUNDLE


def _nvidia(fn):
    @functools.wraps(fn)
    def call(text: str):
        try:
            return fn(text)
        except nvidia.SmiParseError:
            return None  # documented: not nvidia-smi output at all (tested for a clear message elsewhere)
    return call


#: parser -> the fixture kinds it reads (folder under public/, or "bundle" for the H100 bundle files)
PARSERS = {
    "amd": [amd.parse_rocm_smi_json, amd.parse_rocm_smi_text, amd.parse_rocminfo, amd.parse_kfd_properties,
            *[getattr(amd, n) for n in ("parse_amd_smi_json",) if hasattr(amd, n)]],
    "cpu": [cpu.parse_proc_cpuinfo, cpu.parse_lscpu, cpu.parse_lscpu_json],
    "nvidia": [_nvidia(nvidia.parse_smi_xml), _nvidia(nvidia.parse_smi_query_csv), nvidia.parse_smi_q_text,
               nvidia.parse_smi_table, nvidia.parse_smi_list, nvidia.parse_topo_matrix,
               nvidia.parse_proc_driver_version, nvidia.split_capture],
    "pci": [pci.parse_lspci_nnmmv],
    "lsblk": [lsblk.parse_lsblk_json, lsblk.parse_lsblk_pairs, lsblk.parse_lsblk_table],
    "mdstat": [mdstat.parse_mdstat],
    "kernel": [kernel.parse_dkms_status, kernel.parse_grub_cfg, kernel.parse_shell_vars,
               kernel.make_log_failure],
    "system": [system.parse_os_release, system.parse_meminfo, system.parse_uname_a, system.parse_proc_modules,
               system.parse_df, system.parse_proc_mounts, system.secure_boot_from_mokutil,
               dmi.parse_dmidecode_memory],
}


def _bundle_kind(name: str) -> str:
    """Which parsers read a bundle file (its name says which command or host file it holds)."""
    if name.startswith("nvidia") or name in ("version", "nvml.json"):
        return "nvidia"
    if name.startswith("lscpu") or name == "cpuinfo":
        return "cpu"
    if name.startswith("lsblk"):
        return "lsblk"
    return "system"


def _text_captures() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((FIXTURES / "public").rglob("*")):
        if path.is_file() and path.suffix not in (".gz", ".tsv"):
            found.append((path.relative_to(FIXTURES / "public").parts[0], path))
    for path in sorted(H100_BUNDLE.rglob("*")):
        if path.is_file() and path.suffix in (".out", ".json", "") and path.stat().st_size < 200_000:
            found.append((_bundle_kind(path.name), path))
    return found


#: DLSETUP_FUZZ_FULL=1 cuts every capture at every line (minutes); the fast tier cuts at about
#: FAST_CUTS evenly spaced lines of each capture (all of them for shorter ones).
FULL = os.environ.get("DLSETUP_FUZZ_FULL", "") not in ("", "0")
FAST_CUTS = 40


def _prefixes(text: str):
    """Cuts at line ends, and a cut inside the line that follows (a partial write)."""
    lines = text.splitlines(keepends=True)
    stride = 1 if FULL else max(1, len(lines) // FAST_CUTS)
    done = 0
    for number, line in enumerate(lines):
        if number % stride == 0 or number == len(lines) - 1:
            yield text[:done] + line[: len(line) // 2]
            yield text[:done]
        done += len(line)


CAPTURES = _text_captures()


def test_every_capture_kind_has_parsers():
    assert CAPTURES, "no captures found"
    assert {kind for kind, _ in CAPTURES} <= set(PARSERS)


@pytest.mark.parametrize("kind,path", CAPTURES, ids=[str(p.relative_to(FIXTURES)) for _, p in CAPTURES])
def test_parsers_never_raise_on_truncated_capture(kind, path):
    text = path.read_text(encoding="utf-8", errors="replace")
    for cut in _prefixes(text):
        for parse in PARSERS[kind]:
            try:
                parse(cut)
            except Exception as err:  # noqa: BLE001 - the point of the test
                last = cut.splitlines()[-1:] if cut else []
                pytest.fail(f"{parse.__name__} raised {type(err).__name__}: {err} on {path.name} cut after "
                            f"{len(cut)} chars (last line {last!r})")


def _probe_errors(root: Path) -> list[str]:
    profile = probe_host(Host.bundle(root))
    json.dumps(profile.to_dict())
    return [n for n in profile.notes if "could not be read (" in n]


def _amd_bundle(root: Path) -> Path:
    """A bundle of real AMD captures: the MI308X CPX KFD topology, amd-smi and rocm-smi outputs."""
    amd = FIXTURES / "public" / "amd"
    shutil.copytree(amd / "kfd-topology_8x-mi308x-cpx", root / "sys" / "class" / "kfd" / "kfd" / "topology")
    (root / "cmd").mkdir()
    shutil.copy(amd / "amd-smi-static-json_mi210_gfx90a.json", root / "cmd" / "amd-smi-static-json.out")
    shutil.copy(amd / "rocm-smi-a-json_mi250-740c_rocm5.json", root / "cmd" / "rocm-smi-json.out")
    return root


def _arm_bundle(root: Path) -> Path:
    """A bundle of real Grace Hopper captures: lscpu, uname and the text nvidia-smi -q (no XML report)."""
    public = FIXTURES / "public"
    (root / "cmd").mkdir(parents=True)
    shutil.copy(public / "cpu" / "lscpu_gh200-neoverse-v2-64c_container.txt", root / "cmd" / "lscpu.out")
    shutil.copy(public / "system" / "uname-a_gh200_6.8.0-1013-nvidia-64k.txt", root / "cmd" / "uname-a.out")
    shutil.copy(public / "nvidia" / "smi-q_gh200-480gb_drv550.127.05.txt", root / "cmd" / "nvidia-smi-q.out")
    return root


@pytest.mark.parametrize("which", ["h100", "amd", "gh200"])
def test_bundle_reader_never_raises_on_truncated_files(tmp_path, which):
    """Each file of a bundle cut at several lines in turn: the probe reads the rest, nothing raises."""
    bundle = tmp_path / "bundle"
    if which == "h100":
        source = H100_BUNDLE
        shutil.copytree(H100_BUNDLE, bundle, symlinks=True)
    else:
        source = (_amd_bundle if which == "amd" else _arm_bundle)(tmp_path / "source")
        shutil.copytree(source, bundle)
    for original in sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink()):
        target = bundle / original.relative_to(source)
        data = original.read_bytes()
        lines = data.splitlines(keepends=True)
        cuts = sorted({0, 1, len(lines) // 3, len(lines) // 2, len(lines) - 1} & set(range(len(lines))))
        for cut in cuts:
            target.write_bytes(b"".join(lines[:cut]) + (lines[cut][: len(lines[cut]) // 2] if lines else b""))
            errors = _probe_errors(bundle)
            assert errors == [], f"{original.relative_to(source)} cut at line {cut}: {errors}"
        target.write_bytes(data)
