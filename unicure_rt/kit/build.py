"""`unicure-rt kit`: everything a clinic machine with no network needs, in one verified folder.

Phase one, on a connected machine: build the unicure-rt wheel from this source tree, download
the wheels of the clinic side's dependencies for each target platform and Python version
(`pip download --only-binary=:all:`), copy the bundles to ship, write an install script that
uses only the kit (`pip install --no-index --find-links`), a CycloneDX SBOM, `run.json`, and a
MANIFEST with the sha256 of every file. Phase two, offline: `install.sh` checks the MANIFEST
with the stand-alone copy of `unicure_rt.kit.verify`, then installs. The normal references and
the gene table travel inside the unicure-rt wheel (package data), which is checked here.
"""

from __future__ import annotations

import email.parser
import json
import platform
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from unicure_rt.bundle.load import DEFAULT_BUNDLE, creation_time, load_bundle
from unicure_rt.errors import UserError
from unicure_rt.kit import verify as kit_verify
from unicure_rt.outputs import staged_output_dir

SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# pip platform tags (newest first) and the environment markers of each target platform: the
# markers pick onnxruntime-gpu or onnxruntime exactly as pip would on that machine.
PLATFORMS = {
    "linux-x86_64": (
        ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
        {"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux"},
    ),
    "linux-aarch64": (
        ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
        {"sys_platform": "linux", "platform_machine": "aarch64", "platform_system": "Linux"},
    ),
}
SOURCE_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = "install.sh"
VERIFY_SCRIPT = "verify_kit.py"
SBOM = "sbom.cdx.json"
REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class KitOptions:
    """What a kit holds: target platforms and Python versions, and the bundles to ship (none
    given = the bundled demo model)."""

    platforms: tuple[str, ...] = ("linux-x86_64",)
    pythons: tuple[str, ...] = SUPPORTED_PYTHONS
    bundles: tuple[Path, ...] = field(default_factory=tuple)


def check_options(options: KitOptions) -> None:
    """Refuse unknown platforms and Python versions before anything is downloaded."""
    unknown = [p for p in options.platforms if p not in PLATFORMS]
    if unknown or not options.platforms:
        raise UserError(
            f"Unknown kit platform {', '.join(unknown) or '(none given)'}: choose from "
            f"{', '.join(PLATFORMS)} (comma-separated, e.g. --platform linux-x86_64)."
        )
    bad = [v for v in options.pythons if v not in SUPPORTED_PYTHONS]
    if bad or not options.pythons:
        raise UserError(
            f"Python version {', '.join(bad) or '(none given)'} is not supported by unicure-rt: "
            f"choose from {', '.join(SUPPORTED_PYTHONS)} (comma-separated, e.g. --python 3.11)."
        )


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    return metadata.get_all("Requires-Dist") or []


def target_requirements(requirements: list[str], target: str, python: str) -> list[str]:
    """The base (no extra) requirements that apply on `target` with Python `python`, without
    their markers, so that `pip download` for another machine fetches what that machine needs."""
    from packaging.requirements import Requirement

    environment = {
        **PLATFORMS[target][1],
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "extra": "",
    }
    chosen = []
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            chosen.append(str(requirement))
    return chosen


def _run(command: list[str], what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-6:]
        raise UserError(
            f"{what} failed (exit {result.returncode}): {' / '.join(tail)}. Building a kit needs "
            "this machine to reach the package index (or a mirror configured for pip); check "
            "the network, then run `unicure-rt kit` again."
        )
    return result


def build_unicure_wheel(source: Path, wheels: Path) -> Path:
    """Build the unicure-rt wheel of `source` into `wheels` and check its package data."""
    if not (source / "pyproject.toml").is_file():
        raise UserError(
            f"unicure-rt is not installed from a source tree here ({source} has no "
            "pyproject.toml), so its wheel cannot be built. Run `unicure-rt kit` from a checkout "
            "of the repository installed with `pip install -e .`."
        )
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(wheels), str(source)],
        "Building the unicure-rt wheel",
    )
    built = sorted(wheels.glob("unicure_rt-*.whl"))
    check_package_data(built[0], source / "unicure_rt" / "data")
    return built[0]


def check_package_data(wheel: Path, data_dir: Path) -> None:
    """Refuse a wheel that lacks any file of the source's package data (gene table, normal
    references, the bundled model): the kit's install would fail on the clinic machine."""
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    root = data_dir.parent.parent
    missing = [
        path.relative_to(root).as_posix()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.relative_to(root).as_posix() not in inside
    ]
    if missing:
        raise UserError(
            f"The unicure-rt wheel {wheel.name} lacks package data ({', '.join(missing[:5])}): "
            "add their folders to [tool.setuptools.package-data] in pyproject.toml, then build "
            "the kit again."
        )


def download_dependencies(wheel: Path, wheels: Path, target: str, python: str) -> None:
    """`pip download` the binary wheels of `wheel`'s dependencies for one platform and Python."""
    tags, _markers = PLATFORMS[target]
    abi = "cp" + python.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    command += [arg for tag in tags for arg in ("--platform", tag)]
    command += ["--python-version", python, "--implementation", "cp"]
    command += ["--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(wheels)]
    command += target_requirements(wheel_requirements(wheel), target, python)
    _run(command, f"Downloading the dependencies for {target}, Python {python}")


def wheel_name_version(filename: str) -> tuple[str, str]:
    """'onnxruntime_gpu-1.31.1-cp312-...whl' -> ('onnxruntime-gpu', '1.31.1')."""
    name, version = filename.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def write_requirements(wheels: Path, out: Path) -> None:
    """A pinned, hashed requirements file of every wheel in the wheelhouse (the SBOM's input)."""
    hashes: dict[tuple[str, str], list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        hashes.setdefault(wheel_name_version(wheel.name), []).append(kit_verify.file_sha256(wheel))
    lines = [
        f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in digests)
        for (name, version), digests in sorted(hashes.items())
    ]
    out.write_text("\n".join(lines) + "\n")


def write_sbom(requirements: Path, source: Path, out: Path) -> None:
    """A CycloneDX SBOM (JSON) of every package in the wheelhouse, unicure-rt as the root."""
    try:
        import cyclonedx_py  # noqa: F401
    except ImportError:
        raise UserError(
            "Writing the kit's SBOM needs cyclonedx-bom on the building machine: "
            "`pip install '.[kit]'` in your unicure-rt clone (or `pip install cyclonedx-bom`), "
            "then run `unicure-rt kit` again."
        ) from None
    _run(
        [sys.executable, "-m", "cyclonedx_py", "requirements", str(requirements)]
        + ["--pyproject", str(source / "pyproject.toml"), "--output-reproducible"]
        + ["--of", "JSON", "-o", str(out)],
        "Writing the CycloneDX SBOM",
    )


def ship_bundles(bundles: tuple[Path, ...], out: Path) -> list[dict]:
    """Copy each bundle (verified first) to `out/<name>`; return their names and digests."""
    sources = bundles or (DEFAULT_BUNDLE,)
    names = ["default" if path == DEFAULT_BUNDLE else Path(path).name for path in sources]
    if len(set(names)) != len(names):
        raise UserError(
            f"Two bundles to ship share a folder name ({', '.join(names)}); each is copied to "
            "bundles/<folder name>. Rename one of the folders."
        )
    shipped = []
    for name, path in zip(names, sources, strict=True):
        bundle = load_bundle(path)
        shutil.copytree(bundle.path, out / name, ignore=shutil.ignore_patterns("__pycache__"))
        shipped.append(
            {
                "name": name,
                "path": f"bundles/{name}",
                "manifest_sha256": bundle.sha256,
                "files": bundle.manifest["files"],
            }
        )
    return shipped


INSTALL_TEMPLATE = """#!/bin/sh
# Install unicure-rt {version} from this kit alone, with no network: check every file against
# the MANIFEST, create a virtual environment, install from the kit's wheels only, and check
# each shipped bundle. Usage: sh install.sh [TARGET_VENV]   (PYTHON=python3.X to choose Python)
set -eu
KIT=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
TARGET=${{1:-unicure-rt-env}}
PYTHON=${{PYTHON:-python3}}
"$PYTHON" "$KIT/{verify}" "$KIT"
"$PYTHON" -m venv "$TARGET"
"$TARGET/bin/python" -m pip install --isolated --no-index --find-links "$KIT/wheels" \\
    --disable-pip-version-check -q "unicure-rt=={version}"
for bundle in "$KIT"/bundles/*/; do
    "$TARGET/bin/unicure-rt" info "$bundle" --json > /dev/null
done
echo "unicure-rt {version} installed in $TARGET; bundles in $KIT/bundles verified."
echo "Run: $TARGET/bin/unicure-rt score PATIENTS.h5ad --normal-where condition=normal"
"""


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_kit(out: Path, options: KitOptions, *, force: bool = False) -> dict:
    """Write the kit folder `out` (atomically) and return its run.json record."""
    from unicure_rt import __version__

    check_options(options)
    started = time.perf_counter()
    with staged_output_dir(out, force=force) as staging:
        (staging / "bundles").mkdir()
        bundles = ship_bundles(options.bundles, staging / "bundles")
        wheels = staging / "wheels"
        wheels.mkdir()
        wheel = build_unicure_wheel(SOURCE_ROOT, wheels)
        for target in options.platforms:
            for python in options.pythons:
                download_dependencies(wheel, wheels, target, python)
        write_requirements(wheels, staging / REQUIREMENTS)
        write_sbom(staging / REQUIREMENTS, SOURCE_ROOT, staging / SBOM)
        shutil.copyfile(kit_verify.__file__, staging / VERIFY_SCRIPT)
        install = staging / INSTALL_SCRIPT
        install.write_text(INSTALL_TEMPLATE.format(version=__version__, verify=VERIFY_SCRIPT))
        install.chmod(0o755)
        record = {
            "command": "kit",
            "unicure_rt_version": __version__,
            "created": creation_time(),
            "platforms": list(options.platforms),
            "pythons": list(options.pythons),
            "built_on": {"python": platform.python_version(), "platform": platform.platform()},
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
            "bundles": bundles,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        (staging / "run.json").write_text(json.dumps(record, indent=1) + "\n")
        record["manifest_sha256"] = kit_verify.write_kit_manifest(staging)
        record["size_bytes"] = folder_size(staging)
    return record
