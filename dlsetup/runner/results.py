"""Typed results of a run, and the aggregation of ansible-runner events into them.

:class:`Tally` consumes the structured events ansible-runner emits (``runner_on_*``,
``playbook_on_task_start``, ``playbook_on_stats``); nothing is read from Ansible's human output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Dict, Mapping, Optional, Tuple

#: the ``playbook_on_stats`` counters, as Ansible names them -> our names
_STATS = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
          "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}


#: ansible-playbook's exit statuses that mean "ran; hosts failed or were unreachable" (0 ok, 2, 4)
PLAYBOOK_HOST_STATUSES = (0, 2, 4)

#: what Ansible, mitogen and sudo/su say when privilege escalation, or an unprivileged task, fails
#: (mitogen names its become prompt in the command of an escalation it could not start)
_PRIVILEGES = re.compile(
    r"missing sudo password|incorrect sudo password|a password is required|not in the sudoers|"
    r"privilege escalation|waiting for become|sudo: (?:command )?not found|are you root|permission denied|"
    r"child start failed:.*-p mitogen-\w+-prompt",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed on a host, or the host that could not be reached."""

    task: str
    message: str  #: one line: the module's message and the tool's last error line
    unreachable: bool = False
    detail: Tuple[str, ...] = ()  #: the failing tool's own last error lines (:func:`failure_detail`)

    @property
    def privileges(self) -> bool:
        """The failure is missing privileges (become failed, or a task needed root)."""
        return bool(_PRIVILEGES.search(self.message))


@dataclass(frozen=True)
class HostResult:
    """What a run did on one host. Counters are Ansible's play recap."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    reboot_required: Optional[bool] = None  #: None: the run did not get as far as checking
    failure: Optional[TaskFailure] = None  #: the first failure, when any
    captured: Mapping[str, Any] = field(default_factory=dict)  #: task name -> its result, for captured tasks

    @property
    def status(self) -> str:
        """``unreachable``, ``failed``, ``changed`` or ``ok``."""
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (captured results are left out: they are internal)."""
        failure = self.failure
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "skipped": self.skipped,
            "rescued": self.rescued,
            "ignored": self.ignored,
            "reboot_required": self.reboot_required,
            "failure": None if failure is None else {"task": failure.task, "message": failure.message,
                                                     "detail": list(failure.detail)},
        }


@dataclass(frozen=True)
class RunResult:
    """A whole run: one :class:`HostResult` per host that took part, in inventory order."""

    hosts: Tuple[HostResult, ...]
    rc: int  #: ansible-playbook's exit status
    error: Optional[str] = None  #: why ansible-playbook itself failed (not a host), in one line
    record: Optional[Path] = None  #: the run record's folder (:mod:`dlsetup.runner.records`), when kept

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: exit status, error, record folder and every host's summary."""
        return {"rc": self.rc, "error": self.error, "record": None if self.record is None else str(self.record),
                "hosts": [host.to_dict() for host in self.hosts]}

    def host(self, name: str) -> HostResult:
        return next(h for h in self.hosts if h.host == name)


@dataclass
class HostState:
    """Live per-host state while a run goes on (what the progress display shows)."""

    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    failure: Optional[TaskFailure] = None
    captured: Dict[str, Any] = field(default_factory=dict)


#: how many of the failing tool's last error lines a failure keeps, and how long each may be
DETAIL_LINES = 5
LINE_CHARS = 200


def _lines(text: Any) -> list[str]:
    """The non-empty lines of ``text`` (a string or a list of lines), stripped."""
    if isinstance(text, (list, tuple)):
        text = "\n".join(str(line) for line in text)
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def _tool_output(res: Mapping[str, Any]) -> Tuple[str, list[str], list[str]]:
    """(the module's own message, the failing tool's error lines, its stdout lines) of a task result.

    The tool's errors are its stderr; the pip module folds stdout and stderr into its message
    (``stdout: ...\n:stderr: ...``), which is split back here; a module that crashed left them in
    ``module_stderr``."""
    msg = str(res.get("msg") or "").strip()
    for prefix in ("Task failed: ", "Module failed: "):
        msg = msg.removeprefix(prefix)
    stdout = _lines(res.get("stdout_lines") or res.get("stdout"))
    stderr = _lines(res.get("stderr_lines") or res.get("stderr"))
    if msg.startswith("stdout: ") or "\n:stderr: " in msg:  # ansible.builtin.pip
        out, _, err = msg.partition("\n:stderr: ")
        stdout = stdout or _lines(out.removeprefix("stdout: ") if out.startswith("stdout: ") else "")
        stderr = stderr or _lines(err)
        msg = ""
    return msg, stderr, stdout


def failure_detail(res: Mapping[str, Any]) -> Tuple[str, ...]:
    """The failing tool's own last error lines (pip, apt, dpkg, mdadm...): at most :data:`DETAIL_LINES`
    non-empty lines, each cut to :data:`LINE_CHARS`. From its stderr; else what a crashed module wrote;
    else a message of several lines (its last lines); else the end of its stdout."""
    inner = res.get("failed_modules")
    if isinstance(inner, dict) and inner:
        return failure_detail(next(iter(inner.values())))
    msg, stderr, stdout = _tool_output(res)
    lines = stderr or _lines(res.get("module_stderr")) or (_lines(msg) if len(_lines(msg)) > 1 else []) or stdout
    return tuple(line[:LINE_CHARS] for line in lines[-DETAIL_LINES:])


def failure_message(res: Mapping[str, Any]) -> str:
    """One line that says why a task failed: the module's message, with the tool's last error line."""
    inner = res.get("failed_modules")  # fact gathering: the reason is in the module that failed
    if isinstance(inner, dict) and inner:
        return failure_message(next(iter(inner.values())))
    msg, stderr, stdout = _tool_output(res)
    crash = str(res.get("module_stderr") or "").strip()
    # a command's stderr ends with its reason; a module that crashed starts with it, unless it is a
    # Python traceback, which ends with it (the exception)
    crash_lines = crash.splitlines()
    if crash_lines and crash_lines[0].startswith("Traceback (most recent call last)"):
        crash_lines.reverse()
    detail = stderr[-1] if stderr else crash_lines[0].strip() if crash_lines else ""
    if not msg and not detail and stdout:
        detail = stdout[-1]
    if detail and detail not in msg:
        msg = f"{msg}: {detail}" if msg else detail
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    first = lines[0] if lines else "failed without a message"
    if first.endswith(":") and len(lines) > 1:  # mitogen: "EOF on stream; last 100 lines received:" + them
        first = f"{first} {lines[-1]}"
    return first[:500]


class Tally:
    """Aggregates ansible-runner events. ``handle`` is the ``event_handler``; ``hosts`` the live state."""

    def __init__(self, capture: Collection[str] = ()):
        self.capture = frozenset(capture)
        self.hosts: Dict[str, HostState] = {}
        self.stats: Optional[Dict[str, Dict[str, int]]] = None
        self.errors: list[str] = []  #: Ansible's own error lines (a run that stopped before any host)

    def state(self, host: str) -> HostState:
        return self.hosts.setdefault(host, HostState())

    def handle(self, event: Mapping[str, Any]) -> bool:
        """Record one event; returns True so ansible-runner keeps writing its artifacts."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host, task = data.get("host"), str(data.get("task") or "")
        res = data.get("res") or {}
        if kind == "runner_on_start" and host:
            self.state(host).task = task
        elif (kind == "runner_on_ok" or (kind == "runner_on_failed" and data.get("ignore_errors"))) and host:
            state = self.state(host)
            state.ok += 1  # as in Ansible's recap: changed and ignored-failed tasks count as ok too
            state.changed += bool(res.get("changed"))
            if task in self.capture:
                state.captured[task] = res
        elif kind == "runner_on_skipped" and host:
            self.state(host).skipped += 1
        elif kind == "runner_on_failed" and host:
            state = self.state(host)
            state.failed += 1
            state.failure = state.failure or TaskFailure(task, failure_message(res), detail=failure_detail(res))
        elif kind == "runner_on_unreachable" and host:
            state = self.state(host)
            state.unreachable = True
            state.failure = state.failure or TaskFailure(task, failure_message(res), unreachable=True,
                                                         detail=failure_detail(res))
        elif kind == "playbook_on_stats":
            self.stats = {key: dict(data.get(key) or {}) for key in _STATS}
        elif kind in ("error", "verbose") and "ERROR" in str(event.get("stdout", "")):
            self.errors.append(str(event["stdout"]))
        return True

    def result(self, rc: int, reboot_task: Optional[str] = None) -> RunResult:
        """The final :class:`RunResult`; counters come from the play recap (``playbook_on_stats``)."""
        stats = self.stats or {}
        names = list(self.hosts)
        for counters in stats.values():
            names.extend(h for h in counters if h not in names)
        hosts = []
        for name in names:
            state = self.state(name)
            counts = {ours: stats.get(theirs, {}).get(name, 0) for theirs, ours in _STATS.items()}
            reboot = None
            marker = state.captured.get(reboot_task) if reboot_task else None
            if marker is not None:
                reboot = bool(marker.get("stat", {}).get("exists"))
            hosts.append(HostResult(host=name, reboot_required=reboot, failure=state.failure,
                                    captured=dict(state.captured), **counts))
        error = None
        if rc not in PLAYBOOK_HOST_STATUSES or not hosts:
            error = _error_line(self.errors) or f"ansible-playbook exited with status {rc}"
        return RunResult(tuple(hosts), rc, error)


def _error_line(chunks: list[str]) -> Optional[str]:
    """The first ``[ERROR]: ...`` line Ansible printed, without colour codes."""
    for chunk in chunks:
        for line in re.sub(r"\x1b\[[0-9;]*m", "", chunk).splitlines():
            line = line.strip()
            if "ERROR" in line:
                return re.sub(r"^\[?ERROR\]?!?:?\s*", "", line)[:500]
    return None
