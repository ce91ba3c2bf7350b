"""The compatibility tables: every row cites its source, and the facts the planner leans on hold."""

from __future__ import annotations

import datetime
import itertools

import pytest

from dlsetup import gpudb
from dlsetup.parsers.nvidia import NVML_ARCHITECTURES
from dlsetup.plan import compat

TABLES = compat.read_tables()


def rows():
    for name, table in TABLES.items():
        for key, value in table.items():
            if isinstance(value, list):
                for row in value:
                    yield f"{name}.{key}", row
            elif isinstance(value, dict) and key == "repositories":
                for repo, row in value.items():
                    yield f"{name}.{key}.{repo}", row


ROWS = list(rows())


@pytest.mark.parametrize("where,row", ROWS, ids=[f"{w}[{i}]" for i, (w, _) in enumerate(ROWS)])
def test_every_row_carries_a_source(where, row):
    assert str(row.get("source", "")).startswith("https://"), where


def test_tables_are_all_read_and_typed():
    data = compat.load()
    assert set(TABLES) == set(compat.TABLES)
    assert len(ROWS) > 50
    assert data.cuda_release("13.0").toolkit_min_driver == "580.65.06"
    assert data.cuda_release("12.8").compat_min_driver == "525.60.13"


def test_cuda_13_dropped_maxwell_pascal_volta():
    data = compat.load()
    for cc in ("5.2", "6.1", "7.0"):
        arch = data.architecture(cc)
        assert arch.last_driver_branch == 580 and not arch.allows_cuda("13.0")
    assert data.architecture("7.5").allows_cuda("13.0")


def test_blackwell_needs_open_modules_and_a_recent_branch():
    arch = compat.load().architecture("12.0")
    assert arch.name == "Blackwell" and arch.open_modules_required
    assert not arch.allows_branch(550) and arch.allows_branch(580)


def test_every_torch_cuda_build_is_in_the_cuda_table():
    data = compat.load()
    built = {b.cuda for b in data.torch_cuda_builds}
    for release in data.torch:
        for cuda in release.cuda:
            assert data.cuda_release(cuda) and cuda in built, (release.version, cuda)
    assert any(r.version == "2.13.0" and "3.11" in r.python for r in data.torch)


def test_default_releases_exist():
    data = compat.load()
    assert any(compat.minor(r.version) == data.torch_default for r in data.torch)
    assert any(compat.minor(r.version) == data.tensorflow_default for r in data.tensorflow)


def test_driver_branches_do_not_go_backwards():
    branches = compat.load().driver_branches
    assert [b.branch for b in branches] == sorted(b.branch for b in branches)
    assert [compat.vtuple(b.max_cuda) for b in branches] == sorted(compat.vtuple(b.max_cuda) for b in branches)


def test_torch_sends_volta_to_the_cuda_12_6_build():
    """PyTorch 2.8 and 2.11 compile their 12.8/12.9 builds from Turing up; only 12.6 still covers Volta."""
    builds = {b.cuda: b for b in compat.load().torch_cuda_builds}
    assert [builds[c].cc_min for c in ("12.6", "12.8", "12.9", "13.0")] == ["5.0", "7.5", "7.5", "7.5"]


def test_toolkit_drivers_are_the_release_notes_figures():
    data = compat.load()
    expected = {"11.8": "520.61.05", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03",
                "13.1": "590.44.01", "13.2": "595.45.04", "13.3": "610.43.02"}
    assert {v: data.cuda_release(v).toolkit_min_driver for v in expected} == expected
    assert data.cuda_release("11.8").compat_min_driver == "450.80.02"


def test_rocm_targets_are_the_matrix_columns():
    """gfx1030 (RDNA2) is listed from 6.4.0 on; RDNA4 and CDNA4 only in the 7.x columns."""
    releases = {r.version: r for r in compat.load().rocm}
    assert releases["6.4"].gfx == ("gfx942", "gfx90a", "gfx908", "gfx1100", "gfx1030")
    for version in ("7.0", "7.1", "7.2"):
        assert {"gfx950", "gfx1201", "gfx1030"} <= set(releases[version].gfx)
        assert "gfx1151" not in releases[version].gfx
    assert all(r.os == ("ubuntu 22.04", "ubuntu 24.04") for r in releases.values())


# -- table consistency: what one table names, another must hold ------------------------------------

BRANCH_TYPES = {"new-feature", "production", "long-term"}


def test_every_table_says_when_it_was_checked():
    """One snapshot: every table carries the same valid as_of date (a table left behind stands out)."""
    dates = {name: table.get("as_of") for name, table in TABLES.items()}
    assert all(isinstance(d, str) for d in dates.values()), dates
    parsed = {name: datetime.date.fromisoformat(d) for name, d in dates.items()}
    assert len(set(parsed.values())) == 1, dates


def test_every_rocm_build_of_torch_is_in_the_rocm_table():
    known = {r["version"] for r in TABLES["rocm"]["release"]}
    for release in TABLES["pytorch"]["release"]:
        assert set(release["rocm"]) <= known, (release["version"], release["rocm"])


def test_every_cuda_version_a_framework_names_is_in_the_cuda_table():
    known = {c["version"] for c in TABLES["cuda"]["cuda"]}
    named = [(f"torch {r['version']}", v) for r in TABLES["pytorch"]["release"]
             for v in (*r["cuda"], *r.get("cuda_experimental", ()), *([r["pypi_cuda"]] if "pypi_cuda" in r else []))]
    named += [(f"torch build {b['cuda']}", b["cuda"]) for b in TABLES["pytorch"]["cuda_build"]]
    named += [(f"tensorflow {r['version']}", r["cuda"]) for r in TABLES["tensorflow"]["release"]]
    named += [(f"jax {v['extra']}", v["cuda"]) for v in TABLES["jax"]["variant"] if "cuda" in v]
    missing = [(who, v) for who, v in named if v not in known]
    assert not missing


def test_experimental_and_pypi_builds_are_builds_of_that_release():
    for release in TABLES["pytorch"]["release"]:
        assert set(release["cuda_experimental"]) <= set(release["cuda"]), release["version"]
        assert release.get("pypi_cuda", release["cuda"][0]) in release["cuda"], release["version"]


def test_default_torch_line_is_the_newest_release():
    newest = max((r["version"] for r in TABLES["pytorch"]["release"]), key=compat.vtuple)
    assert TABLES["pytorch"]["default"] == compat.minor(newest)


def test_every_driver_branch_referenced_exists():
    branches = {b["branch"] for b in TABLES["nvidia"]["driver_branch"]}
    referenced = [(a["name"], a[k]) for a in TABLES["nvidia"]["architecture"]
                  for k in ("first_driver_branch", "last_driver_branch") if k in a]
    referenced += [(f"R{b['branch']} superseded_by", b["superseded_by"])
                   for b in TABLES["nvidia"]["driver_branch"] if "superseded_by" in b]
    # a toolkit floor given as a bare branch ("615") must name a branch of the table
    referenced += [(f"CUDA {c['version']}", int(c["toolkit_min_driver"]))
                   for c in TABLES["cuda"]["cuda"] if "." not in c["toolkit_min_driver"]]
    assert [r for r in referenced if r[1] not in branches] == []


def test_driver_branch_lifecycle_fields():
    for b in TABLES["nvidia"]["driver_branch"]:
        assert b["type"] in BRANCH_TYPES, b["branch"]
        if "end_of_life" in b:
            datetime.date.fromisoformat(b["end_of_life"])
        if b["type"] in ("production", "long-term"):
            assert "end_of_life" in b, f"R{b['branch']}: NVIDIA dates production and long-term branches"
        if "superseded_by" in b:
            assert b["type"] == "new-feature" and b["superseded_by"] > b["branch"], b["branch"]
        assert b.get("open_modules_only", False) in (True, False)


def test_each_cuda_version_has_a_branch_that_reports_it():
    """A toolkit the table lists must be reachable: some branch's max_cuda covers it."""
    top = max(compat.vtuple(b.max_cuda) for b in compat.load().driver_branches)
    for cuda in compat.load().cuda:
        assert compat.vtuple(cuda.version) <= top, cuda.version


def test_compute_capability_ranges_do_not_overlap():
    """nvidia.toml is the one cc -> architecture map: lookups take the first match, so ranges must be disjoint."""
    ranges = sorted((compat.vtuple(a.cc_min), compat.vtuple(a.cc_max), a.name) for a in compat.load().architectures)
    assert all(low <= high for low, high, _ in ranges)
    for (_, high, name), (next_low, _, next_name) in itertools.pairwise(ranges):
        assert high < next_low, (name, next_name)


def test_every_architecture_gpudb_or_the_parsers_name_is_in_nvidia_table():
    """gpudb reads nvidia.toml itself; the NVML architecture ids the parser maps name rows of the same table."""
    names = {a.name for a in compat.load().architectures}
    assert set(NVML_ARCHITECTURES.values()) <= names
    for major in range(1, 14):
        for minor_ in range(10):
            cc = f"{major}.{minor_}"
            arch = compat.load().architecture(cc)
            assert gpudb.architecture_for_cc(cc) == (arch.name if arch else None), cc


def test_gpu_table_rows_agree_with_nvidia_table():
    for spec in gpudb.all_specs():
        if spec.vendor == "nvidia":
            arch = compat.load().architecture(spec.compute_capability)
            assert arch is not None and arch.name == spec.architecture, spec.key


def test_blackwell_capabilities_arrive_with_their_toolkits():
    """10.0/12.0 came with CUDA 12.8 (570), 10.3/12.1 with CUDA 12.9 (575); 10.7 and 11.0 are not Blackwell."""
    data = compat.load()
    firsts = {cc: data.architecture(cc).first_driver_branch for cc in ("10.0", "10.3", "12.0", "12.1")}
    assert firsts == {"10.0": 570, "10.3": 575, "12.0": 570, "12.1": 575}
    assert not data.architecture("10.3").allows_branch(570) and data.architecture("10.3").allows_branch(575)
    assert {data.architecture(cc).name for cc in ("10.7", "11.0")}.isdisjoint({"Blackwell"})
    for cc, first in firsts.items():
        toolkit = data.cuda_release(TABLES["nvidia"]["architecture"][
            [a.cc_min for a in data.architectures].index(cc)]["min_cuda"])
        assert compat.vtuple(toolkit.toolkit_min_driver)[0] == first, cc


def test_per_os_key_overrides_are_pinned_pairs():
    """An [[os]] row that replaces the CUDA repository key gives both the key file and its full fingerprint."""
    overrides = 0
    for row in TABLES["os"]["os"]:
        has = {"cuda_key_url" in row, "cuda_key_fingerprint" in row}
        assert len(has) == 1, row["codename"]
        if "cuda_key_url" in row:
            overrides += 1
            assert row["cuda_key_url"].startswith("https://") and row["cuda_repo"] in row["cuda_key_url"]
            fpr = row["cuda_key_fingerprint"]
            assert len(fpr) == 40 and int(fpr, 16) >= 0 and fpr == fpr.upper()
            assert row["cuda_key_url"].lower().endswith(fpr[-8:].lower() + ".pub")
    assert overrides >= 1


def test_rocm_layouts():
    """TheRock releases (7.14 on) change package names and paths; every row says which layout it has."""
    layouts = {r["version"]: r["layout"] for r in TABLES["rocm"]["release"]}
    assert set(layouts.values()) <= {"legacy", "therock"}
    for version, layout in layouts.items():
        assert layout == ("therock" if compat.vtuple(version) >= (7, 14) else "legacy"), version


def test_jax_python_floors_never_go_down():
    releases = sorted(TABLES["jax"]["release"], key=lambda r: compat.vtuple(r["version"]))
    floors = [compat.vtuple(r["python_min"]) for r in releases]
    assert floors == sorted(floors)
    for release in releases:
        assert {v["extra"] for v in TABLES["jax"]["variant"]} <= set(release["extras"]), release["version"]


def test_check_rules_use_the_cuda_tables_floors():
    """advice.py's compute capability floors are the newest CUDA's min_cc and the lowest of the 12.x/13.x lines."""
    from dlsetup import advice

    rows = compat.load().cuda
    newest = max(rows, key=lambda c: compat.vtuple(c.version))
    current = [c for c in rows if compat.vtuple(c.version)[0] >= 12]
    assert advice.CUDA_CURRENT_MIN_CC == compat.vtuple(newest.min_cc)
    assert advice.CUDA_ANY_MIN_CC == min(compat.vtuple(c.min_cc) for c in current)


def test_aarch64_cuda_builds_are_builds_of_that_release():
    """The CUDA builds a torch release has for aarch64 (Grace, sbsa) are among its builds; every architecture
    planned for names NVIDIA's repository folder and Debian's architecture; every system has an x86_64 CUDA
    repository, and NVIDIA's folders are the only ones named."""
    data = compat.load()
    for release in data.torch:
        assert set(release.cuda_aarch64) <= set(release.cuda), release.version
    assert any(r.cuda_aarch64 for r in data.torch)
    assert {(a.name, a.cuda_repo_arch, a.deb_arch) for a in data.arches} == {
        ("x86_64", "x86_64", "amd64"), ("aarch64", "sbsa", "arm64")}
    for system in data.systems:
        assert "x86_64" in system.cuda_arches and set(system.cuda_arches) <= {"x86_64", "sbsa"}, system.key
    assert not any(r.cuda_aarch64 for r in data.tensorflow)
