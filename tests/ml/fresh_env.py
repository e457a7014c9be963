"""A fresh virtual environment holding exactly a set of requirements, offline.

Tests must not reach the network, and ``pip install -r requirements.txt`` from the
package index costs minutes and ~150 MB a run. The resolver's work can be done here
instead, against THIS environment's installed distributions: :func:`closure` takes
each requirement's distribution, checks that its installed version satisfies the
requirement's specifier (and its ``Requires-Python``), follows its ``Requires-Dist``
with markers evaluated for this interpreter (extras only where a requirement names
them) and recurses, so a version pip would refuse fails the test here too.
:func:`fresh_venv` then makes exactly that closure importable in a new
``python -m venv`` (no system site packages, no pip): a folder of symlinks to the
closure's files (its ``.dist-info`` folders included), added by a ``.pth`` file in the
venv's site-packages. Any distribution outside the closure (CCF included) stays out.
"""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name


def installed() -> dict[str, metadata.Distribution]:
    """This environment's distributions by canonical name, the first on ``sys.path``
    winning as it does for imports."""
    out: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        out.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return out


def closure(
    requirements: Iterable[str], dists: Mapping[str, metadata.Distribution] | None = None
) -> dict[str, metadata.Distribution]:
    """The distributions ``requirements`` need, transitively, from ``dists`` (this
    environment's by default), by canonical name. Raises ``AssertionError`` naming the
    requirement (and who asked for it) that is missing or not satisfied by the
    installed version, as pip's resolver would refuse it."""
    dists = installed() if dists is None else dists
    here = platform.python_version()
    out: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()  # (name, extra) already followed
    # a marker is evaluated where the requirement is made (extra: the parent's)
    todo = [(Requirement(r), "requirements.txt") for r in requirements]
    todo = [(r, p) for r, p in todo if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        dist = dists.get(name)
        assert dist is not None, f"{req} (from {parent}) is not installed here"
        version = dist.version
        assert req.specifier.contains(version, prereleases=True), (
            f"{req} (from {parent}) is not satisfied by the installed {dist.name} {version}"
        )
        python = dist.metadata.get("Requires-Python")
        assert not python or SpecifierSet(python).contains(here, prereleases=True), (
            f"{dist.name} {version} requires Python {python}, this is {here}"
        )
        out[name] = dist
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for line in dist.requires or ():
                dep = Requirement(line)
                if dep.marker is None or dep.marker.evaluate({"extra": extra}):
                    todo.append((dep, f"{dist.name} {version}" + (f"[{extra}]" if extra else "")))
    return out


def _files(dist: metadata.Distribution) -> list[tuple[str, ...]]:
    """A distribution's files inside its site-packages folder, as path parts (RECORD,
    else its metadata folder and the ``top_level.txt`` packages and modules)."""
    record = dist.read_text("RECORD")
    if record is not None:  # read as text: ~100k PackagePaths take seconds
        parts = [tuple(row[0].split("/")) for row in csv.reader(record.splitlines()) if row]
    elif dist.files is not None:  # installed-files.txt
        parts = [PurePosixPath(f.as_posix()).parts for f in dist.files]
    if record is not None or dist.files is not None:
        return [p for p in parts if p and p[0] != ".."]
    base = Path(str(dist.locate_file("")))
    meta = Path(str(dist._path))  # type: ignore[attr-defined]  # no RECORD: rare
    out = [meta.relative_to(base).parts]
    for top in (dist.read_text("top_level.txt") or "").split():
        out += [(c.name,) for c in base.glob(f"{top}*") if c.name.split(".")[0] == top]
    return out


def link_farm(dists: Iterable[metadata.Distribution], farm: Path) -> None:
    """Symlinks in ``farm`` to the distributions' files: a folder wholesale where no
    other installed distribution has a file under it, else a real folder (a namespace
    package such as ``google``, or ``__pycache__``) holding links to their parts only."""
    dists = list(dists)
    keep = {canonicalize_name(d.metadata["Name"]) for d in dists}
    foreign: set[tuple[str, tuple[str, ...]]] = set()  # (site dir, folder) others use
    for d in metadata.distributions():
        if canonicalize_name(d.metadata["Name"]) in keep:
            continue
        base = str(d.locate_file(""))
        for f in _files(d):
            foreign.update((base, f[:i]) for i in range(1, len(f)))
    farm.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        base = Path(str(dist.locate_file("")))
        for f in _files(dist):
            # the shallowest prefix no foreign file lives under
            part = next(f[:i] for i in range(1, len(f) + 1) if (str(base), f[:i]) not in foreign)
            target, link = base.joinpath(*part), farm.joinpath(*part)
            if os.path.lexists(link) or not os.path.lexists(target):
                continue  # shared by two closure distributions, or listed but absent
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)


def fresh_venv(venv: Path, requirements: Iterable[str], env: Mapping[str, str]) -> Path:
    """A new venv (no system site packages, no pip) where exactly the closure of
    ``requirements`` is importable; returns its interpreter."""
    dists = closure(requirements)
    # the base interpreter: a venv made from inside this one needs nothing of it
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=dict(env)
    )
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        env=dict(env),
    ).stdout.strip()
    farm = venv / "closure"
    link_farm(dists.values(), farm)
    # addsitedir, not a bare path: .pth files of the closure's own run as installed
    (Path(site) / "closure.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    return py
