"""Start-up (issue 22): `unicure-rt --help`, `unicure-rt score --help` and the start of `score`.

Every measurement is a fresh process, `--repeats` times, the kinds in turn (so that load from
other jobs falls on each alike):
- `unicure-rt --help` and `unicure-rt score --help`: the console script's wall time, interpreter
  start included;
- `benchmarks/startup_probe.py`: the start of `unicure-rt score` up to its first work on the
  patient file (import of the command line, then of what `score` imports when it runs, the
  bundled model loaded and verified, its drug library, the two ONNX Runtime sessions), with the
  time of each step;
and one `python -X importtime` of `--help` and of score's imports, whose largest imports the
section lists. With `--baseline COMMIT` every measurement also runs on that commit's package
(extracted with `git archive` into a temporary folder), in turn with this tree's. Writes
`benchmarks/sections/startup.md` and `.json` with the CPU model and SIMD flags and the load
average before and after.

Usage: python benchmarks/startup.py [--repeats 10] [--baseline COMMIT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH, REPO, child_json, cpu_info, load_average, timed_command
from report import write_section

PROBE_STEPS = {
    "import_cli_s": "import `unicure_rt.cli.app`",
    "import_score_s": "import of what `score` runs (`unicure_rt.scoring`, `patients`, ...)",
    "load_bundle_s": "`load_bundle` (sha256 of every file)",
    "load_library_s": "drug library",
    "create_sessions_s": "two ONNX Runtime sessions",
    "in_process_total_s": "in-process total",
}
HELP_CODE = (
    "import sys; sys.argv = ['unicure-rt', '--help']\n"
    "from unicure_rt.cli.app import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
)
SCORE_IMPORTS_CODE = (
    "import unicure_rt.cli.app, unicure_rt.scoring.combinations, unicure_rt.patients.load, "
    "unicure_rt.patients.normals, unicure_rt.runtime.sessions, unicure_rt.scoring.pipeline"
)


def tree_env(tree: Path) -> dict:
    """The environment that runs `tree`'s package (its folder first on the import path)."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def extract_package(commit: str, into: Path) -> None:
    """`unicure_rt/` of `commit` (bundled model included) into the folder `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "unicure_rt"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def short_commit(ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def measure_once(exe: str, env: dict) -> dict:
    found = {}
    for name, args in (("help", ["--help"]), ("score_help", ["score", "--help"])):
        done = timed_command([exe, *args], env=env)
        if done["returncode"] != 0:
            raise RuntimeError(f"unicure-rt {' '.join(args)} failed:\n{done['stderr_tail']}")
        found[name] = done["wall_s"]
    t0 = time.perf_counter()
    probe = child_json([str(BENCH / "startup_probe.py")], env=env)
    if probe["package"] != env["PYTHONPATH"] + "/unicure_rt":
        raise RuntimeError(f"the probe ran {probe['package']}, not {env['PYTHONPATH']}")
    found["score_start"] = time.perf_counter() - t0
    return {**found, **{key: probe[key] for key in PROBE_STEPS}}


def largest_imports(code: str, env: dict, n: int = 8) -> list[tuple[str, float]]:
    """The `n` packages (other than unicure_rt) whose import by `code` took longest: cumulative
    ms of each package's outermost import, by `python -X importtime`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    longest: dict[str, float] = {}
    for cumulative, name in re.findall(
        r"^import time:\s+\d+ \|\s+(\d+) \| +(\S+)$", done.stderr, re.M
    ):
        package = name.split(".")[0]
        if package != "unicure_rt":
            longest[package] = max(longest.get(package, 0.0), int(cumulative) / 1000)
    return sorted(longest.items(), key=lambda item: -item[1])[:n]


def stats(samples: list[float]) -> dict:
    return {"min_s": min(samples), "median_s": statistics.median(samples), "samples_s": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--baseline", metavar="COMMIT", help="also measure this commit's package")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as baseline_tree:
        trees = {"this tree": REPO}
        commits = {"this tree": short_commit("HEAD")}
        if args.baseline:
            extract_package(args.baseline, Path(baseline_tree))
            trees["baseline"] = Path(baseline_tree)
            commits["baseline"] = short_commit(args.baseline)
        result = measure(trees, commits, args.repeats)
    result["command"] = "python benchmarks/startup.py " + " ".join(sys.argv[1:])
    (BENCH / "sections" / "startup.json").write_text(json.dumps(result, indent=1) + "\n")
    write_section("startup", section(result))
    print(section(result))


def measure(trees: dict[str, Path], commits: dict[str, str], repeats: int) -> dict:
    exe = shutil.which("unicure-rt") or str(Path(sys.executable).parent / "unicure-rt")
    load_before = load_average()
    rounds: dict[str, list[dict]] = {name: [] for name in trees}
    for round_ in range(repeats):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            rounds[name].append(measure_once(exe, tree_env(trees[name])))
            found = rounds[name][-1]
            print(
                f"[bench] {name}: --help {found['help']:.2f} s, score --help "
                f"{found['score_help']:.2f} s, score start {found['score_start']:.2f} s",
                flush=True,
            )
    load_after = load_average()
    env = tree_env(REPO)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "commits": commits,
        "repeats": repeats,
        "results": {
            name: {key: stats([r[key] for r in runs]) for key in runs[0]}
            for name, runs in rounds.items()
        },
        "largest_imports_ms": {
            "--help": largest_imports(HELP_CODE, env),
            "score": largest_imports(SCORE_IMPORTS_CODE, env),
        },
    }


def section(result: dict) -> str:
    cpu = result["cpu"]
    names = list(result["results"])
    header = " | ".join(f"{name} ({result['commits'][name]}) min s | median s" for name in names)
    lines = [
        "## Start-up (issue 22: `--help` and `score` in a fresh process)",
        "",
        f"`{result['command']}` ({result['date']}; {cpu['model']}, {cpu['logical_cpus']} "
        f"logical CPUs, SIMD {', '.join(cpu['simd'])}). Each figure is a fresh process, "
        f"{result['repeats']} times, the kinds in turn; min and median. The machine was shared "
        "with other jobs: 1-, 5- and 15-minute load average (`uptime`) "
        f"{result['load_average_before']} before and {result['load_average_after']} after, on "
        f"{cpu['logical_cpus']} CPUs, so these are upper bounds of an idle machine's. Target: "
        "`--help` and the start of `score` <= 1 s in a fresh process on an idle machine.",
        "",
        f"| measurement | {header} |",
        "| --- |" + " ---: | ---: |" * len(names),
    ]
    rows = {
        "help": "`unicure-rt --help`, process wall",
        "score_help": "`unicure-rt score --help`, process wall",
        "score_start": "start of `unicure-rt score`, process wall (`startup_probe.py`)",
        **{key: f"- {label}" for key, label in PROBE_STEPS.items()},
    }
    for key, label in rows.items():
        cells = [
            f"{result['results'][name][key]['min_s']:.2f} | "
            f"{result['results'][name][key]['median_s']:.2f}"
            for name in names
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines.append("")
    for what, found in result["largest_imports_ms"].items():
        shown = ", ".join(f"{name} {ms:.0f}" for name, ms in found)
        lines.append(
            f"Largest imports of {what} (`python -X importtime`, one run, cumulative ms): {shown}."
        )
    lines += [
        "",
        "The command modules import their logic inside the command functions (see "
        "`unicure_rt/cli/__init__.py`), so `--help` loads neither numpy, pandas, scipy nor ONNX "
        "Runtime (`tests/test_startup.py`); `score` imports what it runs when it runs.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
