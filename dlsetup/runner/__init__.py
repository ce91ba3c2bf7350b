"""The only package that talks to Ansible: every playbook and inventory call goes through here.

Runs go through ansible-runner with a throw-away private data dir, tuned settings (pipelining, a fork
per host, SSH ControlPersist, smart gathering of only the facts the roles read with a JSON fact cache,
host key checking on; mitogen's strategy with ``DLSETUP_MITOGEN=1``) and an event
handler that aggregates ansible-runner's structured events into typed results
(:mod:`dlsetup.runner.results`) and, on a terminal, a live per-host progress table.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from rich.console import Console

from dlsetup.errors import UsageError
from dlsetup.runner.results import HostResult, RunResult, Tally, TaskFailure

__all__ = ["HostResult", "RunOptions", "RunResult", "TaskFailure", "ansible_dir", "cache_dir",
           "list_inventory", "run_playbooks"]

#: seconds cached facts stay valid (long enough for a check run followed by the real one)
FACT_CACHE_SECONDS = 600


@dataclass(frozen=True)
class RunOptions:
    """How to run: the ansible-playbook options dlsetup exposes."""

    check: bool = False
    diff: bool = False
    tags: Tuple[str, ...] = ()
    skip_tags: Tuple[str, ...] = ()
    limit: Optional[str] = None
    extra_vars: Tuple[str, ...] = ()  #: ``KEY=VALUE``, JSON/YAML mappings or ``@file``, as for ``-e``
    become: Optional[bool] = None  #: True: ``--become`` for every host; None/False: as the inventory says
    forks: Optional[int] = None  #: None: one per host (:func:`dlsetup.fleet.tuned_ansible_env`)

    def cmdline(self) -> List[str]:
        args = ["--forks", str(self.forks)] if self.forks else []
        args += ["--check"] if self.check else []
        args += ["--diff"] if self.diff else []
        args += ["--become"] if self.become else []
        args += ["--tags", ",".join(self.tags)] if self.tags else []
        args += ["--skip-tags", ",".join(self.skip_tags)] if self.skip_tags else []
        args += ["--limit", self.limit] if self.limit else []
        for value in self.extra_vars:
            args += ["--extra-vars", value]
        return args


def check_extra_vars(values: Sequence[str]) -> Tuple[str, ...]:
    """Validate ``-e`` values before anything runs: ``@file`` must exist, the rest be KEY=VALUE or a mapping."""
    for value in values:
        if value.startswith("@"):
            if not Path(value[1:]).is_file():
                raise UsageError(f"extra vars file not found: {value[1:]}")
        elif "=" not in value.split(None, 1)[0] and not value.lstrip().startswith("{"):
            raise UsageError(f"extra var {value!r} is not KEY=VALUE, a JSON mapping or @file")
    return tuple(values)


def ansible_dir() -> Path:
    """The folder holding ``roles/`` and ``playbooks/``: the source tree, or ``dlsetup/ansible`` in a wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent, package / "ansible"):
        if (candidate / "roles").is_dir() and (candidate / "playbooks").is_dir():
            return candidate
    raise UsageError(f"the Ansible roles and playbooks are missing from this installation ({package})")


def cache_dir() -> Path:
    """dlsetup's cache folder (``$XDG_CACHE_HOME/dlsetup``, default ``~/.cache/dlsetup``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlsetup"


def _environment(hosts: Collection[str]) -> Dict[str, str]:
    """Tuned Ansible settings for a run over ``hosts`` (:func:`dlsetup.fleet.tuned_ansible_env`, with
    facts cached per host in JSON under :func:`cache_dir`, in memory only when a host name is a path,
    a chroot, which the JSON cache cannot name a file after); the user's own ``ANSIBLE_*`` environment
    wins over each of them."""
    from dlsetup.fleet import tuned_ansible_env

    tuned = {
        **tuned_ansible_env(len(hosts), cache_dir() / "facts",
                            mitogen=os.environ.get("DLSETUP_MITOGEN", "").lower() in ("1", "true", "yes")),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(FACT_CACHE_SECONDS),
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_ROLES_PATH": str(ansible_dir() / "roles"),
    }
    if any("/" in host for host in hosts):
        tuned["ANSIBLE_CACHE_PLUGIN"] = "ansible.builtin.memory"
        del tuned["ANSIBLE_CACHE_PLUGIN_CONNECTION"]
    env = {key: value for key, value in tuned.items() if key not in os.environ}
    # ansible-playbook and ansible-inventory sit next to the interpreter that runs dlsetup
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    return env


def _write_inventory(directory: Path, host_vars: Mapping[str, Mapping[str, Any]]) -> Path:
    """An inventory source that gives each host its own variables (e.g. its plan)."""
    path = directory / "dlsetup-hosts.yml"
    hosts = {name: dict(variables) for name, variables in host_vars.items()}
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False), encoding="utf-8")
    return path


def run_playbooks(playbooks: Sequence[Path], inventory: Sequence[str], *,
                  host_vars: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  hosts: Collection[str] = (), options: RunOptions = RunOptions(), capture: Collection[str] = (),
                  reboot_task: Optional[str] = None, console: Optional[Console] = None) -> RunResult:
    """Run ``playbooks`` in order as one ansible-playbook run over the ``inventory`` sources.

    ``host_vars`` become inventory host variables of a source added last (so they override the
    inventory's own host and group variables in files, while its ``host_vars/`` folders and ``-e``
    still override them). ``hosts`` are the hosts the run targets (default: those of ``host_vars``); the
    settings are tuned for them (see :func:`_environment`). Results of the tasks named in ``capture`` are kept per host; the task named
    ``reboot_task`` (a ``stat`` of the reboot marker) gives ``reboot_required``. Live progress is
    shown on ``console`` when it is a terminal. Host failures are in the result, never raised."""
    import ansible_runner

    from dlsetup.runner.terminal import require_pty

    require_pty()  # ansible-runner's pexpect needs one: a clear line instead of its traceback
    console = console or Console(stderr=True)
    tally = Tally(capture=set(capture) | ({reboot_task} if reboot_task else set()))
    with tempfile.TemporaryDirectory(prefix="dlsetup-run-") as tmp:
        private = Path(tmp)
        project = private / "project"
        project.mkdir()
        main = project / "main.yml"
        main.write_text(yaml.safe_dump([{"ansible.builtin.import_playbook": str(p)} for p in playbooks]),
                        encoding="utf-8")
        sources = list(inventory)
        if host_vars:
            sources.append(str(_write_inventory(private, host_vars)))
        kwargs: Dict[str, Any] = dict(
            private_data_dir=str(private), playbook=str(main), inventory=sources, envvars=_environment(hosts or list(host_vars or {})),
            cmdline=shlex.join(options.cmdline()), event_handler=tally.handle, quiet=True,
            # anything but "jsonfile" leaves the fact cache to the environment's settings
            fact_cache_type="environment",
        )
        if console.is_terminal:
            from dlsetup.runner.progress import Progress

            with Progress(tally, console):
                run = ansible_runner.run(**kwargs)
        else:
            run = ansible_runner.run(**kwargs)
    return tally.result(run.rc if run.rc is not None else 1, reboot_task)


def list_inventory(sources: Sequence[str], limit: Optional[str] = None) -> Tuple[int, Dict[str, Any], str]:
    """``ansible-inventory --list`` over ``sources``: (exit status, the JSON inventory, stderr)."""
    import ansible_runner

    args = ["--list"]
    for source in sources:
        args += ["--inventory", source]
    args += ["--limit", limit] if limit else []
    out, err, rc = ansible_runner.run_command(executable_cmd="ansible-inventory", cmdline_args=args,
                                              envvars=_environment(()), runner_mode="subprocess", quiet=True)
    try:
        data = json.loads(out) if rc == 0 else {}
    except ValueError:
        data = {}
    return rc, data if isinstance(data, dict) else {}, err
