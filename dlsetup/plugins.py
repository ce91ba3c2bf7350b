"""The collection's Python plugins loaded into dlsetup itself, so the controller decides exactly as the roles
do on the hosts: the storage verdict (``plugins/module_utils/dlsetup_storage.py``) and signed_apt_repo's key
rules (``plugins/filter/signed_apt_repo_keys.py``), from the source tree or the wheel's copy."""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

from dlsetup.errors import UsageError


@functools.lru_cache(maxsize=None)
def load(relative: str) -> ModuleType:
    """The plugin file ``relative`` (to the collection's root, :func:`dlsetup.runner.ansible_dir`) as a module,
    loaded once."""
    from dlsetup.runner import ansible_dir

    base = ansible_dir()
    path = base / relative
    if not path.is_file():
        raise UsageError(f"{relative} is missing from this installation ({base})")
    spec = importlib.util.spec_from_file_location("dlsetup_plugin_" + path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
