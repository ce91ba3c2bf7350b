"""No-op converge of playbooks/site.yml on 1, 8 and 16 namespace hosts: dlsetup's settings vs stock Ansible.

Each fleet (tests/lab/fleet.py: network namespaces, overlay Debian roots, sshd, real SSH) is converged
once with the CPU role set (``common``, ``frameworks``), untimed; then the already converged fleet is
run again with stock settings (forks 5, no pipelining, no fact cache), with dlsetup's tuned settings
(:func:`dlsetup.runner.settings.tuned_ansible_env`: Ansible's linear strategy) and, where mitogen
supports the installed ansible-core, with those plus mitogen's strategy; alternately, ``--repeat`` times
each. Reported per run: wall time, whole-machine CPU from /proc/stat (the hosts share this machine's
cores, so that is the honest figure; anything else running on the machine counts too), the controller's
own CPU, and machine CPU per host-task (every task a host was given, skipped ones included) and per task
that ran on a host. The last line is one JSON object. Needs root.
Usage: ``.venv/bin/python benchmarks/fleet.py [--hosts 1 8 16] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dlsetup.runner import link_collection  # noqa: E402
from dlsetup.runner.settings import tuned_ansible_env  # noqa: E402
from lab.fleet import Fleet  # noqa: E402

PLAYBOOK = REPO / "playbooks" / "site.yml"
ROLES = '{"dlsetup_roles": ["common", "frameworks"]}'
#: Ansible's defaults, spelled out: what a user without dlsetup runs
STOCK = {"ANSIBLE_FORKS": "5", "ANSIBLE_PIPELINING": "False", "ANSIBLE_HOST_KEY_CHECKING": "True"}
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
                    r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.MULTILINE)


def machine_cpu_seconds() -> float:
    """CPU time every core of this machine has spent busy since boot (/proc/stat, less idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def converge(inventory: Path, settings: Mapping[str, str]) -> Dict[str, float]:
    """One run of the site playbook; wall, machine and controller CPU, host-tasks; raises unless all ok."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(settings, ANSIBLE_COLLECTIONS_PATH=str(link_collection(inventory.parent / "collections")),
               ANSIBLE_NOCOLOR="True",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    command = ["ansible-playbook", "-i", str(inventory), "-e", ROLES, str(PLAYBOOK)]
    machine, controller, start = machine_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    machine, controller = machine_cpu_seconds() - machine, children_cpu_seconds() - controller
    recap = _RECAP.findall(run.stdout)
    if run.returncode != 0 or not recap or any(int(r[3]) or int(r[4]) for r in recap):
        reasons = "\n".join(line for line in run.stdout.splitlines() if "UNREACHABLE" in line or "FAILED" in line)
        raise SystemExit(f"converge failed (rc {run.returncode}):\n{reasons[-3000:]}\n{run.stdout[-2000:]}\n"
                         f"{run.stderr[-2000:]}")
    ran = sum(int(r[1]) + int(r[4]) for r in recap)  # ok (changed included) + failed: tasks run on a host
    tasks = ran + sum(int(r[5]) + int(r[6]) + int(r[7]) for r in recap)  # + skipped, rescued, ignored
    return {"wall_s": wall, "machine_cpu_s": machine, "controller_cpu_s": controller, "host_tasks": tasks,
            "host_tasks_run": ran, "changed": sum(int(r[2]) for r in recap)}


def median(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def bench(count: int, repeat: int, workdir: Path) -> Dict[str, object]:
    with Fleet(workdir / f"fleet{count}", count) as fleet:
        inventory = fleet.inventory(workdir / f"hosts{count}.yml")
        with tempfile.TemporaryDirectory(prefix="facts-") as facts:
            settings = {"stock": STOCK, "tuned": tuned_ansible_env(count, Path(facts), mitogen=False)}
            mitogen = tuned_ansible_env(count, Path(facts), mitogen=True)
            if mitogen != settings["tuned"]:  # mitogen installed and supporting this ansible-core
                settings["tuned+mitogen"] = mitogen
            converge(inventory, settings["tuned"])  # first converge: makes the changes, untimed
            runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in settings}
            for _ in range(repeat):  # alternately, so that a busy moment hurts each alike
                for name, env in settings.items():
                    runs[name].append(converge(inventory, env))
    result: Dict[str, object] = {"hosts": count}
    for name, values in runs.items():
        figures = median(values)
        figures["machine_cpu_per_host_task_s"] = round(figures["machine_cpu_s"] / figures["host_tasks"], 4)
        figures["machine_cpu_per_run_task_s"] = round(figures["machine_cpu_s"] / figures["host_tasks_run"], 4)
        if name != "stock":
            figures["wall_speedup"] = round(runs_median(runs["stock"], "wall_s") / figures["wall_s"], 2)
            figures["machine_cpu_ratio"] = round(
                runs_median(runs["stock"], "machine_cpu_s") / figures["machine_cpu_s"], 2)
        result[name] = figures
    return result


def runs_median(runs: List[Dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/fleet.py needs root (network namespaces, overlay mounts)")
    results = []
    with tempfile.TemporaryDirectory(prefix="dlsetup-fleet-bench-") as tmp:
        for count in args.hosts:
            result = bench(count, args.repeat, Path(tmp))
            results.append(result)
            for name in [n for n in result if n != "hosts"]:
                r = result[name]
                ratios = (f"  {r['wall_speedup']}x faster, {r['machine_cpu_ratio']}x less machine CPU than stock"
                          if name != "stock" else "")
                print(f"{count:>3} hosts {name:<13} wall {r['wall_s']:7.2f} s  machine CPU {r['machine_cpu_s']:7.2f} s"
                      f"  controller CPU {r['controller_cpu_s']:6.2f} s  host-tasks {r['host_tasks']:>4}"
                      f" ({r['host_tasks_run']} run)  CPU/host-task {r['machine_cpu_per_host_task_s']:.3f} s"
                      f" (/run task {r['machine_cpu_per_run_task_s']:.3f} s){ratios}")
    print(json.dumps({"benchmark": "fleet-noop-converge", "cores": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
