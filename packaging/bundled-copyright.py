#!/usr/bin/python3
"""Print the debian/copyright paragraphs (DEP-5) of the Python distributions bundled in the package's venv.

debian/rules appends them to the package's /usr/share/doc/s1mpled/copyright at build time, from the
metadata of what was really installed (so a change of debian/requirements.txt cannot leave the list
behind). For each distribution: the files it installed, its copyright lines (from its license files,
else its metadata's authors), its license as declared (License-Expression, else License, else the
trove classifiers) in DEP-5 spelling, and the license texts it ships. Texts Debian has in
/usr/share/common-licenses (Apache-2.0, MPL-2.0, LGPL, GPL) are referred to, not repeated. A
distribution whose license cannot be named, or that ships no text of a license that needs one,
fails the build (exit 1): add its spelling to the tables below.

    bundled-copyright.py SITE_PACKAGES INSTALLED_PREFIX [--exclude NAME ...]

e.g. ``bundled-copyright.py debian/s1mpled/opt/venvs/s1mpled/lib/python3.11/site-packages
/opt/venvs/s1mpled --exclude s1mpled``. Standard library only (it runs with Debian's python3).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from email.message import Message
from importlib.metadata import Distribution, distributions
from pathlib import Path, PurePosixPath
from typing import cast

# SPDX identifiers and the free-text spellings seen in License: fields -> DEP-5 short names.
SHORT_NAMES = {
    "apache-2.0": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "mit": "Expat",
    "mit license": "Expat",
    "bsd-2-clause": "BSD-2-clause",
    "bsd-3-clause": "BSD-3-clause",
    "isc": "ISC",
    "isc license": "ISC",
    "isc license (iscl)": "ISC",
    "mpl-2.0": "MPL-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
    "psf-2.0": "PSF-2.0",
    "python software foundation license": "PSF-2.0",
    "lgplv2+": "LGPL-2.1+",
    "lgpl-2.1-or-later": "LGPL-2.1+",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.1+",
}

# Licenses whose full text Debian ships: referred to, never copied (lintian wants it so).
COMMON = {
    "Apache-2.0": ("the Apache License, Version 2.0", "Apache-2.0"),
    "MPL-2.0": ("the Mozilla Public License, Version 2.0", "MPL-2.0"),
    "LGPL-2.1+": ("the GNU Lesser General Public License, version 2.1", "LGPL-2.1"),
}
# How a copied license file that is one of those texts starts (it is replaced by the reference).
FULL_TEXT = {
    "Apache-2.0": re.compile(r"^\s*Apache License\s*\n\s*Version 2\.0, January 2004", re.MULTILINE),
    "MPL-2.0": re.compile(r"^\s*Mozilla Public License,? Version 2\.0\s*$", re.MULTILINE),
    "LGPL-2.1+": re.compile(r"^\s*GNU LESSER GENERAL PUBLIC LICENSE\s*\n\s*Version 2\.1", re.MULTILINE),
}

# The permissive texts, for a distribution that installed none (old egg-info installs ship no file).
_EXPAT = """Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE."""
CANONICAL = {"Expat": _EXPAT}

LICENSE_FILE = re.compile(r"^(licen[cs]e|copying|notice|authors)", re.IGNORECASE)
COPYRIGHT_LINE = re.compile(r"^\s*(copyright\b|\(c\)|©)", re.IGNORECASE)
PLACEHOLDER = re.compile(r"\[yyyy\]|\{yyyy\}|<year>|\[name of copyright owner\]|<copyright holders?>", re.IGNORECASE)


Node = str | tuple[str, list["Node"]]  # a license name, or (AND or OR, its terms)


class Unnamed(Exception):
    """A license this script cannot name or has no text for."""


def short_name(text: str) -> str:
    name = SHORT_NAMES.get(" ".join(text.split()).lower())
    if name is None:
        raise Unnamed(f"unknown license spelling {text!r}")
    return name


def dep5_expression(spdx: str) -> tuple[str, list[str]]:
    """An SPDX expression in DEP-5 spelling ("A or B, and C") and the license names in it."""
    tokens = re.findall(r"\(|\)|[^\s()]+", spdx)
    pos = 0

    def parse(stop: str | None) -> tuple[str, list[Node]]:
        nonlocal pos
        op, terms = "", list[Node]()
        while pos < len(tokens) and tokens[pos] != stop:
            token = tokens[pos]
            pos += 1
            if token.upper() in ("AND", "OR"):
                if op and op != token.upper():
                    raise Unnamed(f"mixed AND/OR without parentheses in {spdx!r}")
                op = token.upper()
            elif token == "(":
                terms.append(parse(")"))
                pos += 1
            else:
                terms.append(short_name(token))
        return op or "AND", terms

    tree = parse(None)
    names: list[str] = []

    def render(node: Node, depth: int) -> str:
        if isinstance(node, str):
            names.append(node)
            return node
        op, terms = node
        parts = [render(t, depth + 1) for t in terms]
        if op == "OR":
            if depth > 1:
                raise Unnamed(f"{spdx!r} is nested too deeply for DEP-5")
            return " or ".join(parts)
        nested = any(not isinstance(t, str) for t in terms)
        if nested and depth > 0:
            raise Unnamed(f"{spdx!r} is nested too deeply for DEP-5")
        return (", and " if nested else " and ").join(parts)

    return render(tree, 0), names


def _metadata(dist: Distribution) -> Message:
    return cast("Message", dist.metadata)  # an email.message.Message at run time


def declared(dist: Distribution) -> tuple[str, list[str], str]:
    """(DEP-5 license expression, the names in it, what the metadata said)."""
    meta = _metadata(dist)
    expression = meta.get("License-Expression")
    if expression:
        text, names = dep5_expression(expression)
        return text, names, f"License-Expression: {expression}"
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field:
        try:
            name = short_name(field)
        except Unnamed:
            pass
        else:
            return name, [name], f"License: {field}"
    classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        names = sorted({short_name(c) for c in classifiers})
        return " or ".join(names), names, "classifiers: " + "; ".join(classifiers)
    raise Unnamed(f"{meta['Name']} declares no license")


def _meta_dir(dist: Distribution) -> Path:
    path = getattr(dist, "_path", None)
    if not isinstance(path, Path):
        raise Unnamed(f"{dist.metadata['Name']}: not installed from a directory")
    return path


def installed_files(dist: Distribution, site: Path, prefix: PurePosixPath) -> list[str]:
    """What the distribution installed, as DEP-5 patterns relative to the file system root."""
    meta_dir = _meta_dir(dist)
    root = PurePosixPath(str(prefix).lstrip("/"))
    site_rel = root / site.resolve().relative_to(site.resolve().parents[2]).as_posix()
    venv = site.resolve().parents[2]
    patterns = {f"{site_rel}/{meta_dir.name}/*"}
    if meta_dir.suffix == ".dist-info":
        for entry in dist.files or []:
            parts = PurePosixPath(str(entry)).parts
            if parts[0] == "..":
                target = (site / entry).resolve()
                patterns.add(f"{root}/{target.relative_to(venv).as_posix()}")
            elif len(parts) == 1 or parts[0] == "__pycache__":
                patterns.add(f"{site_rel}/{PurePosixPath(str(entry)).as_posix()}")
            elif parts[0] != meta_dir.name:
                patterns.add(f"{site_rel}/{parts[0]}/*")
    else:  # egg-info: installed-files.txt is optional; top_level.txt names the packages
        for name in dict.fromkeys(n.split("/")[0] for n in (dist.read_text("top_level.txt") or "").split()):
            patterns.add(f"{site_rel}/{name}/*" if (site / name).is_dir() else f"{site_rel}/{name}.py")
    return sorted(patterns)


def license_texts(dist: Distribution) -> list[tuple[str, str]]:
    """(file name, text) of every license, notice and authors file in the distribution's metadata."""
    meta_dir = _meta_dir(dist)
    found = [p for p in sorted(meta_dir.rglob("*")) if p.is_file() and LICENSE_FILE.match(p.name)]
    return [(p.relative_to(meta_dir).as_posix(), p.read_text(errors="replace").replace("\r", "")) for p in found]


def copyright_lines(dist: Distribution, texts: Iterable[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for _, text in texts:
        for raw in text.splitlines():
            line = " ".join(raw.split())
            wanted = COPYRIGHT_LINE.match(line) and any(c.isdigit() for c in line) and not PLACEHOLDER.search(line)
            if wanted and line not in lines:
                lines.append(line)
    if lines:
        return lines[:12]
    meta = _metadata(dist)
    who = [v for k in ("Author", "Author-email", "Maintainer", "Maintainer-email") if (v := meta.get(k))]
    return [f"the {meta['Name']} authors" + (f": {', '.join(who)}" if who else "")]


def body(names: list[str], texts: list[tuple[str, str]], name: str) -> str:
    """The license text: references to the common licenses, then the files the distribution ships."""
    out = [
        f"On Debian systems the complete text of {title} is in /usr/share/common-licenses/{file}."
        for n in dict.fromkeys(names)
        if n in COMMON
        for title, file in [COMMON[n]]
    ]
    copied = False
    for file_name, text in texts:
        shown = text
        for license_name, start in FULL_TEXT.items():
            match = start.search(shown)
            if match is not None:
                title, file = COMMON[license_name]
                shown = shown[: match.start()].rstrip() + f"\n[{title}: /usr/share/common-licenses/{file}]"
        out.append(f"{file_name}:\n{shown.strip()}")
        copied = True
    if not copied:
        for n in dict.fromkeys(names):
            if n in COMMON:
                continue
            if n not in CANONICAL:
                raise Unnamed(f"{name} ships no text of its license {n} and none is known here")
            out.append(CANONICAL[n])
    return "\n\n".join(out)


def field(name: str, value: str) -> str:
    """A DEP-5 field; continuation lines indented, empty ones as ' .'."""
    first, *rest = value.split("\n")
    lines = [f"{name}: {first}".rstrip()]
    lines += [f" {line}".rstrip() if line.strip() else " ." for line in rest]
    return "\n".join(lines)


def paragraph(dist: Distribution, site: Path, prefix: PurePosixPath) -> str:
    meta = dist.metadata
    name, version = meta["Name"], meta["Version"]
    expression, names, said = declared(dist)
    texts = license_texts(dist)
    return "\n".join(
        [
            field("Files", "\n".join(installed_files(dist, site, prefix))),
            field("Copyright", "\n".join(copyright_lines(dist, texts))),
            field("License", f"{expression}\n{body(names, texts, name)}"),
            field("Comment", f"{name} {version}, bundled in the virtualenv; its metadata's {said}"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the venv's site-packages directory")
    parser.add_argument("prefix", type=PurePosixPath, help="where the venv is installed (/opt/venvs/s1mpled)")
    parser.add_argument("--exclude", action="append", default=[], help="a distribution not to list (repeatable)")
    args = parser.parse_args(argv)
    excluded = {n.lower().replace("_", "-") for n in args.exclude}
    dists = {
        d.metadata["Name"].lower().replace("_", "-"): d
        for d in distributions(path=[str(args.site)])
        if d.metadata["Name"] and d.metadata["Name"].lower().replace("_", "-") not in excluded
    }
    out, failed = [], []
    for key in sorted(dists):
        try:
            out.append(paragraph(dists[key], args.site, args.prefix))
        except Unnamed as exc:
            failed.append(f"{key}: {exc}")
    if failed:
        print("bundled-copyright: cannot describe:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
