"""``dlsetup plan``: which driver, CUDA or ROCm and framework builds fit this host, and why."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, Optional

import click

from dlsetup.errors import UsageError


@click.command()
@click.option("--from-bundle", type=click.Path(path_type=Path), help="Plan for a saved bundle instead of this host.")
@click.option("--config", type=click.Path(path_type=Path), help="YAML file with these options; options given here win.")
@click.option("--framework", "frameworks", multiple=True, help="pytorch, tensorflow, jax or keras (repeatable).")
@click.option("--keras-backend", help="Keras 3's backend: jax, tensorflow or torch (default: the other framework "
                                      "planned, else torch).")
@click.option("--driver-branch", help="NVIDIA driver branch, e.g. 580.")
@click.option("--cuda", help="Also install this CUDA toolkit, e.g. 13.0.")
@click.option("--rocm", help="ROCm release, e.g. 7.2.")
@click.option("--torch", help="PyTorch release, e.g. 2.13 or 2.13.0.")
@click.option("--tensorflow", help="TensorFlow release, e.g. 2.21.")
@click.option("--python", help="Python for the framework venv, e.g. 3.12 (default: the OS's python3).")
@click.option("--container-toolkit/--no-container-toolkit", default=None, help="NVIDIA Container Toolkit.")
@click.option("--pip-index-url", help="pip index (a mirror); vendor indexes are then not added.")
@click.option("--pip-find-links", multiple=True, help="Directory or URL with wheels (repeatable).")
@click.option("--pip-offline", is_flag=True, default=None, help="Install only from --pip-find-links.")
@click.option("--pip-trusted-host", "pip_trusted_hosts", multiple=True, metavar="HOST[:PORT]",
              help="A plain-http --pip-index-url or --pip-find-links host pip may use (repeatable); "
                   "https and localhost need none.")
@click.option("--venv", "venv_path", help="One venv for every framework, here (implies --shared-venv).")
@click.option("--shared-venv", is_flag=True, default=None,
              help="One venv for every framework (default /opt/dlsetup/venv) instead of one per framework.")
@click.option("--venv-root", help="Where the per-framework venvs go (default /opt/dlsetup/venvs/<framework>).")
@click.option("--jupyter", is_flag=True, default=None,
              help="JupyterLab in its own venv with a kernel per framework venv, as a systemd service.")
@click.option("--jupyter-user", help="The user JupyterLab runs as (default: the invoking user).")
@click.option("--jupyter-listen", metavar="ADDR:PORT",
              help="Where JupyterLab listens (default 127.0.0.1:8888); off loopback only with TLS.")
@click.option("--jupyter-self-signed", is_flag=True, default=None,
              help="Serve JupyterLab over TLS with a certificate generated on the host.")
@click.option("--jupyter-cert", help="TLS certificate for JupyterLab, a path on the host (with --jupyter-key).")
@click.option("--jupyter-key", help="TLS private key for JupyterLab, a path on the host.")
@click.option("--storage", multiple=True, metavar="MOUNT[:LEVEL[:FS[:DISK,...]]]",
              help="An array for datasets or checkpoints, e.g. /data:raid10:xfs (repeatable); without disks, "
                   "the unused NVMe/SSD disks are shared out.")
@click.option("--destroy-data", is_flag=True, default=None,
              help="Wipe the storage disks even if they hold data (partitions, filesystems, RAID, LVM, swap).")
@click.option("--hold-kernel", is_flag=True, default=None,
              help="Hold the kernel meta packages (apt-mark hold) so no new kernel comes in; by default kernels keep "
                   "their updates and the driver role gives each one the GPU module.")
@click.option("--offline", is_flag=True, default=None,
              help="Plan from dlsetup's shipped tables only; do not ask the package indexes what exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--emit-vars", type=click.Path(path_type=Path), help="Write the playbook variables as YAML.")
def plan(from_bundle: Optional[Path], config: Optional[Path], as_json: bool, emit_vars: Optional[Path],
         **options: Any) -> None:
    """Resolve a driver / CUDA or ROCm / framework stack that fits, and explain every choice."""
    from dlsetup.plan import load_request, make_plan
    from dlsetup.plan.live import live_facts
    from dlsetup.probe import probe

    request = load_request(config, **options)
    if from_bundle is not None and not from_bundle.is_dir():
        raise UsageError(f"bundle directory not found: {from_bundle}")
    profile = probe(bundle=from_bundle)
    result = make_plan(profile, request, live_facts(request), today=date.today().isoformat())
    if emit_vars is not None:
        import yaml

        try:
            emit_vars.write_text(yaml.safe_dump(dict(result.variables), sort_keys=False), encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write {emit_vars}: {err.strerror or err}") from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.console import Console

    from dlsetup.plan.render import render_plan

    render_plan(result, Console())
