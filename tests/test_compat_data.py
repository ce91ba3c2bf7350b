"""The compatibility tables: every row cites its source, and the facts the planner leans on hold."""

from __future__ import annotations

import pytest

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
