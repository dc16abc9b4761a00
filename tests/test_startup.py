"""Start-up: the command line's help loads none of the heavy packages.

Every command module is imported when `unicure-rt` starts, whatever the command; each imports
its heavy logic inside the command function, so help (and the start of every command) does not
wait for packages it does not use. Each check runs in a fresh interpreter, where `sys.modules`
holds only what that start imported. The time it takes is measured by `benchmarks/startup.py`.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("onnxruntime", "anndata", "rdkit", "scipy", "sklearn", "matplotlib", "torch")

# runs `unicure-rt ARGS` as its console script does (the `main` of pyproject's
# [project.scripts]), then prints which of HEAVY it imported as the last line of stdout
RUN_MAIN = """
import sys
from unicure_rt.cli.app import main
sys.argv = ["unicure-rt", *{args!r}]
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
"""

# every command's and group's --help, in one interpreter
WALK_HELP = """
import typer
from typer.testing import CliRunner
from unicure_rt.cli.app import app

def paths(group, prefix=()):
    yield prefix
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from paths(command, (*prefix, name))
        else:
            yield (*prefix, name)

walked = list(paths(typer.main.get_command(app)))
assert len(walked) > 10, walked
for path in walked:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
"""

REPORT = """
import json
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_imported(code: str) -> list[str]:
    """The packages of HEAVY that `code`, run in a fresh interpreter, imported."""
    probe = "import sys\n" + code + REPORT.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_command_line_loads_no_heavy_package():
    assert heavy_imported("import unicure_rt.cli.app") == []


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"]], ids=" ".join)
def test_help_loads_no_heavy_package(args):
    assert heavy_imported(RUN_MAIN.format(args=args)) == []


def test_no_command_help_loads_a_heavy_package():
    assert heavy_imported(WALK_HELP) == []


def test_the_probe_sees_a_heavy_import():
    """The check itself works: a package the code does import is reported."""
    assert heavy_imported("import unicure_rt.runtime.sessions") == ["onnxruntime"]
