"""Plans on the terminal for ``dlsetup provision``: one host's whole plan, or a fleet's plans grouped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from dlsetup.fleet import PlanGroup, ProbeFailure
    from dlsetup.plan import Plan


def render_groups(groups: Sequence[PlanGroup], failures: Sequence[ProbeFailure] = ()) -> Any:
    """A rich table: one row per group (its hosts, roles and decisions), then the hosts without a plan."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="plans by host group", title_justify="left", header_style="bold")
    for column in ("hosts", "roles", "stack"):
        table.add_column(column)
    for group in groups:
        stack = ", ".join(f"{topic} {choice}" for topic, choice in group.choices)
        table.add_row(escape(", ".join(group.hosts)), escape(" > ".join(group.roles)), escape(stack))
    for failure in failures:
        table.add_row(f"[red]{escape(failure.host)}[/]", f"[red]{failure.status}[/]", escape(failure.message))
    return table


def show_plans(plans: Mapping[str, Plan], failures: Sequence[ProbeFailure], console: Any) -> None:
    """One host: its whole plan with the reasons; a fleet: the plans grouped, then the hosts without one."""
    if len(plans) == 1 and not failures:
        from dlsetup.plan.render import render_plan

        render_plan(next(iter(plans.values())), console)
        return
    from rich.markup import escape

    from dlsetup.fleet import group_plans

    console.print(render_groups(group_plans(plans), failures))
    for host, plan in plans.items():
        for disk in plan.destroys:
            console.print(f"[bold red]DESTROY DATA[/bold red] on {escape(host)}: {escape(disk)}"
                          " - wiped by --destroy-data")
