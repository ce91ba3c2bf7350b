"""Where a probe reads from: a root path for files and a command runner.

The same readers run on a live host (root ``/``, commands run for real), on a saved bundle (root = the
bundle folder, command output from ``cmd/<name>.out``; layout in the fixtures README) and on a remote host
inside an Ansible module. A :class:`Recorder` wraps a live host and saves everything read as a bundle.

Standard library only, Python 3.9+: this module also runs on remote hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dlsetup.probe.util import read_regular

#: Files larger than this are not read (a garbage bundle must not exhaust memory).
MAX_READ_BYTES = 16 * 1024 * 1024
#: Seconds a command may take before it counts as failed (a hung NFS mount must not hang the probe).
COMMAND_TIMEOUT = 10.0


class Runner:
    """Runs named commands; ``None`` means the command is absent or failed."""

    def start(self, name: str, argv: Sequence[str]) -> None:
        """Hint that ``run(name, argv)`` will follow: live runners start it now, in the background."""

    def run(self, name: str, argv: Sequence[str]) -> Optional[str]:
        raise NotImplementedError


class LiveRunner(Runner):
    """Runs commands on this machine, several at once: ``start`` launches, ``run`` collects."""

    def __init__(self, timeout: float = COMMAND_TIMEOUT):
        self.timeout = timeout
        self._started: Dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: Sequence[str]) -> None:
        if name in self._started:
            return
        exe = shutil.which(argv[0])
        if exe is None:
            return
        env = dict(os.environ, LC_ALL="C", LANG="C")
        try:
            self._started[name] = subprocess.Popen(
                [exe, *argv[1:]],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            return

    def run(self, name: str, argv: Sequence[str]) -> Optional[str]:
        self.start(name, argv)
        proc = self._started.pop(name, None)
        if proc is None:
            return None
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
        if proc.returncode != 0:
            return None
        return out.decode("utf-8", "replace")

    def close(self) -> None:
        for proc in self._started.values():
            proc.kill()
            proc.communicate()
        self._started.clear()


class BundleRunner(Runner):
    """Answers commands from a saved bundle's ``cmd/<name>.out``."""

    def __init__(self, root: Path):
        self.root = root
        self.notes: List[str] = []  #: shared with the Host that reads this bundle

    def run(self, name: str, argv: Sequence[str]) -> Optional[str]:
        return _read_text(self.root / "cmd" / f"{name}.out", self.notes, f"cmd/{name}.out")


def _read_text(path: Path, notes: Optional[List[str]] = None, name: str = "") -> Optional[str]:
    """The file's text, or None; a FIFO, device, socket or oversized file is noted, never waited on."""
    data, why = read_regular(path, MAX_READ_BYTES)
    if why is not None and notes is not None:
        notes.append(f"{name or path}: {why}; not read")
    return None if data is None else data.decode("utf-8", "replace")


class Host:
    """A host to read. Paths given to its methods are absolute host paths such as ``/proc/cpuinfo``."""

    def __init__(self, root: Path = Path("/"), runner: Optional[Runner] = None, source: str = "live"):
        self.root = Path(root)
        self.runner = runner if runner is not None else LiveRunner()
        self.source = source
        self.notes: List[str] = []  #: what could not be read, and why (reported in the profile)
        self._nvml: Optional[dict] = None

    @classmethod
    def live(cls) -> "Host":
        return cls(Path("/"), LiveRunner(), "live")

    @classmethod
    def bundle(cls, directory: Path) -> "Host":
        directory = Path(directory)
        runner = BundleRunner(directory)
        host = cls(directory, runner, f"bundle:{directory}")
        runner.notes = host.notes
        return host

    def note(self, message: str) -> None:
        self.notes.append(message)

    @property
    def is_live(self) -> bool:
        return isinstance(self.runner, LiveRunner)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def read(self, host_path: str) -> Optional[str]:
        return _read_text(self.path(host_path), self.notes, host_path)

    def read_bytes(self, host_path: str, limit: int = 4096) -> Optional[bytes]:
        data, why = read_regular(self.path(host_path), limit, whole=False)
        if why is not None:
            self.note(f"{host_path}: {why}; not read")
        return data

    def listdir(self, host_path: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path(host_path)))
        except OSError:
            return []

    def exists(self, host_path: str) -> bool:
        return os.path.lexists(self.path(host_path))

    def readlink(self, host_path: str) -> Optional[str]:
        try:
            return os.readlink(self.path(host_path))
        except OSError:
            return None

    def start(self, commands: Sequence[Tuple[str, Sequence[str]]]) -> None:
        for name, argv in commands:
            self.runner.start(name, argv)

    def run(self, name: str, argv: Sequence[str]) -> Optional[str]:
        return self.runner.run(name, argv)

    def nvml(self) -> Optional[dict]:
        """What NVML reports (the ``nvml.json`` shape), or None when there is no such source."""
        if self._nvml is None:
            if self.is_live:
                from dlsetup.probe.nvml import nvml_snapshot

                self._nvml = nvml_snapshot()
            else:
                text = self.read("/nvml.json")
                try:
                    data = json.loads(text) if text else {}
                except ValueError:
                    data = {"error": "nvml.json is not valid JSON", "error_kind": "other"}
                self._nvml = data if isinstance(data, dict) else {}
        return self._nvml or None

    def close(self) -> None:
        if isinstance(self.runner, LiveRunner):
            self.runner.close()


class Recorder(Host):
    """A live host that remembers every file, link, folder and command output it served, to save as a
    bundle that reads back exactly the same."""

    def __init__(self, inner: Host):
        super().__init__(inner.root, inner.runner, inner.source)
        self.notes = inner.notes
        self._files: Dict[str, bytes] = {}
        self._links: Dict[str, str] = {}
        self._dirs: set = set()
        self._commands: Dict[str, Tuple[Sequence[str], Optional[str]]] = {}

    def read(self, host_path: str) -> Optional[str]:
        text = super().read(host_path)
        if text is not None:
            self._files[host_path] = text.encode()
        return text

    def read_bytes(self, host_path: str, limit: int = 4096) -> Optional[bytes]:
        data = super().read_bytes(host_path, limit)
        if data is not None:
            self._files[host_path] = data
        return data

    def readlink(self, host_path: str) -> Optional[str]:
        target = super().readlink(host_path)
        if target is not None:
            self._links[host_path] = target
        return target

    def listdir(self, host_path: str) -> List[str]:
        entries = super().listdir(host_path)
        if entries or os.path.isdir(self.path(host_path)):
            self._dirs.add(host_path)
        return entries

    def exists(self, host_path: str) -> bool:
        found = super().exists(host_path)
        if found and os.path.isdir(self.path(host_path)):
            self._dirs.add(host_path)
        elif found:
            self._files.setdefault(host_path, b"")  # a marker: the bundle keeps that the file existed
        return found

    def run(self, name: str, argv: Sequence[str]) -> Optional[str]:
        out = super().run(name, argv)
        self._commands[name] = (list(argv), out)
        return out

    def save(self, directory: Path) -> None:
        """Write what was read as a bundle. Absent sources stay absent, as the layout requires."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for host_path in sorted(self._dirs):
            (directory / host_path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for host_path, data in sorted(self._files.items()):
            dest = directory / host_path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        for host_path, target in sorted(self._links.items()):
            dest = directory / host_path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(dest):
                os.symlink(target, dest)
        commands = {}
        for name, (argv, out) in sorted(self._commands.items()):
            if out is None:
                continue
            (directory / "cmd").mkdir(exist_ok=True)
            (directory / "cmd" / f"{name}.out").write_text(out)
            commands[f"cmd/{name}.out"] = " ".join(argv)
        (directory / "commands.json").write_text(json.dumps(commands, indent=1) + "\n")
        if self._nvml:
            (directory / "nvml.json").write_text(json.dumps(self._nvml, indent=1) + "\n")
