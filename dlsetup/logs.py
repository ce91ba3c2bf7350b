"""How much dlsetup says: ``-v`` / ``-vv`` on every command set the level of the ``dlsetup`` logger,
whose messages go to stderr; the runner passes the same verbosity on to Ansible (:func:`verbosity`)."""

from __future__ import annotations

import logging
import sys
from typing import Any

LOGGER = "dlsetup"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a live progress display redirects it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup(verbose: int) -> None:
    """0: warnings only; 1 (``-v``): what dlsetup does and Ansible's output of failed tasks; 2 or more
    (``-vv``): everything, Ansible's whole output among it."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG)
    if not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("dlsetup: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


def verbosity() -> int:
    """The verbosity asked for: 0, 1 (``-v``) or 2 (``-vv``)."""
    level = logging.getLogger(LOGGER).getEffectiveLevel()
    return 2 if level <= logging.DEBUG else 1 if level <= logging.INFO else 0
