"""The config file's ``repositories:``: a site's own copies of the vendors' repositories (an internal mirror of
NVIDIA's CUDA repository, Artifactory/Nexus style) replace the vendors' URLs, and keys when given, in the plan,
and so in what a mirror or the controller-side cache fetches."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import H100_BUNDLE
from dlsetup.errors import UsageError
from dlsetup.mirror.contents import contents_of
from dlsetup.mirror.roles import role_data
from dlsetup.model import NvidiaState
from dlsetup.plan import compat, load_request, make_plan
from dlsetup.plan.request import SiteRepository
from dlsetup.probe import probe

SITE_FP = "0123456789ABCDEF0123456789ABCDEF01234567"
SITE = f"""\
repositories:
  cuda:
    url: https://artifactory.example.internal/nvidia-cuda/{{cuda_repo}}/{{cuda_arch}}/
    key_url: https://artifactory.example.internal/keys/nvidia-{{cuda_repo}}.asc
    key_fingerprint: "{SITE_FP[:20].lower()} {SITE_FP[20:]}"
  nvidia_container_toolkit:
    url: https://nexus.example.internal/libnvidia-container/stable/deb/$(ARCH)
"""


@pytest.fixture(scope="module")
def fresh():
    """The H100 host as it would be fresh (no driver loaded): the plan installs the driver."""
    return dataclasses.replace(probe(bundle=H100_BUNDLE), nvidia=NvidiaState())


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yml"
    path.write_text(text)
    return path


def test_the_config_file_names_the_sites_repositories(tmp_path: Path) -> None:
    request = load_request(_config(tmp_path, SITE))
    assert request.repositories == (
        SiteRepository("cuda", "https://artifactory.example.internal/nvidia-cuda/{cuda_repo}/{cuda_arch}/",
                       "https://artifactory.example.internal/keys/nvidia-{cuda_repo}.asc", SITE_FP),
        SiteRepository("nvidia_container_toolkit",
                       "https://nexus.example.internal/libnvidia-container/stable/deb/$(ARCH)"))
    assert load_request(None).repositories == ()


def test_the_plan_takes_the_sites_repositories(fresh, tmp_path: Path) -> None:
    request = load_request(_config(tmp_path, SITE), offline=True, cuda="13.0", container_toolkit=True)
    plan = make_plan(fresh, request)
    v = plan.variables
    site = "https://artifactory.example.internal/nvidia-cuda/ubuntu2404/x86_64/"  # placeholders filled in
    for prefix in ("nvidia_driver_repo", "cuda_toolkit_repo"):
        assert (v[f"{prefix}_url"], v[f"{prefix}_key_url"], v[f"{prefix}_key_fingerprint"]) == (
            site, "https://artifactory.example.internal/keys/nvidia-ubuntu2404.asc", SITE_FP)
    vendor = compat.load().repositories["nvidia_container_toolkit"]
    assert v["nvidia_container_toolkit_repo_url"] == \
        "https://nexus.example.internal/libnvidia-container/stable/deb/$(ARCH)"
    assert (v["nvidia_container_toolkit_repo_key_url"], v["nvidia_container_toolkit_repo_key_fingerprint"]) == (
        vendor.key_url, vendor.key_fingerprint)
    said = [d for d in plan.decisions if d.topic == "repository"]
    assert [d.choice for d in said] == [f"cuda: {site}", "nvidia_container_toolkit: "
                                        "https://nexus.example.internal/libnvidia-container/stable/deb/$(ARCH)"]
    assert all(d.rule == "rule:site-repository" and d.source == "request" for d in said)
    assert "the site's repository, from the config file (repositories: cuda)" in said[0].reason
    assert f"the site's key from https://artifactory.example.internal/keys/nvidia-ubuntu2404.asc, pinned " \
           f"fingerprint {SITE_FP}" in said[0].reason
    assert f"the vendor's key from {vendor.key_url}, pinned fingerprint {vendor.key_fingerprint}" in said[1].reason


def test_a_url_alone_keeps_the_vendors_pinned_key(fresh, tmp_path: Path) -> None:
    vendor_plan = make_plan(fresh, load_request(None, offline=True))
    config = _config(tmp_path, "repositories:\n  cuda:\n    url: http://mirror.example.internal/cuda/{cuda_repo}/\n")
    plan = make_plan(fresh, load_request(config, offline=True))
    assert plan.variables["nvidia_driver_repo_url"] == "http://mirror.example.internal/cuda/ubuntu2404/"
    for key in ("key_url", "key_fingerprint", "suite"):
        assert plan.variables[f"nvidia_driver_repo_{key}"] == vendor_plan.variables[f"nvidia_driver_repo_{key}"]
    assert vendor_plan.variables["nvidia_driver_repo_key_fingerprint"] == \
        compat.load().repositories["cuda"].key_fingerprint
    assert "repository" not in {d.topic for d in vendor_plan.decisions}


def test_the_mirror_fetches_from_the_sites_repository(fresh, tmp_path: Path) -> None:
    plan = make_plan(fresh, load_request(_config(tmp_path, SITE), offline=True))
    [repo] = contents_of("h100", plan, role_data("ubuntu", "24.04")).repos
    assert (repo.url, repo.key_url, repo.fingerprint) == (
        "https://artifactory.example.internal/nvidia-cuda/ubuntu2404/x86_64/",
        "https://artifactory.example.internal/keys/nvidia-ubuntu2404.asc", SITE_FP)


@pytest.mark.parametrize("text,message", [
    ("repositories:\n  cudaa:\n    url: https://m.example/\n",
     "repositories: unknown repository 'cudaa' (use cuda, nvidia_container_toolkit, rocm)"),
    ("repositories:\n  cuda:\n    uri: https://m.example/\n", "repositories: cuda: unknown key 'uri'"),
    ("repositories:\n  cuda:\n    key_fingerprint: " + SITE_FP + "\n", "repositories: cuda: url is missing"),
    ("repositories:\n  cuda:\n    url: https://m.example/\n    key_url: https://m.example/k.asc\n",
     "repositories: cuda: key_url needs key_fingerprint"),
    ("repositories:\n  cuda:\n    url: https://m.example/\n    key_fingerprint: 3bf863cc\n",
     "repositories: cuda: key_fingerprint: expected 40 or 64 hex digits"),
    ("repositories:\n  cuda:\n    url: ftp://m.example/\n", "repositories: cuda: url: expected an http(s)://"),
    ("repositories:\n  cuda:\n    url: https://m.example/{distro}/\n",
     "repositories: cuda: url: unknown placeholder '{distro}'"),
    ("repositories:\n  cuda:\n    url: https://m.example/{rocm_version}/\n",
     "repositories: cuda: url: unknown placeholder '{rocm_version}'"),
    ("repositories:\n  cuda:\n    url: https://m.example/{cuda_repo/\n",
     "repositories: cuda: url: unbalanced { or } in"),
    ("repositories:\n  cuda: https://m.example/\n", "repositories: cuda: expected a mapping of url"),
    ("repositories: [cuda]\n", "repositories: expected a mapping of repository name"),
])
def test_bad_repositories_are_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    config = _config(tmp_path, text)
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}").replace("*", r"\*").replace(".", r"\.")):
        load_request(config)
    run = subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--from-bundle", str(H100_BUNDLE), "--offline",
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr, run.stderr


def test_a_plan_with_a_site_repository_is_json(fresh, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--from-bundle", str(H100_BUNDLE), "--offline",
                          "--json", "--config", str(_config(tmp_path, SITE))], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)  # the H100 keeps its loaded driver: no repository, so no decision about one
    assert "repository" not in {d["topic"] for d in plan["decisions"]}


def test_rocm_from_the_sites_repository_in_both_layouts(tmp_path: Path) -> None:
    from test_plan import MI300X

    url = "https://nexus.example.internal/rocm/{rocm_version}/"
    legacy = make_plan(MI300X, load_request(_config(tmp_path, f"repositories:\n  rocm:\n    url: {url}\n"),
                                            rocm="7.2")).variables
    assert (legacy["rocm_repo_url"], legacy["rocm_repo_suite"]) == ("https://nexus.example.internal/rocm/7.2/",
                                                                     "jammy")
    assert legacy["rocm_repo_key_fingerprint"] == compat.load().repositories["rocm"].key_fingerprint
    # TheRock: the role knows the vendor's repositories; the site's URL (and its key, when given) stays
    therock = make_plan(MI300X, load_request(_config(tmp_path, f"repositories:\n  rocm:\n    url: {url}\n"))).variables
    assert therock["rocm_layout"] == "therock"
    assert {k: v for k, v in therock.items() if k.startswith("rocm_repo_")} == {
        "rocm_repo_url": "https://nexus.example.internal/rocm/10.0/"}
    keyed = make_plan(MI300X, load_request(_config(
        tmp_path, f"repositories:\n  rocm:\n    url: {url}\n    key_url: {url}key.asc\n"
                  f"    key_fingerprint: {SITE_FP}\n"))).variables
    assert {k: v for k, v in keyed.items() if k.startswith("rocm_repo_")} == {
        "rocm_repo_url": "https://nexus.example.internal/rocm/10.0/",
        "rocm_repo_key_url": "https://nexus.example.internal/rocm/10.0/key.asc", "rocm_repo_key_fingerprint": SITE_FP}
