"""dlsetup check says when the shipped compatibility data is getting old, and benchmarks/freshness.py's
comparison of the tables with an index (over the recorded answers served from 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest

from dlsetup.advice import DATA_MAX_AGE_DAYS, data_age, run_checks
from dlsetup.model import HostProfile
from dlsetup.plan import compat
from tests.conftest import REPO
from tests.index_server import IndexServer


def later(as_of: str, days: int) -> str:
    return (date.fromisoformat(as_of) + timedelta(days=days)).isoformat()


@pytest.mark.parametrize("days, severity", [(0, "pass"), (DATA_MAX_AGE_DAYS, "pass"), (DATA_MAX_AGE_DAYS + 1, "warn"),
                                            (400, "warn")])
def test_data_older_than_90_days_warns(days, severity):
    [finding] = data_age(later("2026-11-28", days), "2026-11-28")
    assert (finding.id, finding.severity) == ("data.fresh", severity)
    assert f"{days} days old (as of 2026-11-28)" in finding.message


def test_undated_data_is_said_so():
    [finding] = data_age("2026-11-28", None)
    assert finding.severity == "info" and "no date" in finding.message


def test_check_judges_the_shipped_tables_against_today():
    oldest = compat.load().oldest_as_of
    assert oldest, "the shipped tables carry as_of dates"
    findings = {f.id: f for f in run_checks(HostProfile(), today=later(oldest, 120))}
    assert findings["data.fresh"].severity == "warn"
    assert "data.fresh" not in {f.id for f in run_checks(HostProfile())}  # no date given: not judged


@pytest.fixture(scope="module")
def index():
    server = IndexServer()
    yield server
    server.close()


def freshness(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "DLSETUP_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=url, DLSETUP_INDEX_TIMEOUT="2")
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "freshness.py"), "--no-cache", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


def test_freshness_benchmark_reports_what_the_tables_miss(index):
    result = freshness(index.url("unknown"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["index"] == index.url("unknown")
    torch = summary["projects"]["torch"]
    assert (torch["index_newest"], torch["tables_newest"]) == ("2.16.0", "2.15.0")
    assert "torch 2.16" in summary["missing"]
    assert summary["projects"]["nvidia-cuda-runtime"]["index_newest"] == "13.5.37"
    assert "torch: 2.16.0 on the index" in result.stdout


def test_freshness_benchmark_survives_a_broken_index(index):
    result = freshness(index.url("garbage"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["missing"] == [] and summary["failures"]
