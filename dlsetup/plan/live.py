"""What the package indexes publish for a request: the live facts :func:`dlsetup.plan.make_plan` weighs
against the shipped tables (``dlsetup plan``, ``provision`` and ``status`` ask them the same way)."""

from __future__ import annotations

import os
from typing import Any


def live_facts(request: Any) -> Any:
    """What the package indexes publish for ``request`` (a :class:`dlsetup.pkgindex.LiveIndex`), or None with
    --offline (or DLSETUP_OFFLINE=1). With --pip-offline only the --pip-find-links directories are read."""
    if request.offline or os.environ.get("DLSETUP_OFFLINE") == "1":
        return None
    from dlsetup import pkgindex
    from dlsetup.plan import compat
    from dlsetup.plan.request import keras_backend

    backend = keras_backend(request)
    frameworks = tuple(request.frameworks) + ((compat.load().keras_backends[backend],) if backend else ())
    return pkgindex.ask(frameworks, index_url=request.pip_index_url,
                        pytorch_base=compat.load().torch_index_base, cuda=bool(request.cuda), rocm=bool(request.rocm),
                        find_links=request.pip_find_links, no_index=request.pip_offline)
