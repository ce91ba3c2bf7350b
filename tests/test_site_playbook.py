"""playbooks/site.yml: the roles in the planner's order, and only the facts they read, on a real setup run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO
from dlsetup.runner.settings import GATHER_SUBSET

#: facts that come from other modules than setup
NOT_FROM_SETUP = {"packages"}  # ansible.builtin.package_facts
_FACT = re.compile(r"ansible_facts(?:\['([a-z_]+)'\]|\.([a-z_]+))")


def _read_facts() -> set[str]:
    names = set()
    for path in [*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/vars/*.yml"),
                 *REPO.glob("roles/*/defaults/*.yml"), *REPO.glob("roles/*/handlers/*.yml"),
                 *REPO.glob("playbooks/*.yml")]:
        names |= {a or b for a, b in _FACT.findall(path.read_text())}
    return names - NOT_FROM_SETUP


def test_every_fact_read_is_gathered(tmp_path: Path) -> None:
    wanted = _read_facts()
    assert {"distribution", "distribution_version", "kernel", "architecture"} <= wanted
    ansible = Path(sys.executable).with_name("ansible")
    run = subprocess.run([str(ansible), "localhost", "-c", "local", "-m", "ansible.builtin.setup", "-a",
                          f"gather_subset={GATHER_SUBSET}", "-e", f"ansible_python_interpreter={sys.executable}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    facts = json.loads(run.stdout.split("=>", 1)[1])["ansible_facts"]
    gathered = {name.removeprefix("ansible_") for name in facts}
    assert wanted <= gathered, sorted(wanted - gathered)
    assert len(facts) < 40  # the point: far fewer than min's


def test_site_playbook_and_roles_gather_the_same_subset() -> None:
    subset = GATHER_SUBSET.split(",")
    site = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    assert [play["gather_subset"] for play in site if play.get("gather_facts")] == [subset]
    for tasks in REPO.glob("roles/*/tasks/main.yml"):
        setups = [t for t in yaml.safe_load(tasks.read_text()) if "ansible.builtin.setup" in t]
        assert [t["ansible.builtin.setup"]["gather_subset"] for t in setups] in ([], [subset]), tasks


#: roles other roles or the site play include (not planned on their own): the vendor roles' signed_apt_repo
#: and gpu_kernel_module, the site play's mirror_sources (with --mirror)
HELPER_ROLES = ("signed_apt_repo", "gpu_kernel_module", "mirror_sources")


def test_site_playbook_applies_the_roles_in_the_planner_order() -> None:
    from dlsetup.plan.planner import ROLE_ORDER

    (play,) = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    assert tuple(play["vars"]["__site_role_order"]) == ROLE_ORDER
    assert {p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir()} == {*ROLE_ORDER, *HELPER_ROLES}


def test_a_run_with_tags_still_takes_its_packages_from_the_mirror(tmp_path: Path) -> None:
    """``provision -t nvidia_driver --mirror DIR``: Ansible keeps the include of mirror_sources (tagged always),
    else the role would read the host's own sources, which an air-gapped host cannot reach."""
    from dlsetup.runner import link_collection

    playbook = Path(sys.executable).with_name("ansible-playbook")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_COLLECTIONS_PATH": str(link_collection(tmp_path / "collections"))}
    for tags in (["--tags", "nvidia_driver"], ["--skip-tags", "mirror_sources,common"]):
        run = subprocess.run([str(playbook), "-i", "localhost,", "--list-tasks", *tags,
                              str(REPO / "playbooks" / "site.yml")], capture_output=True, text=True, timeout=120,
                             env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Take every package from the mirror" in run.stdout, run.stdout
