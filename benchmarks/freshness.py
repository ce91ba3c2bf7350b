#!/usr/bin/env python3
"""How current dlsetup's shipped tables are: the newest torch, TensorFlow, JAX and CUDA runtime on the package
index pip is configured with, against the newest each table knows.

The index is asked the way ``dlsetup plan`` asks it (pip's index URL, certificate and proxy; PEP 691 JSON or
PEP 503 HTML), with a fresh cache unless ``--cache`` is given, and the lookup is timed. A release line the
index has and the tables do not is listed as missing (``dlsetup plan`` then plans it as unverified); a newer
patch of a known line is only reported (plans pin the release line, so pip takes it anyway). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlsetup import pkgindex  # noqa: E402
from dlsetup.plan import compat  # noqa: E402
from dlsetup.plan.compat import minor, vtuple  # noqa: E402

PROJECTS = ("torch", "tensorflow", "jax", "nvidia-cuda-runtime")


def tables_newest(data: compat.Compat) -> dict:
    """The newest version each table knows, per index project."""
    return {
        "torch": max((t.version for t in data.torch), key=vtuple),
        "tensorflow": max((t.version for t in data.tensorflow), key=vtuple),
        "jax": max((j.version for j in data.jax_releases), key=vtuple, default=None),
        "nvidia-cuda-runtime": max((c.version for c in data.cuda), key=vtuple),
    }


def compare(name: str, project: pkgindex.Project | None, known: str | None) -> dict:
    if project is None or not project.all_releases():
        return {"index_newest": None, "tables_newest": known, "status": "not answered"}
    newest = str(project.all_releases()[0])
    entry = {"index_newest": newest, "uploaded": project.uploaded(newest), "tables_newest": known}
    if known is None:
        entry["status"] = "not in the tables"
    elif vtuple(minor(newest)) > vtuple(minor(known)):
        entry["status"] = "missing"
    elif name != "nvidia-cuda-runtime" and vtuple(newest) > vtuple(known):
        entry["status"] = "newer patch"
    else:
        entry["status"] = "current"
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-index-url", help="ask this index instead of pip's configured one")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for all lookups (default: dlsetup's)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", dest="cache", action="store_true", help="use dlsetup's index cache")
    cache.add_argument("--no-cache", dest="cache", action="store_false", help="a fresh cache (the default)")
    parser.set_defaults(cache=False)
    args = parser.parse_args()

    data = compat.load()
    settings = pkgindex.pip_settings(args.pip_index_url)
    if settings is None:
        print(json.dumps({"error": "pip names no package index"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = None if args.cache else Path(tmp)
        start = time.perf_counter()
        live = pkgindex.lookup(pkgindex.pages(PROJECTS, settings), settings, timeout=args.timeout,
                               directory=directory)
        lookup_s = time.perf_counter() - start

    known = tables_newest(data)
    projects = {name: compare(name, live.project(name), known[name]) for name in PROJECTS}
    missing = [f"{'CUDA' if n == 'nvidia-cuda-runtime' else n} {minor(e['index_newest'])}"
               for n, e in projects.items() if e["status"] == "missing"]

    print(f"index: {pkgindex.redact(settings.index_url)} (asked in {lookup_s * 1000:.0f} ms)")
    print(f"tables: as of {data.oldest_as_of or 'unknown'}")
    print(f"{'project':<22} {'index newest':<14} {'uploaded':<11} {'tables newest':<14} status")
    for name, e in projects.items():
        print(f"{name:<22} {e['index_newest'] or '-':<14} {e.get('uploaded') or '-':<11} "
              f"{e['tables_newest'] or '-':<14} {e['status']}")
    for name, e in projects.items():
        if e["status"] == "missing":
            print(f"missing: {name}: {e['index_newest']} on the index, the tables stop at {e['tables_newest']}")
    for failure in live.failures:
        print(f"index failure: {failure}")
    summary = {
        "index": pkgindex.redact(settings.index_url),
        "tables_as_of": dict(data.as_of),
        "lookup_s": round(lookup_s, 3),
        "projects": projects,
        "missing": missing,
        "failures": list(live.failures),
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
