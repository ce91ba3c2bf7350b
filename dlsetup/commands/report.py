"""``dlsetup report``: one HTML page for a host or a fleet, from the JSON the other commands print."""

from __future__ import annotations

from pathlib import Path

import click

from dlsetup.errors import UsageError


@click.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("dlsetup-report.html"),
              show_default=True, help="HTML file to write.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
def report(output: Path, inputs: tuple[Path, ...]) -> None:
    """Render the JSON of probe, check, plan and verify (any hosts, any mix) as one self-contained page."""
    from dlsetup.report import read_inputs, render

    hosts = read_inputs(inputs)
    try:
        output.write_text(render(hosts), encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {output}: {err.strerror or err}") from err
    click.echo(f"wrote {output}: {len(hosts)} host{'' if len(hosts) == 1 else 's'}")
