"""The runner funnel on real ansible-runner events, recorded here from a tiny play on localhost."""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List

import ansible_runner
import pytest
import yaml

from dlsetup.runner import RunOptions, _environment, check_extra_vars, run_playbooks
from dlsetup.runner.results import HostResult, RunResult, Tally
from dlsetup.errors import UsageError

PLAY = [{
    "name": "tiny", "hosts": "all", "gather_facts": False,
    "tasks": [
        {"name": "unchanged", "ansible.builtin.command": "true", "changed_when": False},
        {"name": "changed", "ansible.builtin.command": "true"},
        {"name": "skipped", "ansible.builtin.debug": {"msg": "never"}, "when": False},
        {"name": "ignored", "ansible.builtin.command": "false", "ignore_errors": True},
        {"name": "fails", "ansible.builtin.shell": "echo first >&2; echo 'E: the real reason' >&2; exit 3"},
        {"name": "after the failure", "ansible.builtin.command": "true"},
    ],
}]
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run records go to the test's own folder, not the user's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def playbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("play") / "tiny.yml"
    path.write_text(yaml.safe_dump(PLAY))
    return path


@pytest.fixture(scope="module")
def events(playbook: Path, tmp_path_factory: pytest.TempPathFactory) -> List[Dict[str, Any]]:
    """Every event of one real run: a local host, and one whose SSH port is closed."""
    recorded: List[Dict[str, Any]] = []
    inventory = {"all": {"hosts": {"here": LOCAL, "gone": {
        "ansible_host": "127.0.0.1", "ansible_port": _closed_port(), "ansible_connection": "ssh"}}}}
    ansible_runner.run(private_data_dir=str(tmp_path_factory.mktemp("pdd")), playbook=str(playbook),
                       inventory=inventory, event_handler=lambda e: recorded.append(e) or True, quiet=True,
                       envvars={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    return recorded


def test_tally_counts_like_the_play_recap(events: List[Dict[str, Any]]) -> None:
    tally = Tally()
    for event in events:
        tally.handle(event)
    result = tally.result(rc=2)
    here = result.host("here")
    assert (here.ok, here.changed, here.failed, here.skipped, here.ignored) == (3, 2, 1, 1, 1)
    assert here.status == "failed"
    assert here.failure is not None and here.failure.task == "fails"
    assert here.failure.message == "non-zero return code: E: the real reason"
    assert not here.failure.privileges
    # live state while running agrees with the recap
    assert (tally.hosts["here"].ok, tally.hosts["here"].changed, tally.hosts["here"].failed) == (3, 2, 1)
    assert result.error is None


def test_unreachable_host(events: List[Dict[str, Any]]) -> None:
    tally = Tally()
    for event in events:
        tally.handle(event)
    gone = tally.result(rc=4).host("gone")
    assert gone.status == "unreachable" and gone.unreachable == 1 and gone.ok == 0
    assert gone.failure is not None and gone.failure.unreachable and gone.failure.task == "unchanged"
    assert "Connection refused" in gone.failure.message
    assert gone.to_dict()["failure"] == {"task": "unchanged", "message": gone.failure.message,
                                         "detail": list(gone.failure.detail)}


def test_run_playbooks_captures_results_and_reboot_marker(playbook: Path, tmp_path: Path) -> None:
    marker = tmp_path / "reboot-required"
    marker.touch()
    status = tmp_path / "status.yml"
    status.write_text(yaml.safe_dump([{"name": "status", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "marker", "ansible.builtin.stat": {"path": str(marker)}}]}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"a": None, "b": None}}}))
    result = run_playbooks([status], [str(inventory)], hosts=["a", "b"],
                           host_vars={"a": LOCAL, "b": LOCAL}, options=RunOptions(limit="a"),
                           capture=["marker"], reboot_task="marker")
    assert [h.host for h in result.hosts] == ["a"]
    assert result.rc == 0 and result.error is None
    assert result.host("a").reboot_required is True
    assert result.host("a").captured["marker"]["stat"]["path"] == str(marker)


def test_check_mode_changes_nothing(playbook: Path, tmp_path: Path) -> None:
    target = tmp_path / "created"
    play = tmp_path / "create.yml"
    play.write_text(yaml.safe_dump([{"name": "c", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "create", "ansible.builtin.file": {"path": str(target), "state": "touch"}}]}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"a": LOCAL}}}))
    result = run_playbooks([play], [str(inventory)], options=RunOptions(check=True, diff=True))
    assert result.host("a").changed == 1 and result.host("a").failed == 0
    assert not target.exists()


def test_ansible_error_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - no.such.module: {}\n")
    result = run_playbooks([broken], [], host_vars={"a": LOCAL})
    assert result.rc != 0 and result.hosts == ()
    assert result.error is not None and "no.such.module" in result.error and "\n" not in result.error


def test_become_failure_is_a_privilege_error(tmp_path: Path) -> None:
    """Escalating through a sudo that is not there fails as on a host without sudo."""
    play = tmp_path / "become.yml"
    play.write_text(yaml.safe_dump([{"name": "b", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "as root", "ansible.builtin.command": "true"}]}]))
    result = run_playbooks([play], [], host_vars={"a": {
        **LOCAL, "ansible_become": True, "ansible_become_user": "nobody",
        "ansible_become_exe": str(tmp_path / "no-sudo")}})
    failure = result.host("a").failure
    assert failure is not None and failure.privileges, failure


@pytest.mark.parametrize("value", ["x", "@/no/such/file"])
def test_bad_extra_vars(value: str) -> None:
    with pytest.raises(UsageError):
        check_extra_vars([value])


def test_good_extra_vars(tmp_path: Path) -> None:
    (tmp_path / "vars.yml").write_text("a: 1\n")
    values = ["a=1", '{"b": 2}', f"@{tmp_path / 'vars.yml'}"]
    assert check_extra_vars(values) == tuple(values)
    assert RunOptions(extra_vars=("a=1",), tags=("x", "y")).cmdline()[-2:] == ["--tags", "x,y"]


def test_environment_is_tuned_for_the_hosts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ANSIBLE_FORKS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = _environment(["h1", "h2", "h3"])
    assert env["ANSIBLE_FORKS"] == "3" and env["ANSIBLE_PIPELINING"] == "True"
    assert "-C" not in env["ANSIBLE_SSH_ARGS"].split() and "ControlPersist=120s" in env["ANSIBLE_SSH_ARGS"]
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "dlsetup" / "facts" / "local")
    chroot = _environment(["/srv/root1"])  # the JSON cache cannot name a file after a path
    assert chroot["ANSIBLE_CACHE_PLUGIN"] == "ansible.builtin.memory"
    assert "ANSIBLE_CACHE_PLUGIN_CONNECTION" not in chroot
    monkeypatch.setenv("ANSIBLE_FORKS", "2")  # the user's own setting wins
    assert "ANSIBLE_FORKS" not in _environment(["h1", "h2", "h3"])
    assert RunOptions().cmdline() == [] and RunOptions(forks=4).cmdline() == ["--forks", "4"]
    assert "ANSIBLE_STRATEGY" not in env  # Ansible's linear strategy unless mitogen is asked for
    monkeypatch.setenv("DLSETUP_MITOGEN", "1")
    assert _environment(["h1"])["ANSIBLE_STRATEGY"] == "mitogen_linear"


def _rendered(renderable: Any) -> str:
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_summary_names_the_failing_task_and_its_message(events: List[Dict[str, Any]]) -> None:
    """What the run summary and the JSON say about a failed host: which task, and Ansible's reason."""
    from dlsetup.runner.progress import summary

    tally = Tally()
    for event in events:
        tally.handle(event)
    result = tally.result(rc=4)
    here, gone = result.host("here"), result.host("gone")
    text = _rendered(summary(result))
    assert "here: fails: non-zero return code: E: the real reason" in text
    assert f"gone: unchanged: {gone.failure.message}"[:60] in text.replace("\n", " ")
    assert here.to_dict()["failure"] == {"task": "fails", "message": "non-zero return code: E: the real reason",
                                         "detail": ["first", "E: the real reason"]}
    # the tool's own last lines follow the one-line reason
    lines = [line.rstrip() for line in text.splitlines()]
    at = lines.index("here: fails: non-zero return code: E: the real reason")
    assert lines[at + 1:at + 3] == ["    first", "    E: the real reason"]
    # a host that did not fail adds no line
    clean = RunResult((HostResult("ok-host", ok=3),), 0)
    assert "ok-host:" not in _rendered(summary(clean)) and "ok-host" in _rendered(summary(clean))


def test_failure_message_keeps_the_reason() -> None:
    from dlsetup.runner.results import failure_message

    assert failure_message({"msg": "non-zero return code", "stderr": "x\nE: the reason"}) == \
        "non-zero return code: E: the reason"
    assert failure_message({"msg": "", "module_stderr": "Traceback (most recent call last):\n  f\nOSError: boom"}) \
        == "OSError: boom"
    assert failure_message({}) == "failed without a message"


def test_extra_vars_are_files_not_arguments(tmp_path: Path) -> None:
    """``-e`` values (become passwords among them) reach the play but never ansible-playbook's argv."""
    (tmp_path / "vars.yml").write_text("from_file: yes-file\n")
    play = tmp_path / "vars.yml.play"
    play.write_text(yaml.safe_dump([{"name": "v", "hosts": "all", "gather_facts": False, "tasks": [
        # lookups run in the ansible-playbook process: its own argv
        {"name": "argv",
         "ansible.builtin.debug": {"msg": "{{ lookup('ansible.builtin.file', '/proc/self/cmdline') }}"}},
        {"name": "values", "ansible.builtin.debug": {"msg": "{{ [secret, other, nested.k, from_file, later] }}"}}]}]))
    values = ("secret='s3cr3t pass' other=2", '{"nested": {"k": "json-value"}, "later": "first"}',
              f"@{tmp_path / 'vars.yml'}", "later=second")
    result = run_playbooks([play], [], host_vars={"a": LOCAL}, options=RunOptions(extra_vars=values),
                           capture=["argv", "values"])
    host = result.host("a")
    assert host.failed == 0, host.failure
    assert host.captured["values"]["msg"] == ["s3cr3t pass", "2", "json-value", "yes-file", "second"]
    argv = host.captured["argv"]["msg"]
    assert "--extra-vars" in argv and "ansible-playbook" in argv
    for secret in ("s3cr3t", "json-value", "second", "other=2"):
        assert secret not in argv


def test_extra_vars_files_are_private(tmp_path: Path) -> None:
    from dlsetup.runner import extra_vars_files

    args = extra_vars_files(["pw=x y=2", "@/etc/vars.yml", '{"a": [1]}'], tmp_path / "vars")
    assert args[2:4] == ["--extra-vars", "@/etc/vars.yml"]
    files = [Path(a[1:]) for a in args[1::2] if a != "@/etc/vars.yml"]
    assert [yaml.safe_load(f.read_text()) for f in files] == [{"pw": "x", "y": "2"}, {"a": [1]}]
    assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
    assert (tmp_path / "vars").stat().st_mode & 0o777 == 0o700
    assert not any("pw=x" in a for a in args)


def test_extra_vars_as_ansible_reads_them(tmp_path: Path) -> None:
    from dlsetup.errors import UsageError
    from dlsetup.runner import read_extra_vars

    (tmp_path / "v.yml").write_text("a_var: 1\nb_var: [x]\nk1: from-file\n")
    (tmp_path / "list.yml").write_text("- not a mapping\n")
    got = read_extra_vars(["k1=v k2='two words'", '{"j": 1}', f"@{tmp_path / 'v.yml'}"])
    assert got == {"k1": "from-file", "k2": "two words", "j": 1, "a_var": 1, "b_var": ["x"]}  # later wins
    for bad in (f"@{tmp_path / 'list.yml'}", f"@{tmp_path / 'absent.yml'}", "nonsense", "{unclosed: [1"):
        with pytest.raises(UsageError, match="^-e "):
            read_extra_vars([bad])
