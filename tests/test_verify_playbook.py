"""playbooks/verify.yml trusts neither the inventory name nor the host's output with the controller's files.

Each host is this machine (local connection) with a stand-in venv whose ``bin/python`` prints what the
test gives it, as a compromised or broken host could."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

from dlsetup.runner import RunOptions, ansible_dir, run_playbooks

DOC = {"kind": "verify", "host": "gpu-a", "devices": [], "python": "/opt/venv/bin/python", "quick": True,
       "checks": [{"id": "framework", "status": "pass", "message": "torch 2.13.0", "figures": {}, "device": None}]}
FAILING = {**DOC, "checks": [{**DOC["checks"][0], "status": "fail", "message": "no GPU"}]}


def _venv(root: Path, output: str) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "out.txt").write_text(output)
    python = venv / "bin" / "python"
    python.write_text('#!/bin/sh\ncat "$(dirname "$0")/../out.txt"\n')
    python.chmod(0o755)
    return venv


def test_results_are_validated_and_named_safely(tmp_path: Path) -> None:
    outputs = {
        "good": "a warning first\n" + json.dumps(DOC, separators=(",", ":")) + "\n",
        "../escape": json.dumps(DOC),
        "not-json": "Traceback (most recent call last):\nImportError: no torch\n",
        "bad-status": json.dumps({**DOC, "checks": [{**DOC["checks"][0], "status": "ok"}]}),
        "bad-id": json.dumps({**DOC, "checks": [{**DOC["checks"][0], "id": {"x": 1}}]}),
        "failing": json.dumps(FAILING),
    }
    results = tmp_path / "out" / "results"
    host_vars = {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                        "dlsetup_venv": str(_venv(tmp_path / f"h{i}", text))}
                 for i, (name, text) in enumerate(outputs.items())}
    run = run_playbooks([ansible_dir() / "playbooks" / "verify.yml"], [], host_vars=host_vars,
                        options=RunOptions(extra_vars=(json.dumps({"dlsetup_verify_results": str(results)}),)))
    assert run.error is None
    status = {h.host: h.status for h in run.hosts}
    assert status == {"good": "changed", "../escape": "changed", "not-json": "failed", "bad-status": "failed",
                      "bad-id": "failed", "failing": "failed"}
    assert "printed no verify document" in run.host("not-json").failure.message
    assert "printed no verify document" in run.host("bad-status").failure.message
    assert run.host("failing").failure.message.startswith("verify failed on failing")
    hashed = f"host-{hashlib.sha256(b'../escape').hexdigest()}.json"
    assert {p.name for p in results.iterdir()} == {"good.json", "failing.json", hashed}
    assert [p for p in tmp_path.rglob("*.json") if p.parent != results] == []  # nothing outside the folder
    # what is saved is the parsed document, not the host's bytes
    assert (results / "good.json").read_text() == json.dumps(DOC, indent=4, sort_keys=True) + "\n"
    assert json.loads((results / "failing.json").read_text()) == FAILING


def test_payload_is_found_in_an_installed_layout(tmp_path: Path) -> None:
    """In a wheel the playbooks are dlsetup/ansible/playbooks and the payload dlsetup/verify/payload.py."""
    package = tmp_path / "site" / "dlsetup"
    (package / "ansible" / "playbooks").mkdir(parents=True)
    (package / "verify").mkdir()
    payload = package / "verify" / "payload.py"
    payload.write_text("# payload\n")
    playbook = package / "ansible" / "playbooks" / "verify.yml"
    plays = yaml.safe_load((ansible_dir() / "playbooks" / "verify.yml").read_text())
    plays[0]["tasks"] = [{"name": "payload", "ansible.builtin.debug": {"msg": "{{ __verify_payload }}"}}]
    playbook.write_text(yaml.safe_dump(plays))
    run = run_playbooks([playbook], [], host_vars={"a": {"ansible_connection": "local",
                                                         "ansible_python_interpreter": sys.executable}},
                        capture=["payload"])
    assert Path(run.host("a").captured["payload"]["msg"]).resolve() == payload.resolve()
