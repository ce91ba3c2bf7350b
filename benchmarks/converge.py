#!/usr/bin/env python3
"""``dlsetup provision`` against doing the same by hand, on fresh Debian 12 chroots (needs root).

Three figures, each on its own fresh copy of the lab's cached Debian 12 root (tests/lab/rootfs.py):
the first ``dlsetup provision -i <chroot> --yes`` of a no-GPU plan (common + frameworks with the local
CPU torch wheel), its no-op re-run, and the raw baseline: ``apt-get update`` and ``apt-get install``
of the same distribution packages, then ``python3 -m venv`` and ``pip install`` of the same wheel from
the same wheelhouse. ``--repeat N`` rounds (default 3), provision and raw alternately on fresh copies so
that a slow moment of the machine hurts both alike; the medians are compared. Goals: provision <= 1.3x
raw, no-op <= 0.2x the first run. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lab import rootfs, wheels  # noqa: E402 - the lab helpers live with the tests

WHEELS_IN_TARGET = "/opt/wheels"
VENV = "/opt/dlsetup/venv"


def _packages() -> list[str]:
    """The distribution packages the common and frameworks roles install on Debian 12."""
    names: list[str] = []
    for role, key in (("common", "__common_packages"), ("frameworks", "__frameworks_packages")):
        data = yaml.safe_load((REPO / "roles" / role / "vars" / "Debian-12.yml").read_text())
        names += [n for n in data[key] if n not in names]
    return names


def _target(work: Path, name: str) -> Path:
    root = rootfs.fresh_copy(work / name)
    shutil.copytree(wheels.wheelhouse(), root / WHEELS_IN_TARGET.lstrip("/"))
    return root


def _timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"failed ({run.returncode}): {' '.join(argv)}\n{run.stderr[-2000:]}")
    return elapsed, run


def provision(root: Path, work: Path) -> tuple[float, float, int]:
    """(first run s, re-run s, changed tasks on the re-run)."""
    inventory = work / "hosts.ini"
    inventory.write_text(f"{root} ansible_connection=community.general.chroot "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    argv = [sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "--yes", "--json",
            "--pip-find-links", WHEELS_IN_TARGET, "--pip-offline"]
    first, _ = _timed(argv)
    again, run = _timed(argv)
    changed = sum(json.loads(line)["changed"] for line in run.stdout.splitlines() if line.startswith("{"))
    return first, again, changed


def raw(root: Path) -> float:
    """apt-get update + install, venv + pip install: what provision does, typed by hand."""
    steps = [
        ["apt-get", "update", "-q"],
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", *_packages()],
        ["python3", "-m", "venv", VENV],
        [f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", WHEELS_IN_TARGET,
         wheels.TORCH_REQUIREMENT.split("+")[0]],
    ]
    return sum(_timed(["chroot", str(root), *step])[0] for step in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds: list[tuple[float, float, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="dlsetup-converge-") as tmp:
        work = Path(tmp)
        for n in range(args.repeat):
            roots = [_target(work, f"provision{n}"), _target(work, f"raw{n}")]
            try:
                first, again, changed = provision(roots[0], work)
                rounds.append((first, again, changed, raw(roots[1])))
            finally:
                for root in roots:
                    rootfs.remove_copy(root)
            print(f"round {n + 1}: provision {first:.1f} s, no-op {again:.1f} s, raw {rounds[-1][3]:.1f} s", flush=True)
    first, again, baseline = (statistics.median(r[i] for r in rounds) for i in (0, 1, 3))
    changed = max(r[2] for r in rounds)
    result = {
        "rounds": args.repeat,
        "provision_first_s": round(first, 1),
        "provision_noop_s": round(again, 1),
        "noop_changed": changed,
        "raw_apt_pip_s": round(baseline, 1),
        "provision_vs_raw": round(first / baseline, 2),
        "noop_vs_first": round(again / first, 2),
        "goals": {"provision_vs_raw": 1.3, "noop_vs_first": 0.2},
    }
    print(f"medians of {args.repeat} rounds:")
    print(f"{'provision (first run)':<24}{first:8.1f} s   {first / baseline:5.2f}x raw (goal <= 1.3x)")
    print(f"{'raw apt-get + pip':<24}{baseline:8.1f} s")
    print(f"{'provision (no-op re-run)':<24}{again:8.1f} s   {again / first:5.2f}x first (goal <= 0.2x), "
          f"changed={changed}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
