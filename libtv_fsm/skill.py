"""`python -m libtv_fsm.skill build OUT`: assemble the skill folder that runs on a bare python3 (SKILL.md, scripts, package, vendor/)."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import attr

PROJECT = "libtv-fsm"
PACKAGE = "libtv_fsm"
SCRIPTS = ("libtv_video.py", "feishu_send_video.py", "_skill_folder.py")
MANIFEST = "VENDORED.txt"
# The Python minor versions a folder may claim (3.9 is the project's floor).
MINORS = tuple(range(9, 15))
# Runtime dependencies the code runs without: left out when their installed build is not pure
# Python. requests only uses charset_normalizer to guess the encoding of a body that names none;
# without it `Response.apparent_encoding` is UTF-8, and every body we read is JSON in UTF-8.
OPTIONAL = {"charset-normalizer": "requests decodes undeclared text as UTF-8 without it"}
_COMPILED = (".so", ".pyd", ".dylib", ".dll")
# Installer bookkeeping: meaningless (or wrong) once the files are copied elsewhere.
_DIST_INFO_SKIP = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
_LICENCE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)


class BuildError(Exception):
    """The folder cannot be built as asked; the message says why and what to do."""


@attr.frozen
class Vendored:
    """One distribution copied into vendor/."""

    name: str
    version: str
    files: int
    licences: Tuple[str, ...]


@attr.frozen
class Report:
    """What a build produced."""

    folder: Path
    bytes: int
    files: int
    min_python: Tuple[int, int]
    vendored: Tuple[Vendored, ...]
    left_out: Tuple[str, ...]


def canonical(name: str) -> str:
    """PEP 503 name: `Requests_Toolbelt` and `requests-toolbelt` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging() -> Any:
    """`packaging` (or pip's copy of it): requirement, marker and specifier parsing done right."""
    try:
        import packaging.requirements as requirements
        import packaging.specifiers as specifiers
    except ImportError:
        try:
            from pip._vendor.packaging import requirements, specifiers  # type: ignore[no-redef]
        except ImportError:
            raise BuildError("Building needs the `packaging` library: pip install packaging") from None
    return requirements, specifiers


def _environments(minor: int) -> Iterable[Dict[str, str]]:
    # A dependency counts if any supported platform needs it: the folder is copied between machines.
    for platform, os_name in (("linux", "posix"), ("darwin", "posix"), ("win32", "nt")):
        yield {"python_version": f"3.{minor}", "python_full_version": f"3.{minor}.0", "sys_platform": platform,
               "os_name": os_name, "platform_system": {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[platform],
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def needed_on(requirement: Any) -> Set[int]:
    """The Python minors on which a requirement applies (never for an extra we do not ask for)."""
    if requirement.marker is None:
        return set(MINORS)
    return {m for m in MINORS if any(requirement.marker.evaluate(env) for env in _environments(m))}


def _requires_python(dist: metadata.Distribution) -> Optional[str]:
    """The distribution's Requires-Python, or None (its metadata is an email Message; the typed protocol hides .get)."""
    value = dist.metadata.get("Requires-Python")  # type: ignore[attr-defined]
    return str(value) if value else None


def _distribution(name: str) -> Optional[metadata.Distribution]:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _python_floor(spec: Optional[str], specifiers: Any, what: str) -> int:
    """The lowest supported minor a Requires-Python allows."""
    if not spec:
        return MINORS[0]
    allowed = specifiers.SpecifierSet(spec)
    for minor in MINORS:
        if allowed.contains(f"3.{minor}.0") or allowed.contains(f"3.{minor}.99"):
            return minor
    raise BuildError(f"{what} requires Python {spec}, which no supported Python (3.9 to 3.{MINORS[-1]}) satisfies")


@attr.define
class Plan:
    """The runtime distributions to vendor, and what the folder's Python must be."""

    dists: Dict[str, metadata.Distribution] = attr.Factory(dict)
    floor: int = MINORS[0]
    left_out: List[str] = attr.Factory(list)
    why_floor: List[str] = attr.Factory(list)

    def raise_floor(self, minor: int, why: str) -> None:
        if minor > MINORS[0]:
            self.why_floor.append(why)
        self.floor = max(self.floor, minor)


def project_requirements(root: Path) -> Tuple[List[str], Optional[str]]:
    """The project's runtime dependencies and Requires-Python, from pyproject.toml (the source of truth;
    an installed copy of the metadata can be stale), else from the installed distribution."""
    toml: Any = None
    try:
        import tomllib as toml
    except ImportError:  # Python < 3.11
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ImportError:
            pass
    pyproject = root / "pyproject.toml"
    if toml is not None and pyproject.is_file():
        project = toml.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        return list(project.get("dependencies", [])), project.get("requires-python")
    top = _distribution(PROJECT)
    if top is None:
        raise BuildError(f"{PROJECT} is not installed and pyproject.toml cannot be read: run `pip install -e .`")
    return [r for r in top.requires or [] if "extra ==" not in r], _requires_python(top)


def plan(root: Path) -> Plan:
    """Walk the installed runtime dependencies of the project (extras excluded), for every supported Python."""
    requirements, specifiers = _packaging()
    queue, requires_python = project_requirements(root)
    result = Plan()
    result.raise_floor(_python_floor(requires_python, specifiers, PROJECT), f"{PROJECT} requires Python {requires_python}")
    seen: Set[str] = {canonical(PROJECT)}
    while queue:
        req = requirements.Requirement(queue.pop(0))
        name = canonical(req.name)
        minors = needed_on(req)
        if not minors or name in seen:
            continue
        dist = _distribution(req.name)
        if dist is None:
            if sys.version_info[:2] in {(3, m) for m in minors}:
                raise BuildError(f"{req.name} is needed at run time but not installed: pip install '{req}'")
            # Needed only on other Pythons (say exceptiongroup before 3.11): the folder cannot serve those.
            result.raise_floor(max(minors) + 1, f"{req.name} ({req.marker}) is not installed")
            continue
        seen.add(name)
        if not is_pure(dist):
            if name in OPTIONAL:
                result.left_out.append(f"{name} {dist.version}: not a pure-Python build here; {OPTIONAL[name]}")
                continue
            raise BuildError(f"{name} {dist.version} is installed as a compiled (not pure-Python) build; "
                             f"install its py3-none-any wheel to vendor it")
        result.dists[name] = dist
        result.raise_floor(_python_floor(_requires_python(dist), specifiers, f"{name} {dist.version}"),
                           f"{name} {dist.version} requires Python {_requires_python(dist) or 'any'}")
        queue.extend(dist.requires or [])
    return result


def is_pure(dist: metadata.Distribution) -> bool:
    """A wheel that says Root-Is-Purelib and carries no compiled extension."""
    wheel = dist.read_text("WHEEL") or ""
    if not re.search(r"^Root-Is-Purelib:\s*true\s*$", wheel, re.IGNORECASE | re.MULTILINE):
        return False
    return not any(str(f).endswith(_COMPILED) for f in dist.files or ())


def runtime_files(dist: metadata.Distribution) -> List[PurePosixPath]:
    """The files an installed distribution put in site-packages, without byte code or installer records."""
    if dist.files is None:
        raise BuildError(f"{dist.metadata['Name']} has no RECORD; reinstall it with pip")
    picked = []
    for entry in dist.files:
        path = PurePosixPath(str(entry).replace("\\", "/"))
        if path.parts[0] == ".." or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue  # console scripts live outside site-packages; byte code is rebuilt on use
        if path.parts[0].endswith(".dist-info") and path.name in _DIST_INFO_SKIP:
            continue
        picked.append(path)
    return picked


def vendor(dists: Dict[str, metadata.Distribution], target: Path) -> List[Vendored]:
    """Copy each distribution's files (its .dist-info with its licences included) into ``target``."""
    owners: Dict[PurePosixPath, str] = {}
    done = []
    for name in sorted(dists):
        dist = dists[name]
        files = runtime_files(dist)
        for path in files:
            if path in owners:
                raise BuildError(f"{name} and {owners[path]} both install {path}")
            owners[path] = name
            source = Path(str(dist.locate_file(str(path))))
            dest = target.joinpath(*path.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        licences = tuple(str(p) for p in files if p.parts[0].endswith(".dist-info") and _LICENCE.search(p.name))
        done.append(Vendored(name, dist.version, len(files), licences))
    return done


def manifest(vendored: Sequence[Vendored], chosen: Plan) -> str:
    """vendor/VENDORED.txt: what is in the folder, its licences, and the Python it needs (read by the scripts)."""
    lines = [
        f"# Built by `python -m {PACKAGE}.skill build` from the distributions installed with Python "
        f"{sys.version.split()[0]}. Each one's licence is in its .dist-info folder.",
        f"requires-python >=3.{chosen.floor}",
    ]
    lines += [f"{v.name}=={v.version}  licence: {', '.join(v.licences) or 'see METADATA'}" for v in vendored]
    lines += [f"# left out: {why}" for why in chosen.left_out]
    lines += [f"# python floor: {why}" for why in chosen.why_floor]
    return "\n".join(lines) + "\n"


def source_root() -> Path:
    """The checkout this package runs from (SKILL.md and scripts/ live beside the package)."""
    root = Path(__file__).resolve().parent.parent
    missing = [p for p in ["SKILL.md", *(f"scripts/{s}" for s in SCRIPTS)] if not (root / p).is_file()]
    if missing:
        raise BuildError(f"Build from a source checkout: {', '.join(missing)} not found beside {root / PACKAGE}")
    return root


def _copy_package(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def folder_size(folder: Path) -> Tuple[int, int]:
    """(bytes, files) under ``folder``."""
    total = count = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            total += os.path.getsize(os.path.join(dirpath, name))
            count += 1
    return total, count


def build(out: Path, force: bool = False) -> Report:
    """Assemble the skill folder at ``out`` (all or nothing: built beside it, then moved into place)."""
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise BuildError(f"{out} exists and is not empty; pass --force to replace it")
    root = source_root()
    chosen = plan(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=str(out.parent)))
    try:
        shutil.copyfile(root / "SKILL.md", staging / "SKILL.md")
        for extra in ("LICENSE", "CHANGELOG.md"):
            if (root / extra).is_file():
                shutil.copyfile(root / extra, staging / extra)
        (staging / "scripts").mkdir()
        for script in SCRIPTS:
            shutil.copy2(root / "scripts" / script, staging / "scripts" / script)
        _copy_package(root / PACKAGE, staging / PACKAGE)
        vendored = vendor(chosen.dists, staging / "vendor")
        (staging / "vendor" / MANIFEST).write_text(manifest(vendored, chosen), encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the folder from the runtime's user
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size, count = folder_size(out)
    return Report(out, size, count, (3, chosen.floor), tuple(vendored), tuple(chosen.left_out))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.skill",
                                     description="Build the skill folder: SKILL.md, scripts/, the package and "
                                                 "vendor/ (every runtime dependency, pure Python).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="assemble the folder at OUT")
    p.add_argument("out", metavar="OUT", type=Path)
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        report = build(args.out, force=args.force)
    except BuildError as err:
        print(f"❌ {err}", flush=True)
        return 1
    print(f"✅ Skill folder: {report.folder} ({report.bytes / 1048576:.1f} MB, {report.files} files)")
    print(f"Runs on: python3 >= {report.min_python[0]}.{report.min_python[1]} with nothing installed")
    print("Vendored: " + ", ".join(f"{v.name} {v.version}" for v in report.vendored))
    for why in report.left_out:
        print(f"Left out: {why}")
    print(f"Try it: python3 {report.folder / 'scripts' / SCRIPTS[0]} check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
