"""The command line: thin. Each subcommand lives in its own module and is imported only when run,
so ``dlsetup probe --json`` pays for nothing it does not use."""

from __future__ import annotations

import importlib
import sys

import click

from dlsetup import __version__
from dlsetup.errors import DlsetupError

#: subcommand -> "module:attribute" of its click command
COMMANDS = {
    "probe": "dlsetup.commands.probe:probe",
    "check": "dlsetup.commands.check:check",
    "plan": "dlsetup.commands.plan:plan",
    "provision": "dlsetup.commands.provision:provision",
    "verify": "dlsetup.commands.verify:verify",
    "status": "dlsetup.commands.status:status",
    "report": "dlsetup.commands.report:report",
    "mirror": "dlsetup.commands.mirror:mirror",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the command is not part of this build
                return None
            raise
        return with_verbose(command)


def _verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:  # a command's own -v adds to none given before it, never lowers one
        from dlsetup.logs import setup, verbosity

        setup(max(value, verbosity()))


def with_verbose(command: click.Command) -> click.Command:
    """``command`` with ``-v``/``-vv`` (once: the command objects are shared)."""
    if not any(param.name == "verbose" for param in command.params):
        command.params.append(click.Option(
            ["-v", "--verbose"], count=True, expose_value=False, is_eager=True, callback=_verbose,
            help="Say more on stderr: -v what dlsetup does and Ansible's output of failed tasks "
                 "(ansible-playbook -v), -vv all of Ansible's output (-vv)."))
    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlsetup")
@click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_verbose,
              help="Say more on stderr (-v, -vv); also accepted after the command's name.")
def cli():
    """Turn a bare Linux box, or a fleet, into a verified deep-learning workstation."""


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="dlsetup", standalone_mode=False)
    except DlsetupError as err:
        click.echo(f"dlsetup: error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("dlsetup: aborted", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    sys.exit(0)
