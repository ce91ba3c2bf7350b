#!/usr/bin/env python3
"""The GPU stack's re-run: how much a no-op converge of the NVIDIA roles costs a host (needs root).

On a fresh copy of the lab's Debian 12 root (tests/lab/rootfs.py), playbooks/site.yml converges
``common``, ``nvidia_driver``, ``cuda_toolkit`` and ``nvidia_container_toolkit`` from the signed
stand-in vendor mirror (tests/lab/mirror.py, served on 127.0.0.1), then runs again ``--repeat`` times
with nothing to do, and once more with the mirror gone (a converged host needs no network).
Reported side by side: wall time and whole-machine CPU (/proc/stat) of the first run and of the no-op
(median), their ratio, and the tasks the no-op ran on the host. The last line is one JSON object.
Usage: ``.venv/bin/python benchmarks/gpu_noop.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lab import mirror, rootfs  # noqa: E402 - the lab helpers live with the tests
from fleet import machine_cpu_seconds  # noqa: E402 - benchmarks/fleet.py, next to this script
from dlsetup.runner import link_collection  # noqa: E402 - on the path benchmarks/fleet.py sets

ROLES = ["common", "nvidia_driver", "cuda_toolkit", "nvidia_container_toolkit"]
_RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)")


def variables(url: str, fingerprint: str) -> Dict[str, object]:
    """What `dlsetup plan` would emit for an H100 host, with the vendor repositories at the lab mirror."""
    return {
        "dlsetup_roles": ROLES,
        "common_hold_packages": ["nvidia-open-580", "cuda-toolkit-13-0"],
        "nvidia_driver_branch": "580", "nvidia_driver_open_modules": True, "nvidia_driver_secure_boot": "disabled",
        # the shared lab mirror's cuda repository has the 580 metapackage but no version-locking package
        "nvidia_driver_pinning": False, "nvidia_driver_packages": ["nvidia-open-580"],
        "cuda_toolkit_version": "13.0", "nvidia_container_toolkit_runtimes": [],
        **{f"{role}_repo_url": f"{url}/{repo}/" for role, repo in
           (("nvidia_driver", "cuda"), ("cuda_toolkit", "cuda"), ("nvidia_container_toolkit", "libnvidia-container"))},
        **{f"{role}_repo_key_url": f"{url}/key.asc" for role in ROLES[1:]},
        **{f"{role}_repo_key_fingerprint": fingerprint for role in ROLES[1:]},
    }


def converge(root: Path, extra: Path) -> Dict[str, float]:
    """One run of the site playbook on the chroot; wall, machine CPU and the recap; exits unless it passed."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(link_collection(root.parent / "collections")),
           "ANSIBLE_NOCOLOR": "1"}
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", f"{root},", "-c", "community.general.chroot",
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", f"@{extra}", str(REPO / "playbooks/site.yml")]
    cpu, start = machine_cpu_seconds(), time.perf_counter()
    run = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, machine_cpu_seconds() - cpu
    recap = _RECAP.search(run.stdout)
    if run.returncode != 0 or recap is None:
        sys.exit(f"converge failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
    ok, changed, _, _, skipped = (int(v) for v in recap.groups())
    return {"wall_s": wall, "machine_cpu_s": cpu, "ok": ok, "changed": changed, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/gpu_noop.py needs root (chroot)")
    with tempfile.TemporaryDirectory(prefix="dlsetup-gpu-noop-") as tmp:
        work = Path(tmp)
        built = mirror.build_mirror(work / "mirror")
        root = rootfs.fresh_copy(work / "target")
        extra = work / "vars.yml"
        try:
            with mirror.serve(built.root) as url:
                extra.write_text(yaml.safe_dump(variables(url, built.fingerprint)))
                first = converge(root, extra)
                noops = [converge(root, extra) for _ in range(args.repeat)]
            offline = converge(root, extra)  # nothing listens at the mirror's address any more
        finally:
            rootfs.remove_copy(root)
    noop = {key: statistics.median(run[key] for run in noops) for key in noops[0]}
    result = {
        "roles": ROLES,
        "first": {key: round(value, 2) for key, value in first.items()},
        "noop": {key: round(value, 2) for key, value in noop.items()},
        "noop_offline": {key: round(value, 2) for key, value in offline.items()},
        "noop_vs_first_wall": round(noop["wall_s"] / first["wall_s"], 3),
        "noop_vs_first_cpu": round(noop["machine_cpu_s"] / first["machine_cpu_s"], 3),
    }
    for name, run in (("first run", first), ("no-op (median)", noop), ("no-op, mirror gone", offline)):
        print(f"{name:<20} wall {run['wall_s']:6.2f} s  machine CPU {run['machine_cpu_s']:6.2f} s  "
              f"ok={run['ok']:.0f} changed={run['changed']:.0f} skipped={run['skipped']:.0f}")
    print(f"no-op vs first run: {result['noop_vs_first_wall']:.2f}x wall, {result['noop_vs_first_cpu']:.2f}x CPU")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
