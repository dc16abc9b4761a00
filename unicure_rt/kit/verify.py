"""The kit's MANIFEST: the sha256 of every file of an offline kit, written and checked.

Standard library only: `unicure-rt kit` copies this file into every kit as `verify_kit.py`, so
that a clinic machine checks the kit before anything from it is installed (`python3
verify_kit.py KIT`; `install.sh` runs it first). `unicure-rt kit verify` runs the same code.
MANIFEST lines are `<sha256>  <path>` (the `sha256sum` format, so `sha256sum -c MANIFEST` in the
kit folder checks it too).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

try:  # inside unicure-rt the CLI turns this into exit code 2; stand-alone it is a plain error
    from unicure_rt.errors import UserError as _ErrorBase
except ImportError:  # run as verify_kit.py before unicure-rt is installed
    _ErrorBase = Exception

MANIFEST_NAME = "MANIFEST"
EXIT_REFUSED = 2


class KitVerificationError(_ErrorBase):
    """A kit whose files do not match its MANIFEST (changed, missing or extra files)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kit_files(kit: Path) -> list[str]:
    """Every file below `kit` except the MANIFEST, as sorted POSIX paths."""
    found = []
    for root, dirs, files in os.walk(kit):
        dirs.sort()
        for name in files:
            rel = (Path(root) / name).relative_to(kit).as_posix()
            if rel != MANIFEST_NAME:
                found.append(rel)
    return sorted(found)


def write_kit_manifest(kit: Path) -> str:
    """Write `kit/MANIFEST` (one line per file) and return the MANIFEST's own sha256."""
    kit = Path(kit)
    lines = [f"{file_sha256(kit / rel)}  {rel}\n" for rel in kit_files(kit)]
    (kit / MANIFEST_NAME).write_text("".join(lines), encoding="utf-8")
    return file_sha256(kit / MANIFEST_NAME)


def _read_manifest(kit: Path) -> dict[str, str]:
    manifest = kit / MANIFEST_NAME
    if not manifest.is_file():
        raise KitVerificationError(
            f"'{kit}' is not an unicure-rt kit: it has no {MANIFEST_NAME}. Point to the folder "
            "written by `unicure-rt kit --out KIT`, copied whole."
        )
    recorded: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise KitVerificationError(
                f"{manifest} line {number} is not '<sha256>  <relative path>': the MANIFEST was "
                "damaged or edited. Copy the kit again from the machine that built it."
            )
        recorded[rel] = digest
    return recorded


def verify_kit(kit: Path | str, manifest_sha256: str | None = None) -> str:
    """Check every file of `kit` against its MANIFEST; return the MANIFEST's sha256.

    Refuses (naming the files) a changed, missing or extra file, and, with `manifest_sha256`
    (the digest the building machine printed, passed on by a separate channel), a MANIFEST that
    is not the one that was built.
    """
    kit = Path(kit)
    if not kit.is_dir():
        raise KitVerificationError(
            f"Kit folder '{kit}' does not exist. Pass the folder written by `unicure-rt kit`."
        )
    recorded = _read_manifest(kit)
    actual_manifest = file_sha256(kit / MANIFEST_NAME)
    if manifest_sha256 is not None and manifest_sha256.strip().lower() != actual_manifest:
        raise KitVerificationError(
            f"The MANIFEST of '{kit}' has sha256 {actual_manifest}, not the expected "
            f"{manifest_sha256.strip()}: this is not the kit that was built (or the digest was "
            "mistyped). Copy the kit again and compare the digest printed when it was built."
        )
    present = kit_files(kit)
    missing = sorted(set(recorded) - set(present))
    extra = sorted(set(present) - set(recorded))
    changed = [
        rel
        for rel in sorted(set(recorded) & set(present))
        if file_sha256(kit / rel) != recorded[rel]
    ]
    if changed or missing or extra:
        problems = []
        for label, names in (
            ("changed", changed),
            ("missing", missing),
            ("not in MANIFEST", extra),
        ):
            if names:
                shown = ", ".join(names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                problems.append(f"{label}: {shown}")
        raise KitVerificationError(
            f"Kit '{kit}' does not match its MANIFEST ({'; '.join(problems)}). Nothing was "
            "installed. The kit was damaged in transfer or altered: copy it again from the machine "
            "that built it (or rebuild it with `unicure-rt kit`), and do not install it as it is."
        )
    return actual_manifest


def main(argv: list[str] | None = None) -> int:
    """`python3 verify_kit.py KIT [--manifest-sha256 HEX]`: exit 0 if every hash matches, else 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    expected = None
    if "--manifest-sha256" in args:
        at = args.index("--manifest-sha256")
        if at + 1 >= len(args):
            print("Error: --manifest-sha256 needs the 64-hex-digit digest.", file=sys.stderr)
            return EXIT_REFUSED
        expected = args[at + 1]
        del args[at : at + 2]
    if len(args) > 1:
        print("Usage: python3 verify_kit.py [KIT] [--manifest-sha256 HEX]", file=sys.stderr)
        return EXIT_REFUSED
    kit = Path(args[0]) if args else Path(__file__).resolve().parent
    try:
        digest = verify_kit(kit, expected)
    except KitVerificationError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"Kit {kit}: every file matches its MANIFEST (MANIFEST sha256 {digest}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
