"""Bytes from outside the fleet on a first provision: 1 host, and N hosts (default 8) with and without the
controller-side cache (a mirror built on the fly, tests/lab/fleet.py's namespace hosts, real SSH).

"Outside" is a counting HTTP server on the fleet's bridge address standing in for the internet: it serves the
lab's wheelhouse (the local CPU torch wheel and its dependencies) as a PEP 503 index, and every byte it sends
is counted, and so are the .deb packages the controller fetches from the distribution's archive into its cache
(the sizes of the cache mirror's apt pool). Each scenario provisions a fresh fleet with the CPU plan
(``--pip-index-url`` that server): without the cache every host downloads the wheels from it, with the cache the
controller fetches them once into its mirror and the hosts take them from there, through their SSH
connections. (The fleet root already holds the distribution packages of the CPU plan, so the hosts' apt
fetches nothing; the cache still holds the plan's whole apt closure, fetched once by the controller, and that
counts.) Reported per scenario: bytes from outside, requests, wall time; then the ratios. The last line is one
JSON object with ``outside_bytes_ratio`` (bytes from outside at N hosts with the cache, divided by one
host's).
Needs root. Usage: ``.venv/bin/python benchmarks/fleet_download.py [--hosts 8]``.
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
from lab import wheels  # noqa: E402
from lab.fleet import Fleet  # noqa: E402


class Counter:
    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0
        self.lock = threading.Lock()


def _handler(counter: Counter) -> Any:
    class Counting(http.server.SimpleHTTPRequestHandler):
        def copyfile(self, source: Any, outputfile: Any) -> None:  # every body byte sent goes through here
            while True:
                block = source.read(1 << 16)
                if not block:
                    break
                outputfile.write(block)
                with counter.lock:
                    counter.bytes += len(block)

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


def scenario(work: Path, hosts: int, cache: bool, index_root: Path) -> Dict[str, Any]:
    """Provision a fresh fleet of ``hosts`` once; bytes the outside server sent, requests, wall time."""
    fleet = Fleet(work / f"fleet-{hosts}-{'cache' if cache else 'nocache'}", hosts)
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
        try:
            inventory = fleet.inventory(work / f"hosts-{hosts}-{cache}.yml")
            args = [sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "--yes", "--json",
                    "--pip-index-url", f"http://{fleet.gateway}:{server.server_address[1]}/simple/"] + (
                        [] if cache else ["--no-cache"])
            start = time.monotonic()
            run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=3600)
            wall = time.monotonic() - start
            if run.returncode != 0:
                raise SystemExit(f"provision of {hosts} host(s) failed: {run.stderr[-2000:]}")
        finally:
            server.shutdown()
            server.server_close()
    controller_apt = _controller_apt_bytes(home / "cache" / "dlsetup" / "mirror")
    return {"hosts": hosts, "cache": cache, "outside_bytes": counter.bytes + controller_apt,
            "index_bytes": counter.bytes, "controller_apt_bytes": controller_apt, "requests": counter.requests,
            "wall_s": round(wall, 1)}


def _controller_apt_bytes(cache: Path) -> int:
    """The .deb packages the controller fetched from the distribution's archive into its cache (bytes from
    outside too, which the counting server does not see): the sizes of the cache mirror's apt pool."""
    total = 0
    for manifest in cache.glob("*/manifest.json"):
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        total += sum(int(entry["size"]) for rel, entry in files.items() if rel.startswith("apt/") and "/pool/" in rel)
    return total


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=8)
    options = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="dlsetup-fleet-download-") as scratch:
        work = Path(scratch)
        index_root = outside_index(work)
        rows = [scenario(work, 1, False, index_root), scenario(work, options.hosts, False, index_root),
                scenario(work, options.hosts, True, index_root)]
    one, without, with_cache = rows
    print(f"{'hosts':>5} {'cache':>5} {'outside MiB':>12} {'index MiB':>10} {'apt MiB':>8} {'requests':>8} "
          f"{'wall s':>7}")
    for row in rows:
        print(f"{row['hosts']:>5} {str(row['cache']):>5} {row['outside_bytes'] / 2**20:>12.1f} "
              f"{row['index_bytes'] / 2**20:>10.1f} {row['controller_apt_bytes'] / 2**20:>8.1f} "
              f"{row['requests']:>8} {row['wall_s']:>7}")
    ratio = with_cache["outside_bytes"] / one["outside_bytes"] if one["outside_bytes"] else None
    ratio_without = without["outside_bytes"] / one["outside_bytes"] if one["outside_bytes"] else None
    print(f"bytes from outside at {options.hosts} hosts / 1 host: {ratio_without:.2f}x without the cache, "
          f"{ratio:.2f}x with it" if ratio is not None and ratio_without is not None else "no bytes counted")
    print(json.dumps({"outside_bytes_ratio": ratio, "outside_bytes_ratio_without_cache": ratio_without,
                      "hosts": options.hosts, "scenarios": rows,
                      "wall_s": {f"{r['hosts']}-{'cache' if r['cache'] else 'nocache'}": r["wall_s"] for r in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
