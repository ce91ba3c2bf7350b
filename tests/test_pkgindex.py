"""The index reader over recorded index answers served from 127.0.0.1: what exists for which Python,
pip's configuration honoured, the cache and its dates, and indexes that answer garbage or hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dlsetup import pkgindex
from dlsetup.pkgindex import BadIndexAnswer, LiveIndex, PipSettings, Project, lookup, pages, parse_page
from tests.index_server import FIXTURES, JSON_TYPE, IndexServer, as_html, recorded

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=timezone.utc)


def page(project: str) -> Project:
    body = (FIXTURES / "simple" / project / "index.json").read_bytes()
    return Project(project, f"recorded/{project}", "2026-11-28", parse_page(body, JSON_TYPE))


@pytest.fixture(scope="module")
def server():
    s = IndexServer()
    yield s
    s.close()


def ask(server: IndexServer, mode: str, names=("torch",), tmp_path: Path | None = None, timeout: float = 2.0,
        now: datetime = NOW, pytorch: bool = False) -> LiveIndex:
    settings = PipSettings(server.url(mode))
    return lookup(pages(names, settings, server.pytorch if pytorch else None), settings, timeout=timeout,
                  directory=tmp_path, now=now)


# -- what the recorded pages say -----------------------------------------------------------------


def test_newest_torch_depends_on_the_python():
    torch = page("torch")
    assert str(torch.newest("3.12")) == "2.15.0"
    # 2.15.0 needs Python >= 3.11 and has no cp310 wheel: a Python 3.10 host gets the 2.14 line
    assert str(torch.newest("3.10")) == "2.14.1"
    assert str(torch.newest("3.12", "2.14")) == "2.14.1"
    assert torch.uploaded("2.15.0") == "2026-10-28"


def test_prereleases_and_other_platforms_are_not_releases():
    tf = page("tensorflow")
    assert "2.22.0rc0" in {f.filename.split("-")[1] for f in tf.files}
    assert str(tf.newest("3.12")) == "2.21.0"
    only_windows = Project("x", "u", "d", tuple(f for f in tf.files if f.filename.endswith("win_amd64.whl")))
    assert only_windows.releases("3.12") == []


def test_jax_requires_python_decides():
    jax = page("jax")
    assert str(jax.newest("3.12")) == "0.12.0.1"
    assert str(jax.newest("3.11")) == "0.10.2"
    assert jax.newest("3.10") is None


def test_cuda_runtime_lines():
    runtime = page("nvidia-cuda-runtime")
    assert {f"{v.major}.{v.minor}" for v in runtime.all_releases()} >= {"13.0", "13.4", "13.5"}
    assert str(runtime.all_releases()[0]) == "13.5.37"


def test_pytorch_index_builds_come_from_local_labels():
    vendor = Project("pytorch:torch", "u", "d",
                     parse_page((FIXTURES / "pytorch-whl-torch.html").read_bytes(), "text/html"))
    assert vendor.builds("2.15.0", "3.12") == ("cpu", "cu130", "cu132", "rocm7.14")
    assert vendor.builds("2.15.0", "3.10") == ()  # no cp310 wheels
    assert "rocm10.1" in vendor.labels()


def test_html_and_json_pages_agree():
    doc = recorded("jax")
    from_html = parse_page(as_html(doc), "text/html; charset=utf-8")
    from_json = parse_page(json.dumps(doc).encode(), JSON_TYPE)
    assert [(f.filename, f.requires_python) for f in from_html] == [(f.filename, f.requires_python) for f in from_json]


@pytest.mark.parametrize("body, kind", [(b"not json", JSON_TYPE), (b'{"files": 3}', JSON_TYPE),
                                        (b'{"files": [{"name": 1}]}', JSON_TYPE), (b"\x00\x01", "image/png")])
def test_garbage_is_refused(body, kind):
    with pytest.raises(BadIndexAnswer):
        parse_page(body, kind)


# -- asking the served index ------------------------------------------------------------------------


def test_lookup_reads_json_and_caches_with_its_date(server, tmp_path):
    live = ask(server, "good", ("torch", "jax"), tmp_path)
    assert live.failures == ()
    assert str(live.project("torch").newest("3.12")) == "2.15.0"
    assert live.project("torch").as_of == "2026-11-28" and live.project("torch").cached is False
    assert live.project("torch").url == server.url("good") + "/torch/"
    cached = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert {c["url"] for c in cached} == {server.url("good") + "/torch/", server.url("good") + "/jax/"}
    assert all(c["fetched"].startswith("2026-11-28") for c in cached)


def test_fresh_cache_answers_without_asking(server, tmp_path):
    ask(server, "good", ("torch",), tmp_path)
    # same URL, an hour later: the cached answer, not a request (the garbage variant would fail)
    for path in tmp_path.glob("*.json"):
        doc = json.loads(path.read_text())
        doc["fetched"] = (NOW - timedelta(days=2)).isoformat()
        path.write_text(json.dumps(doc))
    stale = ask(server, "good", ("torch",), tmp_path)
    assert stale.project("torch").cached is False  # 2 days old: asked again
    again = ask(server, "good", ("torch",), tmp_path, now=NOW + timedelta(hours=1))
    assert again.project("torch").cached is True and again.failures == ()


def test_failing_index_falls_back_to_an_older_cached_answer(server, tmp_path):
    url = server.url("hang") + "/torch/"
    old = NOW - timedelta(days=3)
    pkgindex._write_cache(pkgindex._cache_path(tmp_path, url), url, old, page("torch").files)
    live = ask(server, "hang", ("torch",), tmp_path, timeout=0.3)
    torch = live.project("torch")
    assert (torch.cached, torch.as_of, str(torch.newest("3.12"))) == (True, "2026-11-25", "2.15.0")
    assert live.failures == (f"torch on {url}: timed out; using the answer cached on 2026-11-25",)


def test_garbage_answer_is_a_failure_not_a_project(server, tmp_path):
    live = ask(server, "garbage", ("torch",), tmp_path)
    assert live.project("torch") is None
    assert live.failures == (f"torch on {server.url('garbage')}/torch/: not JSON (JSONDecodeError)",)
    assert not list(tmp_path.glob("*.json"))  # garbage is never cached


def test_hanging_index_times_out(server, tmp_path):
    live = ask(server, "hang", ("torch", "jax"), tmp_path, timeout=0.3)
    assert live.projects == {}
    assert live.failures == (f"jax on {server.url('hang')}/jax/: timed out",
                             f"torch on {server.url('hang')}/torch/: timed out")


def test_missing_project_is_empty_not_a_failure(server, tmp_path):
    live = ask(server, "good", ("no-such-project",), tmp_path)
    assert live.failures == () and live.project("no-such-project").files == ()


def test_pytorch_index_is_asked_for_builds(server, tmp_path):
    live = ask(server, "good", ("torch",), tmp_path, pytorch=True)
    assert live.project(pkgindex.PYTORCH).builds("2.16.0", "3.12") == ("cpu", "cu130", "cu134", "rocm10.1")


def test_find_links_directories_are_a_local_index(tmp_path):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (tmp_path / "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    live = pkgindex.ask(["pytorch"], find_links=[str(tmp_path)], no_index=True)
    assert str(live.project("torch").newest("3.11")) == "2.13.0" and live.project("torch").newest("3.12") is None


# -- pip's configuration -------------------------------------------------------------------------------


def pip_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, **extra}


def test_pip_index_url_from_the_environment_and_the_option(monkeypatch):
    for key, value in pip_env(PIP_INDEX_URL="http://127.0.0.1:1/env/simple",
                              PIP_EXTRA_INDEX_URL="http://127.0.0.1:1/extra/simple").items():
        monkeypatch.setenv(key, value)
    for key in set(os.environ) - set(pip_env()) - {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"}:
        monkeypatch.delenv(key)
    settings = pkgindex.pip_settings()
    assert (settings.index_url, settings.extra_index_urls) == ("http://127.0.0.1:1/env/simple",
                                                               ("http://127.0.0.1:1/extra/simple",))
    option = pkgindex.pip_settings("http://127.0.0.1:1/option/simple")
    assert (option.index_url, option.extra_index_urls) == ("http://127.0.0.1:1/option/simple", ())


def test_pip_config_file_is_read(monkeypatch, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://127.0.0.1:1/conf/simple\ncert = /etc/some-ca.pem\n")
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    settings = pkgindex.pip_settings()
    assert (settings.index_url, settings.cert) == ("http://127.0.0.1:1/conf/simple", "/etc/some-ca.pem")


def test_without_configuration_the_index_is_pips_own_default(monkeypatch):
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    expected = subprocess.run([sys.executable, "-m", "pip", "download", "--help"], capture_output=True, text=True)
    settings = pkgindex.pip_settings()
    # pip documents its default in --index-url's help: "(default <url>)"
    assert settings.index_url.startswith("https://") and settings.index_url in expected.stdout.replace("\n", "")


def test_credentials_never_reach_the_plan():
    assert pkgindex.redact("https://user:secret@mirror.example/simple") == "https://mirror.example/simple"


def test_a_failed_index_is_not_asked_again_for_a_while(server, tmp_path):
    first = ask(server, "hang", ("torch",), tmp_path, timeout=0.3)
    assert first.failures == (f"torch on {server.url('hang')}/torch/: timed out",)
    # a minute later the page is not asked (no timeout waited): the failure is reported with its time
    again = ask(server, "hang", ("torch",), tmp_path, timeout=30, now=NOW + timedelta(minutes=1))
    assert again.failures == (f"torch on {server.url('hang')}/torch/: timed out at 06:00 UTC, not asked again "
                              "before 06:05",)
    later = ask(server, "hang", ("torch",), tmp_path, timeout=0.3, now=NOW + pkgindex.FAILURE_TTL)
    assert later.failures == first.failures  # asked again, timed out again
