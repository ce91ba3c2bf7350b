#!/bin/sh
# Install dlsetup from this clone and, given arguments, run it:
#
#     ./install.sh provision [OPTIONS]      # install, then `dlsetup provision OPTIONS`
#     ./install.sh                          # install only
#
# Tested on Debian 12 and 13, Ubuntu 22.04, 24.04 and 26.04 (README, "Supported systems"). Steps:
#  1. runs as root: started as another user it runs itself again with sudo;
#  2. installs from the distribution's own archive what its Python lacks to make a venv (these systems
#     ship python3 without ensurepip: python3.X-venv); Ubuntu 22.04's python3 is 3.10, which the
#     supported ansible-core releases no longer run on, so there it installs python3.11 and
#     python3.11-venv from 22.04's universe component and runs dlsetup on that;
#  3. creates the venv /opt/dlsetup/controller (or reuses it), installs this clone into it with pip and
#     links /usr/local/bin/dlsetup to it (an existing file of that name that is not a link is left alone);
#  4. with arguments, runs dlsetup with them (on the same terminal, so its confirmation prompt works).
#
# Environment: DLSETUP_PYTHON (a Python >= 3.11 to use instead of the distribution's),
# DLSETUP_CONTROLLER_VENV (default /opt/dlsetup/controller); for tests: DLSETUP_INSTALL_ROOT (read
# etc/os-release and the Python under this folder) and DLSETUP_INSTALL_DRY_RUN=1 (print each command
# instead of running it). Exit status: dlsetup's when it runs, else 0, 1 a step failed, 2 an
# unsupported system (nothing changed), 5 not root and no sudo.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
venv=${DLSETUP_CONTROLLER_VENV:-/opt/dlsetup/controller}
root=${DLSETUP_INSTALL_ROOT:-}
dry=${DLSETUP_INSTALL_DRY_RUN:-}
MIN_MINOR=11  # dlsetup needs Python 3.11 or newer (pyproject.toml: requires-python)
TESTED="Debian 12, 13 and Ubuntu 22.04, 24.04, 26.04"

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { code=$1; shift; say "error: $*"; exit "$code"; }
quote() {
    case $1 in
        '' | *[!A-Za-z0-9_./=:,+@%-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf '%s' "$1" ;;
    esac
}
# run COMMAND...: run it, or with DLSETUP_INSTALL_DRY_RUN print it as a shell line after "+ "
run() {
    if [ -n "$dry" ]; then
        line='+'
        for arg in "$@"; do line="$line $(quote "$arg")"; done
        printf '%s\n' "$line"
    else
        "$@"
    fi
}

if [ "$(id -u)" != 0 ] && [ -z "$dry" ]; then
    command -v sudo >/dev/null 2>&1 || die 5 "run this as root: it installs packages (sudo is not installed)"
    say "installing needs root: running again with sudo"
    exec sudo -- "$here/install.sh" "$@"
fi

# -- which system, which Python ------------------------------------------------------------------
release=$root/etc/os-release
[ -r "$release" ] || release=$root/usr/lib/os-release
[ -r "$release" ] || die 2 "cannot tell which system this is: no /etc/os-release"
ID='' VERSION_ID='' PRETTY_NAME=''
# shellcheck disable=SC1090
. "$release"
system=${PRETTY_NAME:-$ID $VERSION_ID}

python=/usr/bin/python3
case "$ID:$VERSION_ID" in
    debian:12 | debian:13 | ubuntu:24.04 | ubuntu:26.04) ;;
    ubuntu:22.04) python=/usr/bin/python3.11 ;;  # its python3 is 3.10: see the header
    *) say "warning: $system is not one of the tested systems ($TESTED): trying its python3" ;;
esac
[ -n "${DLSETUP_PYTHON:-}" ] && python=$DLSETUP_PYTHON
name=${python##*/}

packages=''
if [ -x "$root$python" ]; then
    version=$("$root$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die 1 "$python does not run"
    if [ "${version%%.*}" != 3 ] || [ "${version#*.}" -lt "$MIN_MINOR" ]; then
        die 2 "$python on $system is Python $version; dlsetup needs 3.$MIN_MINOR or newer." \
            "Install one with its venv module and run: DLSETUP_PYTHON=/path/to/python3.X ./install.sh" \
            "(README, \"Supported systems\")"
    fi
    # Debian and Ubuntu move ensurepip, which venv needs, out of the interpreter's package
    "$root$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || packages="python$version-venv"
else
    [ -n "${DLSETUP_PYTHON:-}" ] && die 2 "DLSETUP_PYTHON=$python is not an executable"
    packages="$name $name-venv"  # python3 + python3-venv, or python3.11 + python3.11-venv
fi

if [ -n "$packages" ]; then
    if [ ! -x "$root/usr/bin/apt-get" ]; then
        die 2 "$system has no apt-get to install $packages: install Python 3.$MIN_MINOR or newer with its" \
            "venv module, then run: DLSETUP_PYTHON=/path/to/python3.X ./install.sh"
    fi
    say "installing $packages from the distribution's archive"
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update -qq || die 1 "apt-get update failed"
    # shellcheck disable=SC2086
    run apt-get install -y -qq --no-install-recommends $packages \
        || die 1 "apt-get could not install $packages (on Ubuntu they are in the universe component:" \
            "add-apt-repository universe)"
fi

# -- the venv dlsetup runs in --------------------------------------------------------------------
if [ -n "$dry" ] || ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    say "creating the venv $venv"
    run "$python" -m venv --clear "$venv" || die 1 "$python -m venv $venv failed"
    # the distribution's pip wheel can be older than the Python (22.04: pip 22.0 for 3.11)
    run "$venv/bin/python" -m pip install --quiet --upgrade pip || die 1 "pip could not upgrade itself in $venv"
fi
say "installing dlsetup and Ansible into $venv (about a minute the first time)"
run "$venv/bin/python" -m pip install --quiet --upgrade "$here" || die 1 "pip install $here failed"
link=$root/usr/local/bin/dlsetup
if [ ! -d "${link%/*}" ]; then
    say "dlsetup is $venv/bin/dlsetup"
elif [ -L "$link" ] || [ ! -e "$link" ]; then
    run ln -sfn "$venv/bin/dlsetup" "$link"
else
    say "$link exists and is not a link: left alone; dlsetup is $venv/bin/dlsetup"
fi

if [ $# -eq 0 ]; then
    say "done: try 'dlsetup probe', then 'dlsetup provision'"
    exit 0
fi
if [ -n "$dry" ]; then
    run "$venv/bin/dlsetup" "$@"
    exit 0
fi
exec "$venv/bin/dlsetup" "$@"
