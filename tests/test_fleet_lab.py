"""The fleet tier: 8 namespace hosts over real SSH (tests/lab/fleet.py), one unreachable, one whose run fails."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import H100_BUNDLE
from test_fleet import derived_bundle

from dlsetup import fleet
from dlsetup.commands.provision import REBOOT_TASK, _raise_for
from dlsetup.errors import EXIT_UNREACHABLE, DlsetupError
from dlsetup.inventory import load_inventory
from dlsetup.plan import load_request, make_plan
from dlsetup.runner import RunOptions, ansible_dir, run_playbooks
from lab.fleet import Fleet

pytestmark = pytest.mark.fleet

UNREACHABLE, FAILING = "h8", "h7"
MISSING_PACKAGE = "dlsetup-no-such-package"
PLAYBOOKS = [ansible_dir() / "playbooks" / name for name in ("site.yml", "reboot_status.yml")]
#: the CPU role set, as dlsetup plan gives a host without a GPU
CPU_ROLES = json.dumps({"dlsetup_roles": ["common", "frameworks"]})


@pytest.fixture(scope="module")
def lab_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    missing = [tool for tool in ("ip", "unshare", "ssh", "ssh-keygen", "debootstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"the fleet tier needs root and {', '.join(missing) or 'its tools'} (TESTLAB.md section 3)")
    with Fleet(tmp_path_factory.mktemp("fleet"), 8, unreachable=(8,)) as started:
        yield started


def test_fleet_converges_past_a_failed_and_an_unreachable_host(lab_fleet: Fleet, tmp_path: Path) -> None:
    inventory = lab_fleet.inventory(tmp_path / "hosts.yml",
                                    {FAILING: {"common_extra_packages": [MISSING_PACKAGE]}})
    names = [h.name for h in lab_fleet.hosts]
    options = RunOptions(extra_vars=(CPU_ROLES,), forks=len(names))
    result = run_playbooks(PLAYBOOKS, [str(inventory)], hosts=names, options=options, reboot_task=REBOOT_TASK)

    assert result.error is None
    by_host = {h.host: h for h in result.hosts}
    assert sorted(by_host) == sorted(names)
    converged = [n for n in names if n not in (FAILING, UNREACHABLE)]
    for name in converged:
        assert by_host[name].status in ("ok", "changed") and by_host[name].failed == 0
        assert by_host[name].reboot_required is False
    failed, gone = by_host[FAILING], by_host[UNREACHABLE]
    assert failed.status == "failed" and failed.failure is not None
    assert failed.failure.task == "Install the base packages"
    assert MISSING_PACKAGE in failed.failure.message
    assert gone.status == "unreachable" and gone.failure is not None and gone.failure.unreachable
    assert "Connection refused" in gone.failure.message
    assert f"{lab_fleet.hosts[-1].address} port 22" in gone.failure.message
    with pytest.raises(DlsetupError) as raised:
        _raise_for(result)
    assert raised.value.exit_code == EXIT_UNREACHABLE

    retry = fleet.retry_file([str(inventory)], tmp_path)
    assert sorted(fleet.save_retry(retry, result.hosts)) == [FAILING, UNREACHABLE]
    again = run_playbooks(PLAYBOOKS, [str(inventory)], hosts=names,
                          options=RunOptions(extra_vars=(CPU_ROLES,), limit=fleet.retry_limit(retry)),
                          reboot_task=REBOOT_TASK)
    assert sorted(h.host for h in again.hosts) == [FAILING, UNREACHABLE]
    assert again.host(FAILING).status == "failed" and again.host(UNREACHABLE).status == "unreachable"


def test_heterogeneous_fleet_gets_plans_per_hardware_grouped(lab_fleet: Fleet, tmp_path: Path) -> None:
    bundles = {"h1": H100_BUNDLE, "h2": derived_bundle(tmp_path / "mi210", "1002", "740f")}
    inventory = lab_fleet.inventory(
        tmp_path / "hosts.yml", {name: {fleet.HOST_BUNDLE_VAR: str(path)} for name, path in bundles.items()},
        hosts=["h1", "h2", "h3", "h4", UNREACHABLE])
    outcomes = fleet.probe_fleet(load_inventory(inventory))

    gone = outcomes.pop(UNREACHABLE)
    assert isinstance(gone, fleet.ProbeFailure) and gone.status == "unreachable"
    assert "Connection refused" in gone.message
    for name in ("h3", "h4"):  # probed over SSH: the namespace hosts' own Debian 12 roots
        profile = outcomes[name]
        assert not isinstance(profile, fleet.ProbeFailure)
        assert (profile.source, profile.hostname) == (f"remote:{name}", name)
        assert (profile.os.id, profile.os.version_id, profile.gpus) == ("debian", "12", ())
    request = load_request()
    plans = {name: make_plan(profile, request) for name, profile in outcomes.items()
             if not isinstance(profile, fleet.ProbeFailure)}
    groups = {g.hosts: g for g in fleet.group_plans(plans)}
    assert sorted(groups) == [("h1",), ("h2",), ("h3", "h4")]
    assert dict(groups[("h3", "h4")].choices)["accelerator"] == "cpu"
    assert dict(groups[("h1",)].choices)["torch build"] == "cu130"
    assert groups[("h2",)].roles == ("common", "rocm", "frameworks")
