"""``dlsetup status -i`` vs a no-op ``dlsetup provision -i`` on 1, 8 and 16 namespace hosts.

Each fleet (tests/lab/fleet.py: network namespaces, overlay Debian roots, sshd, real SSH) is provisioned
once with the CPU role set (``common``, ``frameworks``; the hosts have no network, so no pip packages:
``frameworks_venvs`` and ``frameworks_packages`` empty, as the fleet tests do; ``--no-cache``: the no-op
provision is the roles' own, without the controller-side download cache), untimed. Then, alternately,
``--repeat`` times each: the no-op ``dlsetup provision -i INVENTORY --yes`` (probe every host, plan, run
the roles, which change nothing) and ``dlsetup status -i INVENTORY`` (one task per host, then the
comparison), both as a user runs them, with ``--offline`` so neither waits on a package index. Drift is
planted on every other host (a reboot marker) so status has something to find; the run checks it finds
exactly those. Reported: median wall time of each, status/provision ratio, and the drift found. The last
line is one JSON object.

On the development machine (2 cores, load 7-15 from other work, so the figures move by 10-20 % between
runs), medians of 2: 1 host 2.8 s vs 7.6 s (0.37x), 8 hosts 5.1 s vs 19.7 s (0.26x), 16 hosts 7.7 s vs
31.9 s (0.24x; 0.23x as a median of 3); every planted drift found. Status costs one task per host plus one
Ansible start-up, so its share shrinks as the fleet grows; at one host the start-up dominates both.

Needs root. Usage: ``/work/venv/bin/python benchmarks/status.py [--hosts 1 8 16] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from lab.fleet import Fleet  # noqa: E402

EXTRA = json.dumps({"frameworks_venvs": [], "frameworks_packages": []})
MARKER = "/run/dlsetup/reboot-required"


def dlsetup(args: List[str], cache: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(XDG_CACHE_HOME=str(cache), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "dlsetup", *args], cwd=REPO, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, run


def provision(inventory: Path, cache: Path) -> float:
    wall, run = dlsetup(["provision", "-i", str(inventory), "--yes", "--json", "--offline", "--no-cache", "-e", EXTRA],
                        cache)
    if run.returncode != 0:
        raise SystemExit(f"provision failed (rc {run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return wall


def status(inventory: Path, cache: Path, planted: List[str]) -> Dict[str, object]:
    wall, run = dlsetup(["status", "-i", str(inventory), "--json", "--offline", "-e", EXTRA], cache)
    try:
        docs = json.loads(run.stdout)
    except ValueError:
        raise SystemExit(f"status printed no JSON (rc {run.returncode}):\n{run.stderr[-2000:]}") from None
    found = sorted(name for name, doc in docs.items() if any(i["topic"] == "reboot" for i in doc.get("drift", [])))
    other = {name: [i["topic"] for i in doc.get("drift", []) if i["topic"] != "reboot"] for name, doc in docs.items()}
    expected_rc = 1 if planted else 0
    if run.returncode != expected_rc or found != sorted(planted) or any(other.values()):
        raise SystemExit(f"status: rc {run.returncode}, reboot drift on {found} (planted {planted}), other {other}\n"
                         f"{run.stderr[-2000:]}")
    return {"wall_s": wall, "drift_found": len(found)}


def bench(count: int, repeat: int, workdir: Path) -> Dict[str, object]:
    cache = workdir / f"cache{count}"
    with Fleet(workdir / f"fleet{count}", count) as fleet:
        inventory = fleet.inventory(workdir / f"hosts{count}.yml")
        provision(inventory, cache)  # the first converge makes the changes: untimed
        planted = [h.name for h in fleet.hosts[1::2]]
        if planted:
            ansible = Path(sys.executable).with_name("ansible")
            subprocess.run([str(ansible), "-i", str(inventory), ",".join(planted), "-m", "ansible.builtin.shell",
                            "-a", f"mkdir -p {Path(MARKER).parent} && echo bench > {MARKER}"],
                           check=True, capture_output=True, timeout=300)
        provisions, statuses = [], []
        for _ in range(repeat):  # alternately, so that a busy moment hurts each alike
            provisions.append(provision(inventory, cache))
            statuses.append(status(inventory, cache, planted))
    provision_s = statistics.median(provisions)
    status_s = statistics.median(float(s["wall_s"]) for s in statuses)
    return {"hosts": count, "noop_provision_s": round(provision_s, 2), "status_s": round(status_s, 2),
            "ratio": round(status_s / provision_s, 3), "drift_planted": len(planted),
            "drift_found": statuses[-1]["drift_found"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/status.py needs root (network namespaces, overlay mounts)")
    results = []
    with tempfile.TemporaryDirectory(prefix="dlsetup-status-bench-") as tmp:
        for count in args.hosts:
            r = bench(count, args.repeat, Path(tmp))
            results.append(r)
            print(f"{count:>3} hosts  no-op provision {r['noop_provision_s']:7.2f} s  status {r['status_s']:6.2f} s"
                  f"  ratio {r['ratio']:.3f}  drift found {r['drift_found']}/{r['drift_planted']}", flush=True)
    print(json.dumps({"benchmark": "status-vs-noop-provision", "cores": os.cpu_count(), "load1": os.getloadavg()[0],
                      "results": results}))


if __name__ == "__main__":
    main()
