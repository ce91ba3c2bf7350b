"""The only package that talks to Ansible: every playbook and inventory call goes through here.

Runs go through ansible-runner with a private data dir kept as the run's record
(:mod:`dlsetup.runner.records`), tuned settings (pipelining, a fork
per host, SSH ControlPersist, smart gathering of only the facts the roles read with a JSON fact cache,
host key checking on; mitogen's strategy with ``DLSETUP_MITOGEN=1``) and an event
handler that aggregates ansible-runner's structured events into typed results
(:mod:`dlsetup.runner.results`) and, on a terminal, a live per-host progress table.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from rich.console import Console

from dlsetup.errors import UsageError
from dlsetup.runner.results import HostResult, RunResult, Tally, TaskFailure

__all__ = ["COLLECTION", "HostResult", "RunOptions", "RunResult", "TaskFailure", "ansible_dir", "cache_dir",
           "extra_vars_files", "link_collection", "list_inventory", "read_extra_vars", "run_playbooks"]

_log = logging.getLogger("dlsetup.runner")

#: the Ansible collection the roles, playbooks and plugins form (galaxy.yml): roles, modules and filters are
#: called by their fully qualified names, dlsetup.workstation.<name>
COLLECTION = ("dlsetup", "workstation")
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
    forks: Optional[int] = None  #: None: one per host (:func:`dlsetup.runner.settings.tuned_ansible_env`)

    def cmdline(self) -> List[str]:
        """ansible-playbook's options, less the extra vars: their values never go on a command line
        (``ps`` shows it to every user, and ansible-runner records it), see :func:`extra_vars_files`."""
        args = ["--forks", str(self.forks)] if self.forks else []
        args += ["--check"] if self.check else []
        args += ["--diff"] if self.diff else []
        args += ["--become"] if self.become else []
        args += ["--tags", ",".join(self.tags)] if self.tags else []
        args += ["--skip-tags", ",".join(self.skip_tags)] if self.skip_tags else []
        args += ["--limit", self.limit] if self.limit else []
        return args


def extra_vars_files(values: Sequence[str], directory: Path) -> List[str]:
    """``--extra-vars @FILE`` arguments for the ``-e`` ``values``, in their order (a later one wins, as
    with ``-e``): a ``@file`` as given, each inline value (``KEY=VALUE`` as Ansible splits it, or a
    JSON/YAML mapping) written to its own file, readable by its owner only, in ``directory``. So the
    values (become passwords among them) are on no command line, only file names are."""
    from ansible.parsing.splitter import parse_kv

    args: List[str] = []
    for index, value in enumerate(values):
        if value.startswith("@"):
            args += ["--extra-vars", value]
            continue
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"extra-vars-{index}.yml"
        text = value if value.lstrip()[:1] in ("{", "[") else json.dumps(parse_kv(value))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        args += ["--extra-vars", f"@{path}"]
    return args


def read_extra_vars(values: Sequence[str]) -> Dict[str, Any]:
    """The variables the ``-e`` ``values`` set, merged in their order (a later one wins), read as Ansible reads
    them: ``KEY=VALUE ...`` split by Ansible's own splitter (values are strings), a JSON/YAML mapping, or
    ``@file`` (YAML or JSON). A value that sets no mapping is :class:`UsageError` (Ansible refuses it too)."""
    import yaml
    from ansible.parsing.splitter import parse_kv

    merged: Dict[str, Any] = {}
    for value in values:
        try:
            if value.startswith("@"):
                data = yaml.safe_load(Path(value[1:]).read_text(encoding="utf-8"))
            elif value.lstrip()[:1] in ("{", "["):
                data = yaml.safe_load(value)
            elif "=" in value.split(None, 1)[0]:
                data = parse_kv(value)
            else:
                data = None
        except (OSError, yaml.YAMLError, ValueError) as err:
            raise UsageError(f"-e {value!r}: cannot be read ({err.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise UsageError(f"-e {value!r}: not a mapping (use KEY=VALUE, a JSON/YAML mapping or @file)")
        merged.update({str(key): item for key, item in data.items()})
    return merged


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
    """The root of the collection dlsetup.workstation, holding ``roles/``, ``playbooks/`` and ``plugins/``: the
    source tree, or ``dlsetup/ansible`` in a wheel (pyproject.toml's force-include)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent, package / "ansible"):
        if all((candidate / folder).is_dir() for folder in ("roles", "playbooks", "plugins")):
            return candidate
    raise UsageError(f"the Ansible roles, playbooks and plugins are missing from this installation ({package})")


def link_collection(directory: Path) -> Path:
    """Make ``directory`` a collections path that holds this installation's own tree (:func:`ansible_dir`) as
    the collection dlsetup.workstation: ``directory/ansible_collections/dlsetup/workstation`` is a link to it.
    So the roles, modules and filters called by their fully qualified names are this installation's, with
    nothing installed into the user's collections. Returns ``directory``."""
    link = directory.joinpath("ansible_collections", *COLLECTION)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = ansible_dir()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return directory
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)
    return directory


def cache_dir() -> Path:
    """dlsetup's cache folder (``$XDG_CACHE_HOME/dlsetup``, default ``~/.cache/dlsetup``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlsetup"


def _environment(hosts: Collection[str], sources: Sequence[str] = ()) -> Dict[str, str]:
    """Tuned Ansible settings for a run over ``hosts`` of the inventory ``sources``
    (:func:`dlsetup.runner.settings.tuned_ansible_env`, with facts cached per host in JSON in a folder of
    that inventory's own under :func:`cache_dir` (:func:`dlsetup.runner.settings.fact_cache_dir`), in memory only
    when a host name is a path, a chroot, which the JSON cache cannot name a file after); the user's own
    ``ANSIBLE_*`` environment wins over each of them."""
    from dlsetup.runner.settings import fact_cache_dir, tuned_ansible_env

    tuned = {
        **tuned_ansible_env(len(hosts), fact_cache_dir(sources, cache_dir()),
                            mitogen=os.environ.get("DLSETUP_MITOGEN", "").lower() in ("1", "true", "yes")),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(FACT_CACHE_SECONDS),
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_NOCOLOR": "True",
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # kept in the run record
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    return path


def run_playbooks(playbooks: Sequence[Path], inventory: Sequence[str], *,
                  host_vars: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  hosts: Collection[str] = (), options: RunOptions = RunOptions(), capture: Collection[str] = (),
                  reboot_task: Optional[str] = None, console: Optional[Console] = None,
                  documents: Optional[Mapping[str, Any]] = None, command: Optional[str] = None) -> RunResult:
    """Run ``playbooks`` in order as one ansible-playbook run over the ``inventory`` sources.

    ``host_vars`` become inventory host variables of a source added last (so they override the
    inventory's own host and group variables in files, while its ``host_vars/`` folders and ``-e``
    still override them). ``hosts`` are the hosts the run targets (default: those of ``host_vars``); the
    settings are tuned for them (see :func:`_environment`). Results of the tasks named in ``capture`` are
    kept per host; the task named ``reboot_task`` (a ``stat`` of the reboot marker) gives
    ``reboot_required``. Live progress is shown on ``console`` when it is a terminal. Host failures are in
    the result, never raised.

    The run keeps its record (:mod:`dlsetup.runner.records`), named after ``command`` (default: the
    dlsetup command running): ``documents`` (file name -> JSON document, e.g. the plans), ansible-runner's
    artifacts and ``summary.json``; :attr:`RunResult.record` is its folder."""
    from dlsetup.runner import records

    from dlsetup.runner.terminal import require_pty

    require_pty()  # ansible-runner's pexpect needs one: a clear line instead of its traceback
    console = console or Console(stderr=True)
    tally = Tally(capture=set(capture) | ({reboot_task} if reboot_task else set()))
    private = records.new_record(command or records.command_name(Path(playbooks[0]).stem if playbooks else "run"))
    _log.info("run record: %s", private)
    for name, document in (documents or {}).items():
        records.write_json(private / name, document)
    try:
        rc = _run(private, playbooks, inventory, host_vars, hosts, options, tally, console)
    finally:
        records.scrub_artifacts(private)
    result = replace(tally.result(rc, reboot_task), record=private)
    records.write_json(private / records.SUMMARY, result.to_dict())
    return result


def _run(private: Path, playbooks: Sequence[Path], inventory: Sequence[str],
         host_vars: Optional[Mapping[str, Mapping[str, Any]]], hosts: Collection[str], options: RunOptions,
         tally: Tally, console: Console) -> int:
    """One ansible-runner run in the folder ``private``, its events into ``tally``: the exit status."""
    import ansible_runner

    from dlsetup.logs import verbosity

    project = private / "project"
    project.mkdir()
    # the collection dlsetup.workstation next to the playbook: Ansible searches a playbook's adjacent
    # collections/ before any configured path, so neither a dlsetup.workstation the user installed nor
    # ANSIBLE_COLLECTIONS_PATH stands in for this installation's roles, modules and filters
    link_collection(project / "collections")
    main = project / "main.yml"
    main.write_text(yaml.safe_dump([{"ansible.builtin.import_playbook": str(p)} for p in playbooks]),
                    encoding="utf-8")
    # ansible-runner runs in the record's folder: a relative inventory path is the user's, from here
    sources = [str(Path(source).absolute()) if os.path.exists(source) else source for source in inventory]
    if host_vars:
        sources.append(str(_write_inventory(private, host_vars)))
    verbose = verbosity()
    kwargs: Dict[str, Any] = dict(
        private_data_dir=str(private), playbook=str(main), inventory=sources,
        envvars=_environment(hosts or list(host_vars or {}), inventory),
        cmdline=shlex.join(options.cmdline() + extra_vars_files(options.extra_vars, private / "env" / "vars")),
        event_handler=_logged(tally.handle, verbose), quiet=True,
        # anything but "jsonfile" leaves the fact cache to the environment's settings
        fact_cache_type="environment",
    )
    if verbose:
        kwargs["verbosity"] = verbose
    if console.is_terminal:
        from dlsetup.runner.progress import Progress

        with Progress(tally, console):
            run = ansible_runner.run(**kwargs)
    else:
        run = ansible_runner.run(**kwargs)
    return run.rc if run.rc is not None else 1


#: Ansible's colour codes, which its output may carry whatever ANSIBLE_NOCOLOR says
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _logged(handle: Callable[[Mapping[str, Any]], bool], verbose: int) -> Callable[[Mapping[str, Any]], bool]:
    """``handle``, after logging Ansible's own output of the event: with ``-v`` that of failed and
    unreachable tasks, with ``-vv`` all of it."""
    if not verbose:
        return handle

    def logged(event: Mapping[str, Any]) -> bool:
        text = _COLOUR.sub("", str(event.get("stdout") or "")).strip()
        if text and (verbose >= 2 or event.get("event") in ("runner_on_failed", "runner_on_unreachable")):
            _log.log(logging.DEBUG if verbose >= 2 else logging.INFO, "%s", text)
        return handle(event)
    return logged


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
