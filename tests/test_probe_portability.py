"""The probe must run on a remote host's own Python: standard library only, Python 3.9 and newer.

Runs the bundle probe under every older interpreter found here with ``-S`` (no site-packages, so no
defusedxml, psutil or click) and compares its JSON with this interpreter's.
"""

import glob
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import H100_BUNDLE, REPO
from dlsetup.probe import Host, probe_host



def _old_pythons():
    """python3.9 and python3.10 from PATH, /usr/bin or pyenv, those that really run."""
    found = {}
    for minor in (9, 10):
        for candidate in (shutil.which(f"python3.{minor}"), f"/usr/bin/python3.{minor}",
                          *sorted(glob.glob(str(Path.home() / f".pyenv/versions/3.{minor}.*/bin/python3")))):
            if candidate and Path(candidate).exists() and minor not in found:
                if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
                    found[minor] = candidate
    return list(found.values())


OLD_PYTHONS = _old_pythons()

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from dlsetup.probe import Host, probe_host
print(json.dumps(probe_host(Host.bundle(sys.argv[2]), enrich=False).to_dict()))
"""


@pytest.mark.skipif(not OLD_PYTHONS, reason="no python3.9 or python3.10 on PATH")
@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_probe_runs_on_old_stdlib_only_python(python):
    out = subprocess.run([python, "-S", "-c", SCRIPT, str(REPO), str(H100_BUNDLE)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = json.loads(out.stdout)
    ours = probe_host(Host.bundle(H100_BUNDLE), enrich=False).to_dict()
    assert theirs == ours
    assert theirs["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3" and theirs["notes"] == []
