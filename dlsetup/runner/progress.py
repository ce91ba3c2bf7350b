"""Live progress of a run with rich: per host, the current task and the ok/changed/failed counts."""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dlsetup.runner.results import HostResult, RunResult, Tally


def _table(tally: Tally) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("host", "left"), ("task", "left"), ("ok", "right"), ("changed", "right"),
                            ("failed", "right"), ("skipped", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for host, state in tally.hosts.items():
        task = "[red]unreachable[/]" if state.unreachable else escape(state.task)
        table.add_row(escape(host), task, str(state.ok), f"[yellow]{state.changed}[/]",
                      f"[red]{state.failed}[/]" if state.failed else "0", str(state.skipped))
    return table


class Progress:
    """Context manager: shows the tally live while the run goes on (only on a terminal)."""

    def __init__(self, tally: Tally, console: Console):
        self._live = Live(get_renderable=lambda: _table(tally), console=console, transient=True,
                          refresh_per_second=4)

    def __enter__(self) -> "Progress":
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)


_STYLE: Mapping[str, str] = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red"}


def summary(result: RunResult, title: str = "provision summary", reboot: bool = True) -> RenderableType:
    """The final per-host table: counters, reboot required (unless not ``reboot``), and the failing task
    with its message and the failing tool's last error lines."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("host", "status", "ok", "changed", "failed", "unreachable", "skipped") + ("reboot",) * reboot:
        table.add_column(column, justify="left" if column in ("host", "status") else "right")
    for host in result.hosts:
        table.add_row(escape(host.host), f"[{_STYLE[host.status]}]{host.status}[/]", str(host.ok), str(host.changed),
                      str(host.failed), str(host.unreachable), str(host.skipped), *[_reboot(host)] * reboot)
    failures = [h for h in result.hosts if h.failure is not None]
    if not failures:
        return table
    grid = Table.grid()
    grid.add_row(table)
    for host in failures:
        assert host.failure is not None
        failure = host.failure
        grid.add_row(f"[red]{escape(host.host)}[/]: {escape(failure.task)}: {escape(failure.message)}")
        if failure.detail and not (len(failure.detail) == 1 and failure.detail[0] in failure.message):
            for line in failure.detail:
                grid.add_row(Text(f"    {line}", style="dim"))
    return grid


def print_summary(result: RunResult, console: Console, title: str = "provision summary", reboot: bool = True) -> None:
    """Print :func:`summary`, then, when a host failed or the run did not, where the run record is (the
    full log), on one line whatever the terminal's width, so that it can be copied."""
    console.print(summary(result, title, reboot))
    if result.record is not None and (result.error or any(h.failure is not None for h in result.hosts)):
        console.print(f"full log and run record: {result.record}", soft_wrap=True, markup=False, highlight=False)


def _reboot(host: HostResult) -> str:
    if host.reboot_required is None:
        return "unknown"
    return "[bold yellow]yes[/]" if host.reboot_required else "no"
