"""Bytes from outside the fleet on a first provision: 1 host, and N hosts (default 8) with and without the
controller-side cache (a mirror built on the fly, tests/lab/fleet.py's namespace hosts, real SSH), for the CPU
plan and for the NVIDIA plan.

"Outside" is a counting HTTP server on the fleet's bridge address standing in for the internet: it serves the
lab's wheelhouse (the local CPU torch wheel and its dependencies) as a PEP 503 index, and every byte it sends
is counted, and so are the .deb packages the controller fetches from the distribution's archive into its cache
(the sizes of the cache mirror's apt pool). Each scenario provisions a fresh fleet with the CPU plan
(``--pip-index-url`` that server): without the cache every host downloads the wheels from it, with the cache the
controller fetches them once into its mirror and the hosts take them from there, through their SSH
connections. (The fleet root already holds the distribution packages of the CPU plan, so the hosts' apt
fetches nothing; the cache still holds the plan's whole apt closure, fetched once by the controller, and that
counts.)

The NVIDIA plan: each host shows a Tesla T4 on its PCI bus (``Fleet(fake_gpu=...)``, in its own mount namespace),
so the probe finds it and the planner plans the NVIDIA driver. The outside server also serves the lab's signed
stand-ins of NVIDIA's repositories (tests/lab/vendor_repos.py, from tests/lab/vendors/nvidia.toml), and a
config file names them as the site's ``repositories: cuda`` (url, key_url, key_fingerprint), so the plan, and
with it what the cache fetches, names the stand-in. The run applies the driver role only (``-t nvidia_driver``,
which the cache follows: it fetches what the run's roles install): the hosts have no kernel of their own to
build a module for, and NVIDIA's CUDA framework wheels have no stand-in. ``nvidia_driver_persistence_daemon:
false`` (-e; not a mirror variable): the stand-in driver has no nvidia-persistenced.

Reported per scenario: bytes from outside, requests, wall time; then the ratios. The last line is one JSON
object with ``outside_bytes_ratio`` (the CPU plan: bytes from outside at N hosts with the cache, divided by one
host's), ``nvidia_outside_bytes_ratio`` (the same for the NVIDIA plan), both ratios without the cache, and the
wall times of every scenario.
Needs root. Usage: ``.venv/bin/python benchmarks/fleet_download.py [--hosts 8] [--plans cpu,nvidia]``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dlsetup.mirror.build import write_simple_index  # noqa: E402
from lab import vendor_repos, wheels  # noqa: E402
from lab.fleet import Fleet  # noqa: E402

#: the PCI ids each host of the NVIDIA scenarios shows: a Tesla T4 (Turing), a 3D controller (compute only)
TESLA_T4 = ("0x10de", "0x1eb8", "0x030200")


class Counter:
    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0
        self.kinds: Dict[str, int] = {}  #: bytes per top folder of the outside root: simple, wheels, vendors
        self.lock = threading.Lock()


def _handler(counter: Counter) -> Any:
    class Counting(http.server.SimpleHTTPRequestHandler):
        def copyfile(self, source: Any, outputfile: Any) -> None:  # every body byte sent goes through here
            kind = self.path.lstrip("/").split("/", 1)[0]
            while True:
                block = source.read(1 << 16)
                if not block:
                    break
                outputfile.write(block)
                with counter.lock:
                    counter.bytes += len(block)
                    counter.kinds[kind] = counter.kinds.get(kind, 0) + len(block)

        def send_head(self) -> Any:
            with counter.lock:
                counter.requests += 1
            return super().send_head()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
            pass
    return Counting


def outside_index(work: Path) -> Path:
    """A PEP 503 index over the lab's wheelhouse: the stand-in for the package index on the internet."""
    root = work / "outside"
    (root / "wheels").mkdir(parents=True)
    for wheel in wheels.wheelhouse().glob("*.whl"):
        try:
            os.link(wheel, root / "wheels" / wheel.name)
        except OSError:
            (root / "wheels" / wheel.name).write_bytes(wheel.read_bytes())
    write_simple_index(root)
    return root


def site_config(path: Path, base: str, fingerprint: str) -> Path:
    """The config file of the NVIDIA scenarios: NVIDIA's CUDA repository is the site's, the stand-in on the
    outside server (``{cuda_repo}``: debian12 on the fleet's Debian 12 hosts)."""
    path.write_text(json.dumps({"repositories": {"cuda": {
        "url": f"{base}vendors/nvidia/{{cuda_repo}}/", "key_url": f"{base}vendors/key.asc",
        "key_fingerprint": fingerprint}}}, indent=2))  # JSON is YAML
    return path


def scenario(work: Path, hosts: int, cache: bool, index_root: Path, plan: str = "cpu",
             vendor_fingerprint: str = "") -> Dict[str, Any]:
    """Provision a fresh fleet of ``hosts`` once; bytes the outside server sent, requests, wall time."""
    name = f"{plan}-{hosts}-{'cache' if cache else 'nocache'}"
    fleet = Fleet(work / f"fleet-{name}", hosts, fake_gpu=TESLA_T4 if plan == "nvidia" else None)
    counter = Counter()
    fleet.files = {h.name: {"/etc/pip.conf": f"[global]\ntrusted-host = {fleet.gateway}\n"} for h in fleet.hosts}
    home = Path(tempfile.mkdtemp(dir=work, prefix="home-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(home / "cache"), "XDG_STATE_HOME": str(home / "state"),
           "XDG_DATA_HOME": str(home / "data"), "PIP_TRUSTED_HOST": fleet.gateway,
           "DLSETUP_MIRROR_PORT": str(20000 + os.getpid() % 20000)}
    with fleet:  # the bridge, and with it the address the outside server listens on, exists from here
        server = http.server.ThreadingHTTPServer((fleet.gateway, 0), functools.partial(
            _handler(counter), directory=str(index_root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://{fleet.gateway}:{server.server_address[1]}/"
        try:
            inventory = fleet.inventory(work / f"hosts-{name}.yml")
            args = [sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "--yes", "--json"]
            if plan == "nvidia":
                args += ["--offline", "--config", str(site_config(work / f"site-{name}.yml", base, vendor_fingerprint)),
                         "-t", "nvidia_driver", "-e", json.dumps({"nvidia_driver_persistence_daemon": False})]
            else:
                args += ["--pip-index-url", f"{base}simple/"]
            args += [] if cache else ["--no-cache"]
            start = time.monotonic()
            run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=3600)
            wall = time.monotonic() - start
            if run.returncode != 0:
                raise SystemExit(f"provision of {hosts} host(s) ({name}) failed: {run.stdout[-3000:]}\n"
                                 f"{run.stderr[-3000:]}")
            _check_hosts(run.stdout, hosts, plan)
            if plan == "nvidia":
                _check_driver_installed(fleet)
            cache_used = cache and not cached_aside(run.stderr)
        finally:
            server.shutdown()
            server.server_close()
    controller_apt = _controller_apt_bytes(home / "cache" / "dlsetup" / "mirror", base)
    return {"plan": plan, "hosts": hosts, "cache": cache, "outside_bytes": counter.bytes + controller_apt,
            "index_bytes": counter.kinds.get("simple", 0) + counter.kinds.get("wheels", 0),
            "vendor_bytes": counter.kinds.get("vendors", 0), "controller_apt_bytes": controller_apt,
            "requests": counter.requests, "cache_used": cache_used,
            "wall_s": round(wall, 1)}


def cached_aside(stderr: str) -> bool:
    """Whether the run said it went without the controller-side cache (it stands aside with a warning)."""
    return "no controller-side cache" in stderr


def _check_driver_installed(fleet: Fleet) -> None:
    """Every host has NVIDIA's branch pinning package installed (dpkg's status in its own layer)."""
    for host in fleet.hosts:
        status = (host.upper / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
        pinned = [block for block in status.split("\n\n") if block.startswith("Package: nvidia-driver-pinning-")
                  and "Status: install ok installed" in block]
        if not pinned:
            raise SystemExit(f"{host.name}: no NVIDIA driver installed (no nvidia-driver-pinning-* package)")


def _check_hosts(stdout: str, hosts: int, plan: str) -> None:
    """Every host converged (``provision --json``: one line per host), with the NVIDIA driver role planned
    for the NVIDIA plan."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if len(lines) != hosts or any(line.get("failed") or line.get("unreachable") for line in lines):
        raise SystemExit(f"provision ({plan}): not every host converged: {lines}")
    if plan == "nvidia" and not all("nvidia_driver" in line.get("roles", []) for line in lines):
        raise SystemExit(f"provision ({plan}): a host was not planned the NVIDIA driver: {lines}")


def _controller_apt_bytes(cache: Path, counted: str) -> int:
    """The .deb packages the controller fetched from the distribution's archive into its cache (bytes from
    outside too, which the counting server does not see): the sizes of the cache mirror's apt pool, but for the
    packages that came from the counting server (``counted``, the stand-in vendor repositories)."""
    total = 0
    for manifest in cache.glob("*/manifest.json"):
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        total += sum(int(entry["size"]) for rel, entry in files.items()
                     if rel.startswith("apt/") and "/pool/" in rel and not str(entry.get("origin", "")).startswith(
                         counted))
    return total


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--plans", default="cpu,nvidia", help="comma-separated: cpu, nvidia (default both)")
    options = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    plans = [p for p in options.plans.split(",") if p]
    if not plans or set(plans) - {"cpu", "nvidia"}:
        raise SystemExit(f"--plans: cpu, nvidia or both, not {options.plans!r}")
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dlsetup-fleet-download-") as scratch:
        work = Path(scratch)
        index_root = outside_index(work)
        fingerprint = vendor_repos.build(index_root / "vendors").fingerprint if "nvidia" in plans else ""
        for plan in plans:
            for hosts, cache in ((1, False), (options.hosts, False), (options.hosts, True)):
                rows.append(scenario(work, hosts, cache, index_root, plan, fingerprint))
    print(f"{'plan':>6} {'hosts':>5} {'cache':>5} {'outside MiB':>12} {'index MiB':>10} {'vendor KiB':>10} "
          f"{'apt MiB':>8} {'requests':>8} {'wall s':>7}")
    for row in rows:
        print(f"{row['plan']:>6} {row['hosts']:>5} {str(row['cache_used']):>5} {row['outside_bytes'] / 2**20:>12.2f} "
              f"{row['index_bytes'] / 2**20:>10.1f} {row['vendor_bytes'] / 2**10:>10.1f} "
              f"{row['controller_apt_bytes'] / 2**20:>8.1f} {row['requests']:>8} {row['wall_s']:>7}")
    summary: Dict[str, Any] = {}
    for plan in plans:
        one, without, with_cache = [r for r in rows if r["plan"] == plan]
        ratio = with_cache["outside_bytes"] / one["outside_bytes"] if one["outside_bytes"] else None
        ratio_without = without["outside_bytes"] / one["outside_bytes"] if one["outside_bytes"] else None
        print(f"{plan} plan, bytes from outside at {options.hosts} hosts / 1 host: {ratio_without:.2f}x without the "
              f"cache, {ratio:.2f}x with it" if ratio is not None and ratio_without is not None
              else f"{plan} plan: no bytes counted")
        prefix = "" if plan == "cpu" else f"{plan}_"
        summary.update({f"{prefix}outside_bytes_ratio": ratio,
                        f"{prefix}outside_bytes_ratio_without_cache": ratio_without})
    print(json.dumps({**summary, "hosts": options.hosts, "scenarios": rows,
                      "wall_s": {f"{r['plan']}-{r['hosts']}-{'cache' if r['cache'] else 'nocache'}": r["wall_s"]
                                 for r in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
