"""The offline kit: MANIFEST, verify (command and stand-alone script), tampering, target
requirements, package data; the full build + offline install is opt-in (UNICURE_KIT_NETWORK=1)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unicure_rt.cli.app import app
from unicure_rt.errors import UserError
from unicure_rt.kit.build import (
    KitOptions,
    check_options,
    check_package_data,
    target_requirements,
    wheel_name_version,
)
from unicure_rt.kit.verify import KitVerificationError, verify_kit, write_kit_manifest

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture()
def fake_kit(tmp_path: Path) -> Path:
    """A kit folder laid out like a real one: a small wheelhouse, a bundle, the scripts."""
    kit = tmp_path / "kit"
    (kit / "wheels").mkdir(parents=True)
    (kit / "bundles" / "default").mkdir(parents=True)
    for name in (
        "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "rich-13.0.0-py3-none-any.whl",
    ):
        with zipfile.ZipFile(kit / "wheels" / name, "w") as archive:
            archive.writestr("payload.py", f"# {name}\n" * 200)
    (kit / "bundles" / "default" / "manifest.json").write_text('{"format_version": 1}\n')
    shutil.copyfile(REPO / "unicure_rt" / "kit" / "verify.py", kit / "verify_kit.py")
    (kit / "install.sh").write_text("#!/bin/sh\n")
    write_kit_manifest(kit)
    return kit


def flip_last_byte(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def test_manifest_lists_every_file_in_sha256sum_format(fake_kit: Path) -> None:
    lines = (fake_kit / "MANIFEST").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    files = {p.relative_to(fake_kit).as_posix() for p in fake_kit.rglob("*") if p.is_file()}
    assert set(listed) == files - {"MANIFEST"}
    for rel, digest in listed.items():
        assert digest == hashlib.sha256((fake_kit / rel).read_bytes()).hexdigest()
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "--quiet", "-c", "MANIFEST"], cwd=fake_kit)
        assert check.returncode == 0


def test_verify_passes_and_returns_the_manifest_digest(fake_kit: Path) -> None:
    expected = hashlib.sha256((fake_kit / "MANIFEST").read_bytes()).hexdigest()
    assert verify_kit(fake_kit) == expected
    assert verify_kit(fake_kit, expected.upper()) == expected


def test_tampered_wheel_is_refused_by_name(fake_kit: Path) -> None:
    wheel = next((fake_kit / "wheels").glob("numpy-*.whl"))
    flip_last_byte(wheel)
    with pytest.raises(KitVerificationError, match=r"changed: wheels/numpy-2\.0\.0") as info:
        verify_kit(fake_kit)
    assert isinstance(info.value, UserError)


def test_missing_extra_and_wrong_manifest_digest_are_refused(fake_kit: Path) -> None:
    (fake_kit / "bundles" / "default" / "manifest.json").unlink()
    (fake_kit / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(KitVerificationError) as info:
        verify_kit(fake_kit)
    assert "missing: bundles/default/manifest.json" in str(info.value)
    assert "not in MANIFEST: wheels/evil-1.0-py3-none-any.whl" in str(info.value)
    (fake_kit / "wheels" / "evil-1.0-py3-none-any.whl").unlink()
    write_kit_manifest(fake_kit)
    with pytest.raises(KitVerificationError, match="not the kit that was built"):
        verify_kit(fake_kit, "0" * 64)


def test_damaged_manifest_and_non_kit_are_refused(fake_kit: Path, tmp_path: Path) -> None:
    with (fake_kit / "MANIFEST").open("a") as handle:
        handle.write(f"{'a' * 64}  ../outside\n")
    with pytest.raises(KitVerificationError, match="line 6 is not"):
        verify_kit(fake_kit)
    with pytest.raises(KitVerificationError, match="has no MANIFEST"):
        verify_kit(tmp_path)


def test_cli_verify_exit_codes(fake_kit: Path) -> None:
    ok = runner.invoke(app, ["kit", "verify", str(fake_kit)])
    assert ok.exit_code == 0, ok.output
    assert "every file matches" in ok.output
    flip_last_byte(fake_kit / "install.sh")
    refused = runner.invoke(app, ["kit", "verify", str(fake_kit)])
    assert refused.exit_code == 2
    assert "changed: install.sh" in refused.output
    assert "Traceback" not in refused.output


def test_standalone_script_runs_without_unicure_rt(fake_kit: Path) -> None:
    """`python -I -S`: no site-packages, no PYTHONPATH, so unicure_rt cannot be imported."""
    script = [sys.executable, "-I", "-S", str(fake_kit / "verify_kit.py"), str(fake_kit)]
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import unicure_rt"], cwd=fake_kit, capture_output=True
    )
    assert probe.returncode != 0
    ok = subprocess.run(script, cwd=fake_kit, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    flip_last_byte(fake_kit / "bundles" / "default" / "manifest.json")
    refused = subprocess.run(script, cwd=fake_kit, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "changed: bundles/default/manifest.json" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_target_requirements_pick_the_onnxruntime_of_each_platform() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = declared + ['torch>=2.5; extra == "export"']

    def names(target: str) -> set[str]:
        return {r.split(">")[0] for r in target_requirements(declared, target, "3.12")}

    x86, arm = names("linux-x86_64"), names("linux-aarch64")
    assert "onnxruntime-gpu" in x86 and "onnxruntime" not in x86
    assert "onnxruntime" in arm and "onnxruntime-gpu" not in arm
    assert "torch" not in x86 | arm
    assert {"numpy", "anndata", "rdkit", "typer"} <= x86 & arm
    assert all(";" not in r for r in target_requirements(declared, "linux-x86_64", "3.10"))


def test_package_data_must_travel_in_the_wheel(tmp_path: Path) -> None:
    data = REPO / "unicure_rt" / "data"
    shipped = sorted(p.relative_to(REPO).as_posix() for p in data.rglob("*") if p.is_file())
    assert "unicure_rt/data/default_bundle/backbone.onnx" in shipped
    complete, partial = tmp_path / "complete.whl", tmp_path / "partial.whl"
    for wheel, names in ((complete, shipped), (partial, shipped[:-1])):
        with zipfile.ZipFile(wheel, "w") as archive:
            for name in names:
                archive.writestr(name, b"")
    check_package_data(complete, data)
    with pytest.raises(UserError, match=shipped[-1].replace(".", r"\.")):
        check_package_data(partial, data)


def test_options_and_names() -> None:
    with pytest.raises(UserError, match="linux-x86_64, linux-aarch64"):
        check_options(KitOptions(platforms=("windows-arm",)))
    with pytest.raises(UserError, match="3.9"):
        check_options(KitOptions(pythons=("3.9",)))
    assert wheel_name_version("onnxruntime_gpu-1.31.1-cp312-cp312-x.whl") == (
        "onnxruntime-gpu",
        "1.31.1",
    )
    no_out = runner.invoke(app, ["kit"])
    assert no_out.exit_code == 2 and "needs --out" in no_out.output


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("UNICURE_KIT_NETWORK") != "1",
    reason="builds a kit from the package index and installs it offline: set UNICURE_KIT_NETWORK=1",
)
def test_kit_installs_and_scores_with_no_network(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs `unshare` for a network namespace with no interfaces")
    spec = importlib.util.spec_from_file_location(
        "kit_check", REPO / "scripts" / "kit_offline_check.py"
    )
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system_python = shutil.which(f"python{version}", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip(f"needs a system python{version} to install the kit into")
    record = check.offline_check(tmp_path / "work", version, system_python)
    for step in ("build", "no_network_probe", "install_offline", "score_offline"):
        assert record[step]["exit_code"] == 0, (step, record[step])
    assert record["bundle_info_offline"]["exit_code"] == 0
    assert record["installed_package"].startswith(str(tmp_path / "work" / "env"))
    assert (tmp_path / "work" / "scored" / "ranking.csv").is_file()
    assert record["verify_tampered"]["exit_code"] == 2
    assert record["install_tampered"]["exit_code"] == 2
    assert not record["tampered_install_created_venv"]
    assert record["verify_restored"]["exit_code"] == 0
