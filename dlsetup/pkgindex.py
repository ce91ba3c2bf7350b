"""What the package indexes publish, asked at plan time: which releases exist, for which Python, with which builds.

Two halves. :class:`Project` and :class:`LiveIndex` are pure data with the questions the planner asks
("the newest torch with a wheel for CPython 3.12 on x86_64 Linux", "which cuXYZ builds does 2.15.0 have");
the planner reads them like the shipped tables. :func:`lookup` is the I/O: it asks the indexes the user's
pip is configured with (pip's configuration files, ``PIP_INDEX_URL`` and friends, read the way pip reads
them; ``--pip-index-url``; pip's own default when none is set) through the simple repository API (PEP 691
JSON, PEP 503 HTML), honouring pip's ``cert``, ``client-cert`` and ``proxy`` settings and the usual proxy
variables. Answers are cached under ``$XDG_CACHE_HOME/dlsetup/index`` with the time they were fetched; an
index that does not answer within the timeout (``DLSETUP_INDEX_TIMEOUT`` seconds, a few by default) leaves
a failure note (and is not asked again for a few minutes), and the planner falls back to the tables (or to
an older cached answer, which keeps its own date).
"""
from __future__ import annotations

import hashlib
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
DEFAULT_TIMEOUT = 3.0  #: seconds for all lookups together; DLSETUP_INDEX_TIMEOUT overrides
CACHE_TTL = timedelta(hours=12)  #: a cached answer younger than this is used without asking again
FAILURE_TTL = timedelta(minutes=5)  #: an index that failed is not asked again for this long
MAX_BYTES = 32 * 1024 * 1024  #: an answer larger than this is not an index page
#: the oldest glibc of the systems dlsetup plans (Ubuntu 22.04: 2.35); newer manylinux wheels are not used
GLIBC = (2, 35)
#: the project name under which PyTorch's own index answers (its base URL is table data: pytorch.toml)
PYTORCH = "pytorch:torch"


class BadIndexAnswer(Exception):
    """An index answered, but not with a simple-repository page (garbage, wrong type, bad JSON)."""


# -- pure data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexFile:
    filename: str
    requires_python: Optional[str] = None
    upload_time: Optional[str] = None
    yanked: bool = False


@lru_cache(maxsize=None)
def linux_tags(python: str, arch: str = "x86_64") -> FrozenSet[Tag]:
    """Wheel tags pip accepts for CPython ``python`` ("3.12") on ``arch`` ("x86_64", "aarch64") Linux with glibc
    :data:`GLIBC`."""
    version = tuple(int(p) for p in python.split(".")[:2])
    platforms = [f"manylinux_{GLIBC[0]}_{m}_{arch}" for m in range(GLIBC[1], 4, -1)]
    platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
    if arch == "x86_64":
        platforms[-1:-1] = ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return frozenset(cpython_tags(version, platforms=platforms)) | frozenset(
        compatible_tags(version, platforms=platforms))


def _admits(requires_python: Optional[str], python: str) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(Version(python), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # pip ignores a Requires-Python it cannot parse


@dataclass(frozen=True)
class Project:
    """One project's page on one index, as fetched on ``as_of``."""

    name: str
    url: str  #: the page asked (credentials removed)
    as_of: str  #: "YYYY-MM-DD" the answer was fetched
    files: Tuple[IndexFile, ...]
    cached: bool = False  #: True: read from the cache, not asked this time

    def _wheels(self) -> Iterable[Tuple[Version, FrozenSet[Tag], IndexFile]]:
        for f in self.files:
            try:
                _, version, _, tags = parse_wheel_filename(f.filename)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            yield version, tags, f

    def releases(self, python: str, arch: str = "x86_64") -> List[Version]:
        """Final, not yanked releases with a wheel pip would install for ``python`` on ``arch`` Linux, newest
        first."""
        accepted = linux_tags(python, arch)
        found = {v.public for v, tags, f in self._wheels() if not v.is_prerelease and not v.is_devrelease
                 and not f.yanked and tags & accepted and _admits(f.requires_python, python)}
        return sorted((Version(v) for v in found), reverse=True)

    def all_releases(self) -> List[Version]:
        """Every final release with any wheel, whatever its Python or platform, newest first."""
        found = {v.public for v, _, f in self._wheels() if not v.is_prerelease and not v.is_devrelease
                 and not f.yanked}
        return sorted((Version(v) for v in found), reverse=True)

    def newest(self, python: str, line: Optional[str] = None, arch: str = "x86_64") -> Optional[Version]:
        """The newest release for ``python``; with ``line`` ("2.15"), the newest of that release line."""
        for v in self.releases(python, arch):
            if line is None or f"{v.major}.{v.minor}" == line:
                return v
        return None

    def builds(self, version: str, python: Optional[str] = None, arch: str = "x86_64") -> Tuple[str, ...]:
        """The local labels ("cu130", "rocm7.2", "cpu") of ``version``'s wheels (for ``python`` on ``arch`` if
        given)."""
        want = Version(version).public
        accepted = linux_tags(python, arch) if python else None
        labels = {v.local for v, tags, f in self._wheels() if v.public == want and v.local and not f.yanked
                  and (accepted is None or (tags & accepted and _admits(f.requires_python, python or "")))}
        return tuple(sorted(labels))

    def labels(self) -> Tuple[str, ...]:
        """Every local label ("cu130", "rocm7.2") any wheel of this page carries."""
        return tuple(sorted({v.local for v, _, f in self._wheels() if v.local and not f.yanked}))

    def uploaded(self, version: str) -> Optional[str]:
        """The date ("YYYY-MM-DD") the first file of ``version`` was uploaded, when the index says."""
        want = Version(version).public
        times = sorted(f.upload_time[:10] for v, _, f in self._wheels() if v.public == want and f.upload_time)
        return times[0] if times else None


@dataclass(frozen=True)
class LiveIndex:
    """What the indexes answered at plan time; the planner's other source of facts besides the tables."""

    index_url: str  #: the index pip installs from (credentials removed)
    today: str  #: "YYYY-MM-DD" of the lookup
    projects: Mapping[str, Project] = field(default_factory=dict)
    #: "<project> on <url>: <why>" for each page that could not be read (the tables answer instead)
    failures: Tuple[str, ...] = ()

    def project(self, name: str) -> Optional[Project]:
        return self.projects.get(name)


# -- reading pip's configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class PipSettings:
    index_url: str
    extra_index_urls: Tuple[str, ...] = ()
    cert: Optional[str] = None
    client_cert: Optional[str] = None
    proxy: Optional[str] = None


def _pip_config_files() -> List[Path]:
    """pip's configuration files in the order pip loads them (a later one wins): global (XDG_CONFIG_DIRS, then
    /etc), user (~/.pip, then XDG_CONFIG_HOME), site (the environment's prefix), then PIP_CONFIG_FILE."""
    env_file = os.environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []  # pip: PIP_CONFIG_FILE=os.devnull loads no file at all
    xdg_dirs = [d for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep) if d]
    home = Path.home()
    user_dir = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
    files += [home / ".pip" / "pip.conf", user_dir / "pip" / "pip.conf", Path(sys.prefix) / "pip.conf"]
    if env_file:
        files.append(Path(env_file))
    return files


def _pip_config() -> Dict[str, str]:
    """What ``pip install`` reads from its configuration: option -> value, files first (``[global]`` then
    ``[install]``, later files winning), then ``PIP_<OPTION>`` environment variables."""
    import configparser

    values: Dict[str, str] = {}
    for path in _pip_config_files():
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            if parser.has_section(section):
                values.update({k.replace("_", "-"): v for k, v in parser.items(section)})
    for key, value in os.environ.items():
        if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
            values[key[4:].lower().replace("_", "-")] = value
    return values


def _pip_default_index() -> Optional[str]:
    """The index pip uses when none is configured, as pip itself names it."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        return None
    url = getattr(PyPI, "simple_url", None)
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def pip_settings(index_url: Optional[str] = None) -> Optional[PipSettings]:
    """The indexes and TLS/proxy settings pip uses here; ``index_url`` (--pip-index-url) wins. None when no
    index can be named (pip missing and nothing configured)."""
    config = _pip_config()
    url = index_url or config.get("index-url") or _pip_default_index()
    if not url:
        return None
    extras = () if index_url else tuple(config.get("extra-index-url", "").split())
    return PipSettings(url.strip(), extras, config.get("cert"), config.get("client-cert"), config.get("proxy"))


# -- fetching -------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` without user:password."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


def project_url(index_url: str, name: str) -> str:
    """PEP 503: <index>/<normalized name>/."""
    from packaging.utils import canonicalize_name

    return index_url.rstrip("/") + "/" + canonicalize_name(name) + "/"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: List[IndexFile] = []
        self._attrs: Optional[dict] = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self._attrs, self._text = dict(attrs), ""

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._attrs is not None:
            href = self._attrs.get("href") or ""
            name = urllib.parse.unquote(urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1]) or self._text.strip()
            if name:
                self.files.append(IndexFile(name, self._attrs.get("data-requires-python") or None, None,
                                            "data-yanked" in self._attrs))
            self._attrs = None


def parse_page(body: bytes, content_type: str) -> Tuple[IndexFile, ...]:
    """The files of a project page, PEP 691 JSON or PEP 503 HTML. Raises :class:`BadIndexAnswer` on anything else."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON_TYPE or kind == "application/json":
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise BadIndexAnswer(f"not JSON ({err.__class__.__name__})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
            raise BadIndexAnswer("JSON without a files list")
        files = []
        for f in doc["files"]:
            if not isinstance(f, dict) or not isinstance(f.get("filename"), str):
                raise BadIndexAnswer("a file entry without a filename")
            rp, up = f.get("requires-python"), f.get("upload-time")
            files.append(IndexFile(f["filename"], rp if isinstance(rp, str) else None,
                                   up if isinstance(up, str) else None, bool(f.get("yanked"))))
        return tuple(files)
    if kind in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
        parser = _Anchors()
        try:
            parser.feed(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadIndexAnswer("HTML that is not UTF-8") from None
        if "<a" not in body.decode("utf-8").lower() and "<html" not in body.decode("utf-8").lower():
            raise BadIndexAnswer("not a simple-repository page")
        return tuple(parser.files)
    raise BadIndexAnswer(f"unexpected content type {kind!r}")


def _opener(settings: PipSettings) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=settings.cert) if settings.cert else ssl.create_default_context()
    if settings.client_cert:
        context.load_cert_chain(settings.client_cert)
    proxies = {"http": settings.proxy, "https": settings.proxy} if settings.proxy else None
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies),
                                       urllib.request.HTTPSHandler(context=context))


def fetch_page(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> Tuple[IndexFile, ...]:
    """GET one project page and parse it. Raises OSError (unreachable, timeout, HTTP error) or BadIndexAnswer."""
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            return ()  # the project is not on this index
        return parse_page(path.read_bytes(), "text/html")
    request = urllib.request.Request(url, headers={"Accept": ACCEPT, "User-Agent": "dlsetup"})
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return ()  # the project is not on this index
        raise
    with response:
        body = response.read(MAX_BYTES + 1)
        if len(body) > MAX_BYTES:
            raise BadIndexAnswer("answer too large for an index page")
        return parse_page(body, response.headers.get("Content-Type", ""))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlsetup" / "index"


def _cache_path(directory: Path, url: str) -> Path:
    return directory / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")


def _read_cache(path: Path) -> Optional[Tuple[datetime, Tuple[IndexFile, ...]]]:
    try:
        doc = json.loads(path.read_text("utf-8"))
        fetched = datetime.fromisoformat(doc["fetched"])
        return fetched, tuple(IndexFile(**f) for f in doc["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, url: str, fetched: datetime, files: Sequence[IndexFile]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": redact(url), "fetched": fetched.isoformat(),
                                   "files": [vars(f) for f in files]}), "utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs the next run a lookup


def _failed_recently(path: Path, now: datetime) -> Optional[str]:
    """The failure recorded for a page less than :data:`FAILURE_TTL` ago ("timed out at 06:01 UTC")."""
    try:
        doc = json.loads(path.read_text("utf-8"))
        when = datetime.fromisoformat(doc["failed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if timedelta(0) <= now - when < FAILURE_TTL:
        return f"{doc.get('why', 'failed')} at {when.strftime('%H:%M')} UTC, not asked again before " \
               f"{(when + FAILURE_TTL).strftime('%H:%M')}"
    return None


def _record_failure(path: Path, why: str, now: datetime) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"failed": now.isoformat(), "why": why}), "utf-8")
    except OSError:
        pass


def _why(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    text = str(reason if reason is not None else err) or err.__class__.__name__
    return "timed out" if "timed out" in text or isinstance(err, TimeoutError) else text.splitlines()[0][:120]


def timeout_default() -> float:
    try:
        return max(0.05, float(os.environ.get("DLSETUP_INDEX_TIMEOUT", DEFAULT_TIMEOUT)))
    except ValueError:
        return DEFAULT_TIMEOUT


def lookup(projects: Mapping[str, Sequence[str]], settings: PipSettings, *, timeout: Optional[float] = None,
           directory: Optional[Path] = None, now: Optional[datetime] = None) -> LiveIndex:
    """Ask the indexes about ``projects`` ({key: [project page URL, ...]}), all at once, within ``timeout``
    seconds in total. A fresh cached answer is used without asking; a stale one when the index fails."""
    timeout = timeout_default() if timeout is None else timeout
    directory = cache_dir() if directory is None else directory
    now = now or datetime.now(timezone.utc)
    opener: Optional[urllib.request.OpenerDirector] = None  # built only when a page must be asked
    found: Dict[str, Project] = {}
    failures: List[str] = []
    jobs = {}
    pool = ThreadPoolExecutor(max_workers=max(1, sum(len(u) for u in projects.values())))
    try:
        for key, urls in projects.items():
            for url in urls:
                cached = _read_cache(_cache_path(directory, url))
                if cached and now - cached[0] < CACHE_TTL:
                    found.setdefault(key, Project(key, redact(url), cached[0].date().isoformat(), cached[1], True))
                    continue
                recent = _failed_recently(_cache_path(directory, url).with_suffix(".failed"), now)
                if recent:
                    if cached and key not in found:
                        found[key] = Project(key, redact(url), cached[0].date().isoformat(), cached[1], True)
                    failures.append(f"{key} on {redact(url)}: {recent}")
                    continue
                opener = opener or _opener(settings)
                jobs[pool.submit(fetch_page, opener, url, timeout)] = (key, url, cached)
        done, _ = wait(jobs, timeout=timeout)
        for future, (key, url, cached) in jobs.items():
            error: Optional[BaseException] = None
            if future in done:
                error = future.exception()
                if error is None:
                    files = future.result()
                    _write_cache(_cache_path(directory, url), url, now, files)
                    old = found.get(key)
                    found[key] = Project(key, old.url if old else redact(url), now.date().isoformat(),
                                         (old.files if old else ()) + files)
                    continue
            why = _why(error) if error is not None else "timed out"
            _record_failure(_cache_path(directory, url).with_suffix(".failed"), why, now)
            if cached and key not in found:
                found[key] = Project(key, redact(url), cached[0].date().isoformat(), cached[1], True)
                failures.append(f"{key} on {redact(url)}: {why}; using the answer cached on "
                                f"{cached[0].date().isoformat()}")
            else:
                failures.append(f"{key} on {redact(url)}: {why}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return LiveIndex(redact(settings.index_url), now.date().isoformat(), found, tuple(sorted(failures)))


def pages(names: Iterable[str], settings: PipSettings, pytorch_base: Optional[str] = None) -> Dict[str, List[str]]:
    """The page URLs to ask for each project name: pip's index and its extra indexes; PyTorch's own index
    for :data:`PYTORCH` when ``pytorch_base`` is given."""
    indexes = [settings.index_url, *settings.extra_index_urls]
    out = {name: [project_url(i, name) for i in indexes] for name in names}
    if pytorch_base:
        out[PYTORCH] = [project_url(pytorch_base, "torch")]
    return out


def find_links_project(name: str, directories: Sequence[str], today: str) -> Optional[Project]:
    """``name``'s wheels in local --find-links directories, as an index page (what pip --no-index sees)."""
    from packaging.utils import canonicalize_name

    files = []
    for directory in directories:
        path = Path(directory)
        if not path.is_dir():
            continue
        for entry in sorted(path.iterdir()):
            try:
                project = parse_wheel_filename(entry.name)[0] if entry.name.endswith(".whl") else None
            except (InvalidWheelFilename, InvalidVersion):
                continue
            if project == canonicalize_name(name):
                files.append(IndexFile(entry.name))
    return Project(name, " ".join(directories), today, tuple(files)) if files else None


def ask(frameworks: Sequence[str], *, index_url: Optional[str] = None, pytorch_base: Optional[str] = None,
        cuda: bool = False, rocm: bool = False, find_links: Sequence[str] = (), no_index: bool = False,
        timeout: Optional[float] = None) -> LiveIndex:
    """What the indexes say about the projects a plan for ``frameworks`` needs (``cuda``: also the CUDA
    runtime's releases; ``rocm``: PyTorch's index for its ROCm builds). ``index_url`` (--pip-index-url)
    replaces pip's indexes, and then PyTorch's own index is not asked either. ``no_index`` (--pip-offline):
    only the local ``find_links`` directories are read, nothing is asked over the network."""
    now = datetime.now(timezone.utc)
    names = [n for f, n in (("pytorch", "torch"), ("tensorflow", "tensorflow"), ("jax", "jax"), ("keras", "keras"))
             if f in frameworks]
    if no_index:
        local = {n: p for n in names if (p := find_links_project(n, find_links, now.date().isoformat()))}
        return LiveIndex("", now.date().isoformat(), local, ())
    settings = pip_settings(index_url)
    if settings is None:
        return LiveIndex("", now.date().isoformat(), {}, ("pip names no package index",))
    if cuda:
        names.append("nvidia-cuda-runtime")
    vendor = pytorch_base if pytorch_base and not index_url and ("pytorch" in frameworks or rocm) else None
    return lookup(pages(names, settings, vendor), settings, timeout=timeout, now=now)
