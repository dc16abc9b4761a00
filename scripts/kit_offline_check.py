"""Build a kit, install it with no network, score the TCGA example from it, and tamper with it.

The record behind README "Deploying offline" (written to docs/kit-offline-run.json) and the
body of the opt-in test in tests/test_kit.py. Needs the package index (phase one), `unshare`
with user namespaces (phase two runs in a network namespace with no interfaces) and a
`python3.X` for the installed Python version.

    python scripts/kit_offline_check.py --work /tmp/kit-check --out docs/kit-offline-run.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_NETWORK_PROBE = (
    "import socket\n"
    "try:\n"
    "    socket.create_connection(('pypi.org', 443), timeout=5)\n"
    "except OSError as exc:\n"
    "    print('no network:', exc)\n"
    "else:\n"
    "    raise SystemExit('network reachable')\n"
)


def offline(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run `command` in a new network namespace (no interfaces up), clean environment."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        ["unshare", "-rn", *command], cwd=cwd, env=env, capture_output=True, text=True
    )


def timed(step: dict, name: str, result: subprocess.CompletedProcess, started: float) -> None:
    step[name] = {
        "exit_code": result.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "output_tail": (result.stdout + result.stderr).strip().splitlines()[-3:],
    }


def offline_check(work: Path, pythons: str, system_python: str) -> dict:
    """Every step's exit code, time and last lines, plus the kit's size and file count."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    kit, venv = work / "kit", work / "env"
    record: dict = {"machine": platform.platform(), "python_installed": system_python}
    cli = [sys.executable, "-c", "from unicure_rt.cli.app import main; main()"]
    build = cli + ["kit", "--out", str(kit), "--python", pythons]
    record["build_command"] = f"unicure-rt kit --out KIT --python {pythons}"
    started = time.perf_counter()
    result = subprocess.run(build, cwd=REPO, capture_output=True, text=True)
    timed(record, "build", result, started)
    if result.returncode != 0:
        return record
    files = [p for p in kit.rglob("*") if p.is_file()]
    record["kit_files"] = len(files)
    record["kit_bytes"] = sum(p.stat().st_size for p in files)
    record["kit_wheel_bytes"] = sum(p.stat().st_size for p in (kit / "wheels").iterdir())
    started = time.perf_counter()
    timed(
        record, "no_network_probe", offline([system_python, "-c", NO_NETWORK_PROBE], work), started
    )
    started = time.perf_counter()
    install = [
        "sh",
        "-c",
        f"PYTHON={system_python} sh {kit}/install.sh {venv}",
    ]
    timed(record, "install_offline", offline(install, work), started)
    score = [str(venv / "bin" / "unicure-rt"), "score", str(REPO / "examples" / "tcga_brca.h5ad")]
    score += ["--normal-where", "condition=normal", "--out", str(work / "scored")]
    started = time.perf_counter()
    timed(record, "score_offline", offline(score, work), started)
    record["installed_package"] = offline(
        [str(venv / "bin" / "python"), "-c", "import unicure_rt; print(unicure_rt.__file__)"], work
    ).stdout.strip()
    info = [str(venv / "bin" / "unicure-rt"), "info", str(kit / "bundles" / "default"), "--json"]
    started = time.perf_counter()
    timed(record, "bundle_info_offline", offline(info, work), started)
    wheel = next((kit / "wheels").glob("numpy-*.whl"))
    original = wheel.read_bytes()
    wheel.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    started = time.perf_counter()
    verify = [str(venv / "bin" / "unicure-rt"), "kit", "verify", str(kit)]
    timed(record, "verify_tampered", offline(verify, work), started)
    started = time.perf_counter()
    reinstall = ["sh", "-c", f"PYTHON={system_python} sh {kit}/install.sh {work / 'env2'}"]
    timed(record, "install_tampered", offline(reinstall, work), started)
    record["tampered_install_created_venv"] = (work / "env2").exists()
    wheel.write_bytes(original)
    started = time.perf_counter()
    timed(record, "verify_restored", offline(verify, work), started)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (replaced)")
    parser.add_argument("--out", type=Path, help="JSON record to write")
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    parser.add_argument(
        "--system-python", default=f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    args = parser.parse_args()
    system_python = shutil.which(args.system_python, path="/usr/bin:/bin") or args.system_python
    record = offline_check(args.work, args.python, system_python)
    text = json.dumps(record, indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
