"""Whether this machine can give ansible-runner the pseudo-terminal it runs ansible-playbook on.

ansible-runner starts ansible-playbook through pexpect, which opens a pseudo-terminal; a host without
one (a chroot or container with no ``/dev/pts`` mounted, or every pty in use) otherwise ends in a
traceback deep in ptyprocess ("out of pty devices")."""

from __future__ import annotations

import os

from dlsetup.errors import EXIT_FAILED, DlsetupError


def require_pty() -> None:
    """Open and close one pseudo-terminal; raise a one-line :class:`DlsetupError` when none can be had."""
    try:
        primary, secondary = os.openpty()
    except OSError as err:
        reason = err.strerror or str(err)
        raise DlsetupError(
            f"cannot open a pseudo-terminal ({reason}), which Ansible runs on: mount devpts on /dev/pts "
            "(in a chroot or container: bind-mount the host's /dev/pts) and run again; nothing was changed",
            EXIT_FAILED) from None
    os.close(primary)
    os.close(secondary)
