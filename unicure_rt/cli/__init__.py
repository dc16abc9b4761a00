"""The `unicure-rt` command line (Typer); the logic lives in the modules it calls.

`unicure-rt` imports every command module when it starts, whatever the command, so each imports
its logic (numpy, pandas, ONNX Runtime, scipy, ...) inside its command functions: `--help` and
every command start without loading what they do not use (`tests/test_startup.py`)."""
