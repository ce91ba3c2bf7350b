#!/usr/bin/env python3
"""Cold ``dlsetup probe --json`` against the tools people run today, side by side on this machine.

Each figure is the median wall time of N fresh processes (the page cache is warm, the interpreter is
not). Baselines: py-cpuinfo's ``get_cpu_info()`` (in its own process, the way a tool would call it),
``nvidia-smi -q`` and PyTorch's ``collect_env`` where present. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}", "argv": argv}
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": runs, "argv": argv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python", default=sys.executable, help="interpreter with dlsetup and py-cpuinfo")
    parser.add_argument("--torch-python", default=None, help="interpreter with torch for collect_env")
    args = parser.parse_args()

    results = {
        "dlsetup probe --json": timed([args.python, "-m", "dlsetup", "probe", "--json"], args.runs),
        "py-cpuinfo get_cpu_info()": timed([args.python, "-c", "import cpuinfo; cpuinfo.get_cpu_info()"], args.runs),
        "python startup": timed([args.python, "-c", "pass"], args.runs),
    }
    if shutil.which("nvidia-smi"):
        results["nvidia-smi -q"] = timed(["nvidia-smi", "-q"], args.runs)
    torch_python = args.torch_python or args.python
    has_torch = subprocess.run([torch_python, "-c", "import torch"], capture_output=True).returncode == 0
    if has_torch:
        results["torch collect_env"] = timed([torch_python, "-m", "torch.utils.collect_env"], max(3, args.runs // 2))

    ours = results["dlsetup probe --json"].get("median_s")
    print(f"{'command':<28} {'median':>9} {'min':>9}  ratio (dlsetup / it)")
    for name, res in results.items():
        if "median_s" not in res:
            print(f"{name:<28} {res['error']:>9}")
            continue
        ratio = f"{ours / res['median_s']:.2f}x" if ours and name != "dlsetup probe --json" else ""
        print(f"{name:<28} {res['median_s'] * 1000:>7.0f}ms {res['min_s'] * 1000:>7.0f}ms  {ratio}")
    base = results["py-cpuinfo get_cpu_info()"].get("median_s")
    summary = {
        "probe_median_s": ours,
        "cpuinfo_median_s": base,
        "ratio_vs_cpuinfo": (ours / base) if ours and base else None,
        "goal_ratio_vs_cpuinfo": 0.25,
        "results": {k: {kk: vv for kk, vv in v.items() if kk != "argv"} for k, v in results.items()},
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
