"""Does ``dlsetup verify``'s matmul figure agree with a direct torch measurement?

Run with the interpreter of an environment that has torch (dlsetup need not be installed there):
``<venv>/bin/python benchmarks/verify.py [--dtype bf16] [--device cuda:0]``. For each dtype it picks the
size the way verify does, then alternates verify's routine with ``torch.utils.benchmark.Timer`` (an
independent timer that synchronises CUDA itself) on the same size, and compares the best round of each,
the one least disturbed by other work on a shared machine. It prints the figures and their ratio; the
last line is one JSON object. Exit 1 when any ratio is off by more than 5 %.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark

TOLERANCE = 0.05
ROUNDS = 5


def load_payload():
    path = Path(__file__).resolve().parents[1] / "dlsetup" / "verify" / "payload.py"
    spec = importlib.util.spec_from_file_location("dlsetup_verify_payload", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def direct_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = benchmark.Timer(stmt="a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * n**3 / timer.blocked_autorange(min_run_time=0.3).median / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="torch device [default: cuda:0 if there is one, else cpu]")
    parser.add_argument("--dtype", action="append", help="bf16, fp16, fp32 [default: all the device has]")
    args = parser.parse_args()
    payload = load_payload()
    device = torch.device(args.device) if args.device else payload.select_devices()[0]
    dtypes = payload.matmul_dtypes(device)
    chosen = args.dtype or list(dtypes)
    results = {}
    for label in chosen:
        dtype = dtypes[label]
        n = payload.matmul_size(device, dtype)
        verify_runs, direct_runs = [], []
        for _ in range(ROUNDS):  # alternate, so clock and thermal drift hit both alike
            verify_runs.append(payload.matmul_tflops(device, dtype, n))
            direct_runs.append(direct_tflops(device, dtype, n))
        ours, theirs = max(verify_runs), max(direct_runs)  # the least disturbed round of each
        ratio = ours / theirs
        results[label] = {"n": n, "verify_tflops": round(ours, 5), "direct_tflops": round(theirs, 5),
                          "ratio": round(ratio, 4), "agree": abs(ratio - 1) <= TOLERANCE}
        print(f"{label:5} n={n:5}  verify {ours:10.4g} TFLOP/s  torch.utils.benchmark {theirs:10.4g} TFLOP/s"
              f"  ratio {ratio:.3f}")
    agree = all(r["agree"] for r in results.values())
    print(json.dumps({"device": str(device), "torch": torch.__version__, "tolerance": TOLERANCE,
                      "agree": agree, "dtypes": results}))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
