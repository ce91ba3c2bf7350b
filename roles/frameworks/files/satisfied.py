"""Exit 0 when every pip requirement given is installed in this interpreter's environment, else 1.

Run by the frameworks role with the venv's python before pip: when all is installed already, the pip
task (seconds of resolver work per host) is skipped. Dependencies are followed as pip would, those of a
requested extra (``tensorflow[and-cuda]``) included, with markers evaluated for this interpreter;
anything unreadable counts as "not installed", so pip decides.
Needs only the standard library and the packaging copy that pip carries.
"""

import sys
from importlib import metadata

try:
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
except ImportError:  # a venv without pip: let pip's own task sort it out
    sys.exit(1)


def unmet(requirements, installed, seen, extra=""):
    """The first requirement (or dependency of one, as pip would check it) not installed at a matching
    version, or None. ``extra``: the extra the requirements were asked for, for their markers."""
    for text in requirements:
        if not _may_apply(text, extra):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            return text
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        dist = installed.get(name)
        if dist is None or not req.specifier.contains(dist.version, prereleases=True):
            return text.split(";")[0].strip()
        for wanted in ("", *sorted(req.extras)):  # its own dependencies, then those of each extra asked
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            missing = unmet(dist.requires or (), installed, seen, wanted)
            if missing:
                return f"{missing} (for {text})"
    return None


def _may_apply(text, extra):
    """False for a requirement whose marker names only other extras: most of them, and parsing is slow."""
    marker = text.partition(";")[2]
    if "extra" not in marker:
        return True
    return bool(extra) and (f'"{extra}"' in marker or f"'{extra}'" in marker)


def main(argv):
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(canonicalize_name(name), dist)
    missing = unmet(argv, installed, set())
    if missing:
        print(f"not installed: {missing}")
        return 1
    print("all installed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
