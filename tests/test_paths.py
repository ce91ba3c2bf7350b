"""The path policy: mount points, the framework venv and pip's URLs (dlsetup/paths.py), and the CLI
refusing them with one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import H100_BUNDLE, REPO
from dlsetup import paths
from dlsetup.errors import UsageError
from dlsetup.plan import load_request

#: Written out, not derived from the module's lists: dropping an entry there must fail here.
SYSTEM_MOUNTS = [
    "/", "/etc", "/etc/data", "/usr", "/usr/local", "/usr/local/data", "/boot", "/boot/efi", "/efi",
    "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/proc", "/sys", "/dev", "/dev/shm", "/run",
    "/run/data", "/tmp", "/tmp/data", "/var", "/var/lib", "/var/log", "/var/log/journal", "/var/tmp",
    "/var/lib/dpkg", "/var/lib/apt/lists", "/var/lib/systemd", "/var/lib/postgresql", "/var/lib/mysql/data",
    "/var/spool", "/var/cache", "/var/cache/apt", "/home",
    "/home/alice", "/root", "/mnt", "/media", "/opt", "/opt/rocm", "/opt/rocm-7.2", "/opt/nvidia", "/snap",
]
FREE_MOUNTS = ["/data", "/scratch", "/srv", "/srv/datasets", "/mnt/data", "/home/alice/datasets", "/opt/data",
               "/var/lib/docker", "/var/lib/containers", "/var/lib/containerd", "/var/lib/docker/volumes",
               "/root/checkpoints", "/data/v1.2_x-y+z@1"]
#: Characters fstab, Ansible's mount module, --storage or PATH cannot carry safely.
INJECTED = ["\t", "\n", "\r", " ", "\x00", "\x0b", "\x1b", "\\", ":", "#", ",", "'", '"', "$", "*", "é", "\u2028"]


@pytest.mark.parametrize("path", SYSTEM_MOUNTS)
def test_system_mount_points_are_refused(path):
    with pytest.raises(UsageError, match=r"^storage: mount point .* (system|shared|root) directory"):
        paths.mount_point(path)


@pytest.mark.parametrize("path", FREE_MOUNTS)
def test_data_mount_points_are_accepted(path):
    assert paths.mount_point(path) == path


@pytest.mark.parametrize("char", INJECTED)
def test_each_injected_character_is_refused(char):
    for path in (f"/data{char}x", f"/data/{char}", f"/da{char}ta/sub"):
        with pytest.raises(UsageError, match="contains") as err:
            paths.mount_point(path)
        assert "\n" not in str(err.value) and "\t" not in str(err.value)
        with pytest.raises(UsageError, match="contains"):
            paths.venv_path(path.replace("/data", "/srv/venv"))


@pytest.mark.parametrize("path,words", [
    ("data", "must be an absolute path"), ("", "must be an absolute path"),
    ("/data/../etc", "'..'"), ("/data/./x", "'.'"), ("/data/..", "'..'"),
    ("/" + "x" * 256, "longer than 255"), ("/x" * 2100, "longer than 4095"),
])
def test_malformed_paths_are_refused(path, words):
    with pytest.raises(UsageError, match=words):
        paths.mount_point(path)


def test_paths_are_normalised():
    assert paths.mount_point("//data//sets/") == "/data/sets"
    assert paths.venv_path("/srv//venv/") == "/srv/venv"


@pytest.mark.parametrize("value", [5, None, ["/data"], {"a": 1}, True])
def test_paths_of_the_wrong_type_are_refused(value):
    with pytest.raises(UsageError, match="expected an absolute path"):
        paths.mount_point(value)
    with pytest.raises(UsageError, match="expected an absolute path"):
        paths.venv_path(value)


@pytest.mark.parametrize("path", ["/", "/usr", "/usr/local", "/usr/local/venv", "/usr/lib/venv", "/bin", "/etc",
                                  "/etc/venv", "/boot", "/var", "/home", "/home/alice", "/root", "/opt", "/tmp/venv",
                                  "/var/tmp/venv", "/lib", "/sbin", "/proc/x", "/sys", "/dev", "/run/venv",
                                  "/var/lib/docker/venv"])
def test_system_prefixes_are_refused_for_the_venv(path):
    with pytest.raises(UsageError, match=r"^venv .* (system|shared|root) directory"):
        paths.venv_path(path)


@pytest.mark.parametrize("path", ["/opt/dlsetup/venv", "/srv/venv", "/home/alice/venv", "/data/venvs/torch",
                                  "/root/venv"])
def test_venv_paths_of_their_own_are_accepted(path):
    assert paths.venv_path(path) == path


@pytest.mark.parametrize("url", ["https://mirror.example/simple", "http://10.0.0.5:8080/pypi/simple/",
                                 "https://user:token@mirror.example/simple", "file:///srv/simple",
                                 "file://localhost/srv/simple"])
def test_index_urls_accepted(url):
    assert paths.index_url(url) == url


@pytest.mark.parametrize("url", ["not a url", "mirror.example/simple", "ftp://mirror.example/", "https://",
                                 "https:///simple", "http://:80/", "https://h:99999/", "file://server/share",
                                 "file:relative", "https://mirror.example/\nsimple", "https://a b/", 5, None, "",
                                 "https://m.example/" + "x" * 3000])
def test_bad_index_urls_refused(url):
    with pytest.raises(UsageError) as err:
        paths.index_url(url)
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


@pytest.mark.parametrize("value,ok", [("/srv/wheels", True), ("/srv/my wheels", True),
                                      ("https://mirror.example/wheels/", True), ("wheels", False),
                                      ("/srv/w\nheels", False), ("ftp://x/", False), (5, False)])
def test_find_links(value, ok):
    if ok:
        assert paths.find_links(value) == value
    else:
        with pytest.raises(UsageError):
            paths.find_links(value)


def test_quote_is_bounded_whatever_it_quotes():
    bomb: list = ["lol"] * 9
    for _ in range(9):
        bomb = [bomb] * 9  # 9**10 leaves if walked: the repr must not walk it
    for value in (bomb, "x" * 10**6, {i: i for i in range(10**5)}, 10**4000):
        assert len(paths.quote(value)) <= 80


# -- wired into the request: options and config file alike ---------------------------------------------


@pytest.mark.parametrize("options", [
    {"storage": ("/etc",)}, {"storage": ("/usr:raid1",)}, {"storage": ("/data", "/home:raid0:xfs")},
    {"storage": ("/data\tx",)}, {"venv_path": "/"}, {"venv_path": "/usr"}, {"pip_index_url": "not a url"},
    {"pip_find_links": ("wheels",)},
])
def test_request_options_go_through_the_policy(options):
    with pytest.raises(UsageError):
        load_request(None, **options)


@pytest.mark.parametrize("text", [
    "storage: [{mountpoint: /etc}]\n", "storage: {arrays: [{mountpoint: /var}]}\n",
    "storage: [{mountpoint: \"/data\\tx\"}]\n", "storage: [{mountpoint: \"/data\\nUUID=x / ext4 defaults 0 0\"}]\n",
    "venv: /usr\n", "venv: /\n", "pip_index_url: not a url\n",
])
def test_config_values_go_through_the_policy(tmp_path, text):
    config = tmp_path / "dlsetup.yml"
    config.write_text(text)
    with pytest.raises(UsageError) as err:
        load_request(config)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args,words", [
    (["--storage", "/etc"], "storage: mount point /etc is the system directory /etc"),
    (["--storage", "/home:raid1"], "storage: mount point /home is the shared directory /home"),
    (["--storage", "/data\nx"], "contains '\\n'"),
    (["--venv", "/"], "venv / is the root directory"),
    (["--venv", "/usr"], "venv /usr is the system directory /usr"),
    (["--pip-index-url", "not a url"], "pip index URL 'not a url'"),
])
def test_cli_refuses_with_one_line_and_exit_2(fixtures_dir, args, words):
    done = subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--from-bundle", str(H100_BUNDLE), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("dlsetup: error: ") and words in done.stderr
