"""The package names the roles install, read from their ``vars/`` files: the one source of them, for the
mirror's contents (:func:`dlsetup.mirror.contents.plan_contents`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import yaml


def _vars(role: Path, distro: str, version: str) -> Dict[str, Any]:
    """The role's OS variables file as the role itself picks it (first found: DISTRO-VERSION, DISTRO-MAJOR)."""
    name = distro.capitalize() if distro != "ubuntu" else "Ubuntu"
    for candidate in (f"{name}-{version}.yml", f"{name}-{version.split('.')[0]}.yml"):
        path = role / "vars" / candidate
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {}


def _load(path: Path) -> Dict[str, Any]:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def role_data(distro: str, version: str, ansible: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """Per role, the package names it installs on ``distro`` ``version`` (Jinja left for the caller)."""
    if ansible is None:
        from dlsetup.runner import ansible_dir

        ansible = ansible_dir()
    roles = ansible / "roles"
    common = _vars(roles / "common", distro, version)
    driver = {**_load(roles / "nvidia_driver" / "vars" / "main.yml"), **_vars(roles / "nvidia_driver", distro, version)}
    cuda = _load(roles / "cuda_toolkit" / "defaults" / "main.yml")
    storage = _vars(roles / "storage", distro, version)
    jupyter = _load(roles / "jupyter" / "defaults" / "main.yml")
    return {
        "common": {"packages": common.get("__common_packages", []),
                   "headers_packages": common.get("__common_headers_packages", [])},
        "frameworks": {"packages": _vars(roles / "frameworks", distro, version).get("__frameworks_packages", [])},
        "storage": {"packages": storage.get("__storage_packages", [])},
        "nvidia_driver": {"names": driver.get("__nvidia_driver_names", {}),
                          "packaging": driver.get("__nvidia_driver_packaging", ""),
                          "first_unversioned": driver.get("__nvidia_driver_first_unversioned", 590)},
        "cuda_toolkit": {"packages": cuda.get("cuda_toolkit_packages", [])},
        "jupyter": {"packages": _vars(roles / "jupyter", distro, version).get("__jupyter_packages", []),
                    "remote_ide_packages": jupyter.get("jupyter_remote_ide_packages", []),
                    "pip_packages": jupyter.get("jupyter_packages", []),
                    "venv_path": jupyter.get("jupyter_venv_path", "")},
        # the one package roles/nvidia_container_toolkit/tasks/install.yml installs
        "nvidia_container_toolkit": {"packages": ["nvidia-container-toolkit"]},
    }
