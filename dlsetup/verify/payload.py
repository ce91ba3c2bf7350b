"""The verify workload: runs INSIDE the target environment's Python, which need not have dlsetup.

Usage: ``<venv>/bin/python payload.py --json [--quick] [--data-dir DIR]``. Standard library and torch only,
Python 3.9+. It prints one JSON document: the framework and devices it found, and a list of checks, each
``{"id", "status" ("pass"/"warn"/"fail"), "message", "figures", "device"}``. A missing or broken torch is a
failed check, not a traceback.

What it runs, on every CUDA/ROCm GPU torch sees (on the CPU when it sees none):
three classic models (LeNet-5, an Elman RNN, an LSTM) trained a few steps on learnable synthetic data,
with the loss required to fall; square matmul throughput per dtype; device-memory copy bandwidth.
Once per host: an all-reduce over all GPUs when there are two or more (NCCL, or RCCL under ROCm), and the
sequential write/read throughput of the data directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

try:
    import torch
except (ImportError, OSError) as _exc:  # reported as the failed framework check
    torch = None  # type: ignore[assignment]
    TORCH_ERROR: Optional[str] = f"{type(_exc).__name__}: {_exc}"
else:
    TORCH_ERROR = None

PAYLOAD_VERSION = 1
MIB = 1 << 20

#: Matmul sizes double from MATMUL_MIN_N until one multiply takes MATMUL_OP_S or the cap is reached,
#: so slow dtypes (bf16 on a CPU without bf16 instructions) stay small and fast GPUs get big tiles.
MATMUL_MIN_N = 256
MATMUL_MAX_N = {"cuda": 8192, "cpu": 2048}
MATMUL_OP_S = 0.02
#: Each timed repeat runs enough calls to last at least this long; the figure is the median repeat.
BATCH_S = 0.05
REPEATS = 5

#: Loss is "falling" when the mean of the last LOSS_WINDOW steps is below that of the first ones.
LOSS_WINDOW = 5

#: Data-directory throughput below these (MB/s) is a warning: a single SATA SSD reads ~500 MB/s, and
#: under ~200 MB/s a loader streaming compressed images can leave a GPU waiting.
DISK_READ_WARN_MBPS = 200.0
DISK_WRITE_WARN_MBPS = 100.0


def check(cid: str, status: str, message: str, figures: Optional[dict] = None,
          device: Optional[str] = None) -> Dict[str, Any]:
    return {"id": cid, "status": status, "message": message, "figures": figures or {}, "device": device}


# -- devices ------------------------------------------------------------------------------------------


def select_devices() -> List["torch.device"]:
    """Every GPU torch sees (CUDA or ROCm, both under ``torch.cuda``), else the CPU."""
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def describe_device(device: "torch.device") -> Dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "device": str(device),
            "name": props.name,
            "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "gfx_target": getattr(props, "gcnArchName", None) if torch.version.hip else None,
            "pci_bus_id": _pci_bus_id(props),
        }
    return {"device": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability()}


def _pci_bus_id(props: Any) -> Optional[str]:
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    return f"{getattr(props, 'pci_domain_id', 0):04x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: "torch.device") -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calls_per_batch(op: Callable[[], Any], device: "torch.device", batch_s: float = BATCH_S) -> int:
    """How many calls of ``op`` fill ``batch_s``: one warm-up call, then one timed call."""
    op()
    synchronize(device)
    start = time.perf_counter()
    op()
    synchronize(device)
    return max(1, math.ceil(batch_s / max(time.perf_counter() - start, 1e-9)))


def time_op(op: Callable[[], Any], device: "torch.device", batch_s: float = BATCH_S,
            repeats: int = REPEATS, calls: Optional[int] = None) -> float:
    """Median seconds per call of ``op``: ``repeats`` batches of calls, each batch between two device
    synchronisations and long enough (``batch_s``) to hide the timer's overhead. Collectives pass ``calls``
    agreed by every rank, since each rank must make the same number of calls."""
    if calls is None:
        calls = calls_per_batch(op, device, batch_s)
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            op()
        synchronize(device)
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


# -- throughput ---------------------------------------------------------------------------------------


def matmul_dtypes(device: "torch.device") -> Dict[str, "torch.dtype"]:
    """bf16, fp16 and fp32 where the device can multiply them (bf16 needs Ampere+ on NVIDIA)."""
    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    if device.type == "cpu" or torch.cuda.is_bf16_supported(including_emulation=False):
        dtypes = {"bf16": torch.bfloat16, **dtypes}
    return dtypes


def matmul_size(device: "torch.device", dtype: "torch.dtype") -> int:
    """Square size for the throughput test: double from MATMUL_MIN_N while one multiply is shorter than
    MATMUL_OP_S, up to the device's cap."""
    n, cap = MATMUL_MIN_N, MATMUL_MAX_N[device.type]
    while n < cap:
        a = torch.ones(n, n, device=device, dtype=dtype)
        torch.mm(a, a)
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, a)
        synchronize(device)
        if time.perf_counter() - start >= MATMUL_OP_S:
            break
        n *= 2
    return n


def matmul_tflops(device: "torch.device", dtype: "torch.dtype", n: int) -> float:
    """Achieved dense TFLOP/s of an n x n x n matmul, 2 n^3 floating-point operations per call."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    out = torch.empty(n, n, device=device, dtype=dtype)
    seconds = time_op(lambda: torch.mm(a, b, out=out), device)
    return 2 * n**3 / seconds / 1e12


def copy_bandwidth_gbps(device: "torch.device", nbytes: int) -> float:
    """Device-memory bandwidth in GB/s (1e9) of a buffer-to-buffer copy, counting the read and the write."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = time_op(lambda: dst.copy_(src), device)
    return 2 * nbytes / seconds / 1e9


def throughput_checks(device: "torch.device", quick: bool) -> List[Dict[str, Any]]:
    results = []
    for label, dtype in matmul_dtypes(device).items():
        n = matmul_size(device, dtype)
        tflops = matmul_tflops(device, dtype, n)
        results.append(check(f"matmul.{label}", "pass", f"{label} matmul {n}^3: {tflops:.3g} TFLOP/s",
                             {"tflops": round(tflops, 4), "n": n}, str(device)))
    nbytes = (256 if quick else 1024) * MIB if device.type == "cuda" else (64 if quick else 256) * MIB
    gbps = copy_bandwidth_gbps(device, nbytes)
    results.append(check("memory.bandwidth", "pass", f"copy of {nbytes // MIB} MiB: {gbps:.4g} GB/s (read+write)",
                         {"gbps": round(gbps, 2), "bytes": nbytes}, str(device)))
    return results


# -- training -----------------------------------------------------------------------------------------


def lenet5_task(gen: "torch.Generator", device: "torch.device"):
    """LeNet-5 (LeCun et al. 1998: two 5x5 conv + pooling stages, three fully connected layers, tanh) on
    1x32x32 images of ten classes, each a fixed random pattern plus noise."""
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    )
    templates = torch.randn(10, 1, 32, 32, generator=gen)

    def batch(size: int):
        labels = torch.randint(0, 10, (size,), generator=gen)
        images = templates[labels] + 0.5 * torch.randn(size, 1, 32, 32, generator=gen)
        return images.to(device), labels.to(device)

    return model, model, batch, nn.CrossEntropyLoss(), 1e-3


def _sequence_model(cell: "torch.nn.Module", hidden: int):
    """A recurrent layer read at its last step by a linear head."""
    model = torch.nn.ModuleDict({"cell": cell, "head": torch.nn.Linear(hidden, 1)})

    def forward(x: "torch.Tensor") -> "torch.Tensor":
        out, _ = model["cell"](x)
        return model["head"](out[:, -1]).squeeze(-1)

    return model, forward


def rnn_task(gen: "torch.Generator", device: "torch.device"):
    """An Elman RNN (tanh) predicting the next value of sine waves of random frequency and phase."""
    model, forward = _sequence_model(torch.nn.RNN(1, 32, batch_first=True), 32)
    steps = torch.arange(25, dtype=torch.float32)

    def batch(size: int):
        freq = 0.1 + 0.4 * torch.rand(size, 1, generator=gen)
        phase = 2 * math.pi * torch.rand(size, 1, generator=gen)
        wave = torch.sin(freq * steps + phase)
        return wave[:, :-1, None].to(device), wave[:, -1].to(device)

    return model, forward, batch, torch.nn.MSELoss(), 1e-2


def lstm_task(gen: "torch.Generator", device: "torch.device"):
    """An LSTM on the adding problem (Hochreiter & Schmidhuber 1997): a sequence of (value, marker) pairs,
    two of them marked; the target is the sum of the two marked values."""
    model, forward = _sequence_model(torch.nn.LSTM(2, 32, batch_first=True), 32)
    length = 20

    def batch(size: int):
        values = torch.rand(size, length, generator=gen)
        marks = torch.zeros(size, length)
        first = torch.randint(0, length // 2, (size,), generator=gen)
        second = torch.randint(length // 2, length, (size,), generator=gen)
        rows = torch.arange(size)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        target = (values * marks).sum(dim=1)
        return torch.stack([values, marks], dim=-1).to(device), target.to(device)

    return model, forward, batch, torch.nn.MSELoss(), 1e-2


TASKS = {"lenet5": lenet5_task, "rnn": rnn_task, "lstm": lstm_task}


def train(name: str, device: "torch.device", steps: int, batch_size: int = 64) -> List[float]:
    """Train task ``name`` for ``steps`` Adam steps on ``device`` from a fixed seed; the loss per step."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model, forward, batch, loss_fn, lr = TASKS[name](gen, device)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        inputs, target = batch(batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(inputs), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def training_check(name: str, device: "torch.device", steps: int) -> Dict[str, Any]:
    start = time.perf_counter()
    losses = train(name, device, steps)
    seconds = time.perf_counter() - start
    first = statistics.fmean(losses[:LOSS_WINDOW])
    last = statistics.fmean(losses[-LOSS_WINDOW:])
    figures = {"steps": steps, "loss_first": round(first, 5), "loss_last": round(last, 5),
               "seconds": round(seconds, 3)}
    if not all(math.isfinite(x) for x in losses):
        return check(f"train.{name}", "fail", f"{name}: loss is not finite", figures, str(device))
    if last >= first:
        return check(f"train.{name}", "fail", f"{name}: loss did not fall ({first:.4g} -> {last:.4g})",
                     figures, str(device))
    return check(f"train.{name}", "pass", f"{name}: loss {first:.4g} -> {last:.4g} in {steps} steps",
                 figures, str(device))


# -- all-reduce ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(rank: int, world: int, backend: str, device_type: str, port: int, numel: int,
                      results: Any) -> None:
    import torch.distributed as dist

    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        data = torch.full((numel,), float(rank + 1), device=device)
        dist.all_reduce(data)
        synchronize(device)
        correct = bool(torch.all(data == world * (world + 1) / 2).item())

        def op() -> None:
            data.fill_(1.0)
            dist.all_reduce(data)

        # every rank must run the same number of all-reduces: agree on the largest batch any rank wants
        calls = torch.tensor([calls_per_batch(op, device)], dtype=torch.int64, device=device)
        dist.all_reduce(calls, op=dist.ReduceOp.MAX)
        seconds = time_op(op, device, calls=int(calls.item()))
        if rank == 0:
            results.put({"correct": correct, "seconds": seconds})
    finally:
        dist.destroy_process_group()


def allreduce_check(backend: str, world: int, device_type: str, nbytes: int) -> Dict[str, Any]:
    """All-reduce (sum) of an fp32 buffer over ``world`` processes, one per device: checks the sum and
    reports the bus bandwidth as nccl-tests define it, algbw * 2 (n - 1) / n."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    numel = nbytes // 4
    try:
        mp.start_processes(_allreduce_worker, nprocs=world, start_method="spawn",
                           args=(world, backend, device_type, _free_port(), numel, results))
    except Exception as exc:  # a worker failed: its error is the finding
        return check("allreduce", "fail", f"{backend} all-reduce over {world} ranks failed: "
                     f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}")
    outcome = results.get()
    busbw = numel * 4 / outcome["seconds"] * 2 * (world - 1) / world / 1e9
    figures = {"ranks": world, "bytes": numel * 4, "busbw_gbps": round(busbw, 2)}
    if not outcome["correct"]:
        return check("allreduce", "fail", f"{backend} all-reduce over {world} ranks gave a wrong sum", figures)
    return check("allreduce", "pass", f"{backend} all-reduce over {world} ranks: bus bandwidth "
                 f"{busbw:.4g} GB/s", figures)


# -- data directory -----------------------------------------------------------------------------------


def disk_check(directory: str, nbytes: int) -> Dict[str, Any]:
    """Sequential throughput of the filesystem holding ``directory``: buffered writes of a new file and
    one fsync, then, with the file dropped from the page cache (posix_fadvise DONTNEED), a sequential
    read. Through the page cache and the filesystem, so it is what a data loader sees, not the raw disk."""
    try:
        free = os.statvfs(directory)
    except OSError as exc:
        return check("disk.throughput", "fail", f"data directory {directory}: {exc.strerror or exc}")
    if free.f_bavail * free.f_frsize < 2 * nbytes:
        return check("disk.throughput", "warn", f"{directory}: less than {2 * nbytes // MIB} MiB free, "
                     "throughput not measured")
    block = os.urandom(8 * MIB)
    try:
        fd, path = tempfile.mkstemp(prefix=".dlsetup-verify-", dir=directory)
    except OSError as exc:
        return check("disk.throughput", "fail", f"cannot write in {directory}: {exc.strerror or exc}")
    try:
        start = time.perf_counter()
        for _ in range(nbytes // len(block)):
            os.write(fd, block)
        os.fsync(fd)
        write_s = time.perf_counter() - start
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(fd, 0, os.SEEK_SET)
        buffer = bytearray(len(block))
        start = time.perf_counter()
        while os.readv(fd, [buffer]):
            pass
        read_s = time.perf_counter() - start
    except OSError as exc:
        return check("disk.throughput", "fail", f"I/O error in {directory}: {exc.strerror or exc}")
    finally:
        os.close(fd)
        os.unlink(path)
    write, read = nbytes / write_s / 1e6, nbytes / read_s / 1e6
    figures = {"write_mbps": round(write, 1), "read_mbps": round(read, 1), "bytes": nbytes}
    message = f"{directory}: write+fsync {write:.0f} MB/s, uncached read {read:.0f} MB/s ({nbytes // MIB} MiB)"
    slow = read < DISK_READ_WARN_MBPS or write < DISK_WRITE_WARN_MBPS
    return check("disk.throughput", "warn" if slow else "pass", message + (" - slow" if slow else ""),
                 figures, directory)


# -- the run ------------------------------------------------------------------------------------------


def framework_info() -> Dict[str, Any]:
    nccl = None
    if torch.cuda.is_available() and torch.distributed.is_nccl_available():
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    return {"name": "torch", "version": torch.__version__, "cuda": torch.version.cuda,
            "hip": torch.version.hip, "nccl": nccl}


def run(quick: bool, data_dir: str) -> Dict[str, Any]:
    start = time.perf_counter()
    document: Dict[str, Any] = {
        "kind": "verify", "payload_version": PAYLOAD_VERSION, "host": socket.gethostname(),
        "python": sys.executable, "quick": quick, "framework": None, "devices": [], "checks": [],
    }
    checks: List[Dict[str, Any]] = document["checks"]
    if torch is None:
        checks.append(check("framework.import", "fail", f"torch cannot be imported by {sys.executable}: "
                            f"{TORCH_ERROR}"))
    else:
        document["framework"] = framework_info()
        devices = select_devices()
        document["devices"] = [describe_device(d) for d in devices]
        checks.append(check("framework.import", "pass", f"torch {torch.__version__} imports; devices: "
                            + ", ".join(f"{d['device']} ({d['name']})" for d in document["devices"])))
        steps = 30 if quick else 100
        for device in devices:
            checks.extend(training_check(name, device, steps) for name in TASKS)
            checks.extend(throughput_checks(device, quick))
        if len(devices) > 1:
            checks.append(allreduce_check("nccl", len(devices), "cuda", (64 if quick else 512) * MIB))
    checks.append(disk_check(data_dir, (128 if quick else 1024) * MIB))
    document["elapsed_s"] = round(time.perf_counter() - start, 2)
    return document


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quick", action="store_true", help="fewer steps and smaller buffers")
    parser.add_argument("--data-dir", default=sys.prefix, help="directory whose filesystem to measure")
    args = parser.parse_args(argv)
    document = run(args.quick, args.data_dir)
    if args.json:
        print(json.dumps(document))
    else:
        for item in document["checks"]:
            print(f"{item['status']:4}  {item['id']:18} {item['device'] or '':8} {item['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
