"""Lay a wheelhouse out as two PEP 503 indexes on disk: ``vendor`` (every wheel) and ``user`` (mpmath).

Usage: python3 make_indexes.py WHEELS DEST. pip reads a ``file://`` index directory through its
``index.html`` files, so each index gets one and so does each project in it.
"""

import html
import os
import re
import sys

wheels, dest = sys.argv[1], sys.argv[2]
projects = {}
for name in sorted(os.listdir(wheels)):
    if name.endswith(".whl"):
        projects.setdefault(re.sub(r"[-_.]+", "-", name.split("-")[0]).lower(), []).append(name)
for index, names in (("vendor", sorted(projects)), ("user", ["mpmath"])):
    root = os.path.join(dest, index)
    for project in names:
        os.makedirs(os.path.join(root, project), exist_ok=True)
        links = "".join(f'<a href="file://{html.escape(os.path.join(wheels, w))}">{html.escape(w)}</a>\n'
                        for w in projects[project])
        with open(os.path.join(root, project, "index.html"), "w") as fh:
            fh.write(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    with open(os.path.join(root, "index.html"), "w") as fh:
        fh.write("".join(f'<a href="{p}/">{p}</a>\n' for p in names))
