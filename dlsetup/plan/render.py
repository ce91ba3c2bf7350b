"""Human output of a plan: a rich tree of the decisions with their reasons, then the roles."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from dlsetup.plan.planner import Plan


def render_plan(plan: Plan, console: Console) -> None:
    """Print the decisions (choice, reason, rule) and the ordered roles of ``plan``."""
    tree = Tree(f"[bold]plan for {escape(plan.host)}[/bold]")
    for d in plan.decisions:
        dated = f"{d.source}, as of {d.as_of}" if d.as_of else d.source
        tree.add(f"[cyan]{escape(d.topic)}[/cyan]: [bold]{escape(d.choice)}[/bold] - {escape(d.reason)} "
                 f"[dim]({escape(d.rule)}; {escape(dated)})[/dim]")
    console.print(tree)
    if plan.sources:
        sources = Table("source", "as of", "where", title="sources", title_justify="left")
        for name, source in plan.sources.items():
            sources.add_row(name, str(source.get("as_of") or "unknown"),
                            str(source.get("url") or source.get("what") or "") + (" (cached)" if source.get("cached")
                                                                                   else ""))
        console.print(sources)
    roles = Table("step", "role", title="roles, in order", title_justify="left")
    for number, role in enumerate(plan.roles, 1):
        roles.add_row(str(number), role)
    console.print(roles)
    for disk in plan.destroys:
        console.print(f"[bold red]DESTROY DATA[/bold red]: {escape(disk)} - wiped by --destroy-data")
    for warning in plan.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning)}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    if plan.reboot_required:
        console.print("[bold red]reboot required[/bold red]")
