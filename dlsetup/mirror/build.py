"""Fetch what the plans install, once, on the controller, and write the mirror folder:

``apt/<release>-<arch>/`` a flat apt repository (``pool/*.deb``, ``Packages``, ``Release``, ``InRelease``
signed with the mirror key), ``wheels/`` the wheels and ``simple/`` a PEP 503 index over them, ``key.asc`` and
``key.fingerprint`` the mirror key, ``manifest.json`` (each file's sha256, size, origin and the hosts it
serves; what each apt repository and wheel set was fetched for; the date) and ``manifest.json.asc``.

Packages come from apt itself, run with a private state folder: the distribution's sources are the
controller's own apt sources (the target's codename in place of the controller's), the vendors' the plan's
repositories, each with its key checked against the pinned fingerprint and trusted for that repository
only (signed-by). The closure is resolved against an empty system: every package a plan needs, down to
libc6, is in the mirror, so a host with any base of that release installs from it. Wheels come from
``pip download`` for each host's Python and platform, from the plan's index settings. A re-run downloads
only what is not there yet (a wheel set the mirror's wheels satisfy already is not fetched again), and
drops what no plan needs any more.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from dlsetup.errors import UsageError
from dlsetup.mirror import keys
from dlsetup.mirror.contents import Contents, Repo, WheelSet, group_by_release

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.asc"
KEY = "key.asc"
FINGERPRINT = "key.fingerprint"
#: files and folders of the mirror folder the manifest does not list
UNLISTED = {MANIFEST, SIGNATURE, ".cache"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- apt ----------------------------------------------------------------------------------------------------

def _os_codename(etc: Path = Path("/etc")) -> Tuple[str, str]:
    values: Dict[str, str] = {}
    for line in (etc / "os-release").read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    return values.get("ID", ""), values.get("VERSION_CODENAME", "")


def distribution_sources(distro: str, codename: str, apt: Path = Path("/etc/apt"),
                         etc: Path = Path("/etc")) -> List[str]:
    """One-line ``deb`` entries for ``distro`` ``codename`` made from the controller's own apt sources
    (deb822 ``*.sources`` and one-line ``*.list``): its codename replaced by the target's. Raises
    :class:`UsageError` when the controller runs another distribution."""
    own, own_codename = _os_codename(etc)
    if own != distro or not own_codename:
        raise UsageError(f"this machine runs {own or 'an unknown system'}, its apt sources cannot serve {distro} "
                         f"{codename}: run dlsetup mirror on a {distro} machine")
    entries: List[str] = []

    def suite(name: str) -> str:
        return re.sub(rf"^{re.escape(own_codename)}(?=$|[-/])", codename, name)

    files = sorted((apt / "sources.list.d").glob("*.sources"))
    for path in files:
        for stanza in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            fields: Dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            options = f"[signed-by={fields['signed-by']}] " if fields.get("signed-by", "").startswith("/") else ""
            for uri in fields.get("uris", "").split():
                for name in fields.get("suites", "").split():
                    entries.append(f"deb {options}{uri} {suite(name)} {fields.get('components', '')}".rstrip())
    for path in [apt / "sources.list"] + sorted((apt / "sources.list.d").glob("*.list")):
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] != ["deb"]:
                continue
            bracket: List[str] = []
            while len(words) > 1 and words[1].startswith("["):
                bracket.append(words.pop(1))
                while not bracket[-1].endswith("]") and len(words) > 1:
                    bracket[-1] += " " + words.pop(1)
            if len(words) >= 3:
                entries.append(" ".join(["deb", *bracket, words[1], suite(words[2]), *words[3:]]))
    if not entries:
        raise UsageError(f"no deb source in this machine's apt sources ({apt}) to fetch {distro} {codename} from")
    return list(dict.fromkeys(entries))


def _vendor_key(repo: Repo, keyring: Path) -> None:
    """Download ``repo``'s key and keep exactly the pinned key in ``keyring``; refuse anything else."""
    try:
        with urllib.request.urlopen(repo.key_url, timeout=60) as answer:  # noqa: S310 - the plan's key URL
            data = answer.read(1 << 20)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot download the signing key {repo.key_url}: {err}") from None
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        (home / "download").write_bytes(data)
        verdict = keys.key_verdict(home / "download", repo.fingerprint)
        if not verdict["ok"]:
            raise UsageError(f"refusing the signing key of {repo.url}: {repo.key_url} {verdict['reason']}, but "
                             f"{repo.fingerprint} is pinned")
        keys.gpg(["--import", str(home / "download")], home, check=True)
        armoured = keys.gpg(["--armor", "--export", keys.key_rules().normalise_fingerprint(repo.fingerprint)], home,
                            check=True).stdout
    keyring.write_text(armoured, encoding="utf-8")


class Apt:
    """apt-get with a private state, cache and sources for one target release and architecture."""

    def __init__(self, work: Path, arch: str, sources: Sequence[str]):
        self.work = work
        for sub in ("state/lists/partial", "cache/archives/partial", "etc/preferences.d"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        (work / "state" / "status").touch()
        (work / "sources.list").write_text("\n".join(sources) + "\n", encoding="utf-8")
        self.options = [
            "-o", f"Dir::State={work / 'state'}", "-o", f"Dir::State::status={work / 'state' / 'status'}",
            "-o", f"Dir::Cache={work / 'cache'}", "-o", f"Dir::Etc::sourcelist={work / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-", "-o", f"Dir::Etc::preferencesparts={work / 'etc' / 'preferences.d'}",
            "-o", f"Dir::Etc::preferences={work / 'etc' / 'preferences'}",
            "-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Get::List-Cleanup=1", "-o", "Acquire::Languages=none",
        ]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["apt-get", "-q", *self.options, *args], capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})
        if check and done.returncode != 0:
            errors = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.startswith("E:")]
            raise UsageError(f"apt-get {args[0]} for the mirror failed: {(errors or [done.stderr.strip()])[-1]}")
        return done

    def resolves(self, packages: Sequence[str]) -> bool:
        return self.run("install", "-s", "-y", *packages, check=False).returncode == 0

    def uris(self, packages: Sequence[str]) -> List[Tuple[str, str, int, str]]:
        """(url, file name, size, hash) of every .deb the ``packages`` need on an empty system."""
        empty = self.work / "uris"  # apt leaves out what its archives folder holds: ask with an empty one
        shutil.rmtree(empty, ignore_errors=True)
        (empty / "partial").mkdir(parents=True)
        done = self.run("install", "-y", "--print-uris", "-o", f"Dir::Cache::archives={empty}", *packages)
        found = []
        for line in done.stdout.splitlines():
            match = re.match(r"^'([^']+)' (\S+) (\d+) ?(\S*)", line)
            if match:
                found.append((match.group(1), match.group(2), int(match.group(3)), match.group(4)))
        return found


def fetch_apt(dest: Path, key: str, contents: Sequence[Contents], signing: Path, progress: Any = None
              ) -> Dict[str, Any]:
    """Fill the apt repository ``dest/apt/<key>`` with the packages of ``contents`` (one release and
    architecture) and their closure; write and sign its index. Returns what it was fetched for."""
    first = contents[0]
    distro = first.release.split("-")[0]
    work = dest / ".cache" / "apt" / key
    work.mkdir(parents=True, exist_ok=True)
    sources = distribution_sources(distro, first.codename)
    repos = list(dict.fromkeys(repo for item in contents for repo in item.repos))
    for index, repo in enumerate(repos):
        keyring = work / f"vendor-{index}.asc"
        _vendor_key(repo, keyring)
        suite = repo.suite if repo.suite.endswith("/") else f"{repo.suite} main"
        sources.append(f"deb [signed-by={keyring}] {repo.url} {suite}")
    apt = Apt(work, first.arch, sources)
    apt.run("update")
    wanted: List[str] = []
    for item in contents:
        wanted += item.packages
        carried = [option for option in item.alternatives if apt.resolves(option)]  # each naming the repo has
        if item.alternatives and not carried:
            raise UsageError(f"{item.host}: the repositories carry none of "
                             + " or ".join(" ".join(option) for option in item.alternatives))
        for option in carried:
            wanted += option
    wanted = list(dict.fromkeys(wanted))
    needed = apt.uris(wanted) if wanted else []
    repo_dir = dest / "apt" / key
    pool = repo_dir / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    origins = {}
    names = {name for _, name, _, _ in needed}
    for url, name, _size, _ in needed:
        origins[f"apt/{key}/pool/{name}"] = url
    for old in pool.glob("*.deb"):
        if old.name not in names:
            old.unlink()
    todo = [(name, size) for _, name, size, _ in needed if not (pool / name).is_file()]
    if todo:
        task = progress.add_task(f"apt {key}", total=sum(size for _, size in todo)) if progress else None
        # apt downloads into the pool itself (what is there already, with the hash of the signed index, it keeps)
        (pool / "partial").mkdir(exist_ok=True)
        apt.run("install", "-y", "--download-only", "-o", f"Dir::Cache::archives={pool}", *wanted)
        shutil.rmtree(pool / "partial", ignore_errors=True)
        (pool / "lock").unlink(missing_ok=True)
        if progress and task is not None:
            progress.update(task, completed=sum(size for _, size in todo))
        lacking = [name for name, _ in todo if not (pool / name).is_file()]
        if lacking:
            raise UsageError(f"apt did not download {', '.join(lacking[:3])} for {key}")
    write_repository(repo_dir, signing)
    return {"codename": first.codename, "arch": first.arch, "packages": sorted(wanted),
            "requested": {item.host: list(item.all_packages()) for item in contents}, "origins": origins}


def write_repository(repo_dir: Path, signing: Path) -> None:
    """``Packages``, ``Packages.gz``, ``Release`` and ``InRelease`` (signed with the mirror key) of a flat
    repository over ``repo_dir/pool``."""
    if shutil.which("apt-ftparchive") is None:
        raise UsageError("apt-ftparchive is not installed on this machine (apt-get install apt-utils)")
    packages = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=repo_dir, capture_output=True,
                              text=True, check=True).stdout
    (repo_dir / "Packages").write_text(packages, encoding="utf-8")
    with gzip.GzipFile(repo_dir / "Packages.gz", "wb", mtime=0) as fh:
        fh.write(packages.encode())
    release = subprocess.run(
        ["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=dlsetup-mirror",
         "-o", "APT::FTPArchive::Release::Label=dlsetup-mirror", "-o", "APT::FTPArchive::Release::Suite=dlsetup",
         "-o", "APT::FTPArchive::Release::Codename=dlsetup", "release", "."],
        cwd=repo_dir, capture_output=True, text=True, check=True).stdout
    for stale in ("Release", "InRelease"):
        (repo_dir / stale).unlink(missing_ok=True)
    (repo_dir / "Release").write_text(release, encoding="utf-8")
    keys.sign(signing, repo_dir / "Release", clear=repo_dir / "InRelease")


def package_names(repo_dir: Path) -> List[str]:
    """The package names a repository's ``Packages`` index lists."""
    path = repo_dir / "Packages"
    if not path.is_file():
        return []
    return [line.split(":", 1)[1].strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.startswith("Package:")]


# -- wheels -------------------------------------------------------------------------------------------------

def _split_vendor(wheels: WheelSet) -> List[Tuple[List[str], List[str], str]]:
    """(requirements, pip index options, origin) per pip run, as the frameworks role runs pip: each vendor
    index alone for its projects, then the rest from the user's index, find-links or nothing else."""
    runs = []
    rest = list(wheels.requirements)
    trusted = [f"--trusted-host={host}" for host in wheels.trusted_hosts]  # every run, as the role's
    if not wheels.offline:
        for url, projects in wheels.vendor_indexes:
            pattern = re.compile(r"(?i)^\s*(" + "|".join(map(re.escape, projects)) + r")\s*([\[(=<>!~;@ ]|$)")
            mine = [req for req in rest if pattern.search(req)]
            rest = [req for req in rest if req not in mine]
            if mine:
                runs.append((mine, ["--index-url", url, *trusted], url))
    if rest:
        options: List[str] = ["--index-url", wheels.index_url] if wheels.index_url else []
        options += [f"--find-links={link}" for link in wheels.find_links]
        options += ["--no-index"] if wheels.offline else []
        options += trusted
        origin = wheels.index_url or (", ".join(wheels.find_links) if wheels.offline else "pip's configured index")
        runs.append((rest, options, origin))
    return runs


def platforms(platform: str) -> List[str]:
    """pip --platform values for a ``manylinux_X_Y_ARCH`` key: it and every older manylinux (pip does not
    widen an explicit platform itself)."""
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if not match:
        return [platform]
    major, minor, arch = int(match.group(1)), int(match.group(2)), match.group(3)
    out = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    return out + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]


def fetch_wheels(dest: Path, wheels: WheelSet, progress: Any = None) -> Dict[str, Any]:
    """Download the wheels of ``wheels`` into ``dest/wheels`` (those there already are reused, not
    fetched again). Returns {file name: origin} of the set's wheels."""
    store = dest / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    files: Dict[str, str] = {}
    task = progress.add_task(f"wheels {wheels.key} {wheels.venv}", total=None) if progress else None
    for requirements, options, origin in _split_vendor(wheels):
        with tempfile.TemporaryDirectory(dir=dest / ".cache") as scratch:
            args = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--only-binary=:all:", "--python-version", wheels.python,
                    *[f"--platform={name}" for name in platforms(wheels.platform)],
                    "--implementation", "cp", "--dest", scratch, "--find-links", str(store)]
            # the mirror's own wheels first: what they satisfy already is not downloaded again
            done = subprocess.run([*args, "--no-index", *requirements], capture_output=True, text=True)
            if done.returncode != 0:
                for path in Path(scratch).iterdir():
                    path.unlink()
                done = subprocess.run([*args, *options, *requirements], capture_output=True, text=True)
            if done.returncode != 0:
                last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["pip failed"]
                raise UsageError(f"pip download for the mirror ({wheels.key}: {' '.join(requirements)}) failed: "
                                 f"{last[0].strip()}")
            for path in Path(scratch).iterdir():
                target = store / path.name
                if target.exists():
                    if sha256(target) != sha256(path):
                        raise UsageError(f"two different wheels named {path.name}: refusing to mix them")
                    files[path.name] = _origin_of(dest, path.name, origin)
                else:
                    shutil.move(str(path), target)
                    files[path.name] = origin
    if progress and task is not None:
        progress.update(task, total=1, completed=1)
    return files


def _origin_of(dest: Path, name: str, fallback: str) -> str:
    try:
        old = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        return str(old["files"][f"wheels/{name}"]["origin"])
    except (OSError, ValueError, KeyError, TypeError):
        return fallback


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_simple_index(dest: Path) -> None:
    """``dest/simple``: a PEP 503 index over ``dest/wheels``, each link with its sha256 (pip checks it)."""
    simple = dest / "simple"
    if simple.exists():
        shutil.rmtree(simple)
    simple.mkdir()
    projects: Dict[str, List[Path]] = {}
    for wheel in sorted((dest / "wheels").glob("*.whl")):
        projects.setdefault(normalise(wheel.name.split("-")[0]), []).append(wheel)
    for project, wheels in projects.items():
        (simple / project).mkdir()
        links = "".join(f'<a href="../../wheels/{w.name}#sha256={sha256(w)}">{w.name}</a><br>\n' for w in wheels)
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n", encoding="utf-8")
    index = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{index}</body></html>\n", encoding="utf-8")


# -- the whole mirror ---------------------------------------------------------------------------------------

def build(dest: Path, contents: Sequence[Contents], progress: Any = None) -> Dict[str, Any]:
    """Fetch and write the mirror of ``contents`` into ``dest``; returns the manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".cache").mkdir(exist_ok=True)
    signing = keys.signing_home()
    origins: Dict[str, str] = {}
    serves: Dict[str, set] = {}
    apt_sets: Dict[str, Any] = {}
    for key, group in group_by_release(contents).items():
        if not any(item.packages or item.alternatives for item in group):
            continue
        fetched = fetch_apt(dest, key, group, signing, progress)
        origins.update(fetched.pop("origins"))
        apt_sets[key] = fetched
        for path in origins:
            if path.startswith(f"apt/{key}/"):
                serves.setdefault(path, set()).update(item.host for item in group)
        for name in ("Packages", "Packages.gz", "Release", "InRelease"):
            serves.setdefault(f"apt/{key}/{name}", set()).update(item.host for item in group)
            origins[f"apt/{key}/{name}"] = "dlsetup mirror"
    for stale in (dest / "apt").glob("*") if (dest / "apt").is_dir() else ():
        if stale.name not in apt_sets:
            shutil.rmtree(stale)
    wheel_sets: Dict[str, Any] = {}
    fetched_sets: Dict[WheelSet, Dict[str, str]] = {}  # hosts with the same venv: one pip download
    for item in contents:
        for wheels in item.wheels:
            if wheels not in fetched_sets:
                fetched_sets[wheels] = fetch_wheels(dest, wheels, progress)
            files = fetched_sets[wheels]
            entry = wheel_sets.setdefault(wheels.key, {"python": wheels.python, "platform": wheels.platform,
                                                       "requirements": [], "files": []})
            entry["requirements"] = sorted(set(entry["requirements"]) | set(wheels.requirements))
            entry["files"] = sorted(set(entry["files"]) | set(files))
            for name, origin in files.items():
                origins[f"wheels/{name}"] = origin
                serves.setdefault(f"wheels/{name}", set()).add(item.host)
    used = {name for entry in wheel_sets.values() for name in entry["files"]}
    for wheel in (dest / "wheels").glob("*") if (dest / "wheels").is_dir() else ():
        if wheel.name not in used:
            wheel.unlink()
    return seal(dest, signing, contents, apt_sets, wheel_sets, origins, serves)


def seal(dest: Path, signing: Path, contents: Sequence[Contents], apt_sets: Mapping[str, Any],
         wheel_sets: Mapping[str, Any], origins: Mapping[str, str], serves: Mapping[str, Iterable[str]]
         ) -> Dict[str, Any]:
    """Write the key, the simple index over ``dest/wheels`` and the signed manifest of what ``dest`` holds
    (the apt repositories are written and signed already, :func:`write_repository`); returns the manifest."""
    fingerprint = keys.signing_fingerprint(signing)
    (dest / KEY).write_text(keys.export(signing), encoding="utf-8")
    (dest / FINGERPRINT).write_text(fingerprint + "\n", encoding="utf-8")
    (dest / "wheels").mkdir(exist_ok=True)
    write_simple_index(dest)
    every = {item.host for item in contents}
    files: Dict[str, Any] = {}
    for path in sorted(listed_files(dest)):
        rel = path.relative_to(dest).as_posix()
        files[rel] = {"sha256": sha256(path), "size": path.stat().st_size,
                      "origin": origins.get(rel, "dlsetup mirror"), "plans": sorted(serves.get(rel, every))}
    manifest = {
        "schema": 1,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "fingerprint": fingerprint,
        "apt": apt_sets,
        "wheels": wheel_sets,
        "hosts": {item.host: {"apt": item.apt_repo, "packages": list(item.all_packages()),
                              "venvs": {w.venv: {"wheels": w.key, "requirements": list(w.requirements)}
                                        for w in item.wheels}}
                  for item in contents},
        "files": files,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    keys.sign(signing, dest / MANIFEST, detached=dest / SIGNATURE)
    return manifest


def listed_files(dest: Path) -> Iterable[Path]:
    """Every file of the mirror folder the manifest lists (all but the manifest, its signature, the cache)."""
    for path in dest.rglob("*"):
        rel = path.relative_to(dest)
        if rel.parts[0] in UNLISTED or not path.is_file() or path.is_symlink():
            continue
        if "partial" in rel.parts or path.name == "lock":
            continue
        yield path


def sizes(manifest: Mapping[str, Any]) -> Dict[str, Tuple[int, int]]:
    """(files, bytes) per part of the mirror: each apt repository, the wheels, the rest."""
    out: Dict[str, Tuple[int, int]] = {}
    for rel, entry in manifest.get("files", {}).items():
        parts = rel.split("/")
        part = f"apt {parts[1]}" if parts[0] == "apt" else "wheels" if parts[0] == "wheels" else "index and key"
        count, size = out.get(part, (0, 0))
        out[part] = (count + 1, size + int(entry["size"]))
    return out
