"""The model server's settings: MLSERVING_* variables and flags, converted and refused like pydantic does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlserving.server.ids import ResponseIds
from mlserving.settings import ServerSettings, SettingsError

BASE = {"MLSERVING_MODEL_NAME": "m", "MLSERVING_MODEL_URI": "/models/m.onnx"}


@pytest.fixture
def env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.lower().startswith("mlserving_"):
            monkeypatch.delenv(name)
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_values_from_the_environment_are_converted(env):
    env.setenv("MLSERVING_PORT", " 9000 ")
    env.setenv("MLSERVING_ALLOW_NAN", "yes")
    env.setenv("MLSERVING_COMPILE_TOLERANCE", "1e-3")
    env.setenv("mlserving_revision", "r7")  # names are not case-sensitive
    env.setenv("MLSERVING_SNAPSHOT_STORAGE_OPTIONS", '{"AWS_REGION": "eu-west-1"}')
    env.setenv("MLSERVING_MODEL_SHA256", "A" * 64)
    env.setenv("MLSERVING_LEARNER_URL", "http://learner:8080/")
    s = ServerSettings()
    assert (s.port, s.allow_nan, s.compile_tolerance, s.revision) == (9000, True, 1e-3, "r7")
    assert s.snapshot_storage_options == {"AWS_REGION": "eu-west-1"}
    assert s.model_sha256 == "a" * 64 and s.learner_url == "http://learner:8080"
    assert (s.format, s.max_batch_size, s.download_dir, s.snapshot_uri) == ("auto", 64, None, None)


def test_keyword_arguments_win_over_the_environment(env):
    env.setenv("MLSERVING_PORT", "9000")
    assert ServerSettings(port=9100, unknown_field=1).port == 9100


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MLSERVING_PORT", "x", "port (MLSERVING_PORT): Input should be a valid integer"),
        ("MLSERVING_PORT", "70000", "Input should be less than or equal to 65535"),
        ("MLSERVING_MAX_BATCH_SIZE", "0", "Input should be greater than or equal to 1"),
        ("MLSERVING_COMPILE_TOLERANCE", "0", "Input should be greater than 0"),
        ("MLSERVING_ALLOW_NAN", "maybe", "Input should be a valid boolean"),
        ("MLSERVING_FORMAT", "ONNX", "Input should be 'auto', 'onnx' or 'sklearn'"),
        ("MLSERVING_MODEL_URI", "", "String should have at least 1 character"),
        ("MLSERVING_MODEL_SHA256", "xyz", "model_sha256 must be 64 hexadecimal characters"),
        ("MLSERVING_LEARNER_URL", "ftp://x", "must be an http:// or https:// URL"),
        ("MLSERVING_SNAPSHOT_STORAGE_OPTIONS", "nope", "Input should be a JSON object"),
        ("MLSERVING_PINNED_SNAPSHOT", "3", "pinned_snapshot needs snapshot_uri"),
        ("MLSERVING_SNAPSHOT_URI", "file:///s", "snapshot_key_file is required with snapshot_uri"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(env, variable, value, message):
    env.setenv(variable, value)
    with pytest.raises(SettingsError, match="invalid setting") as refused:
        ServerSettings()
    assert message in str(refused.value)


def test_missing_required_settings_are_all_reported(env):
    env.delenv("MLSERVING_MODEL_NAME")
    env.delenv("MLSERVING_MODEL_URI")
    with pytest.raises(SettingsError) as refused:
        ServerSettings()
    assert refused.value.problems == [("model_name", "Field required"), ("model_uri", "Field required")]


def test_serve_reports_a_bad_flag_with_its_variable_and_exits_2(env):
    argv = [sys.executable, "-m", "mlserving.cli", "serve", "--port", "70000", "--max-batch-size", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(BASE, PATH=""))
    assert done.returncode == 2
    assert (
        "mlserving serve: --port (MLSERVING_PORT): Input should be less than or equal to 65535" in done.stderr
    )
    assert (
        "--max-batch-size (MLSERVING_MAX_BATCH_SIZE): Input should be greater than or equal to 1"
        in done.stderr
    )


def test_the_server_process_does_not_import_pydantic(env):
    code = (
        "import sys, argparse; from mlserving.settings import settings_from_flags;"
        "import mlserving.server.app, mlserving.server.cli, mlserving.server.compiling;"
        "assert settings_from_flags('serve', argparse.Namespace()) is not None;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_settings')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_generated_and_other_ids_are_remembered_apart():
    ids = ResponseIds(None, cache_size=10)
    generated = ids.new()
    ids.remember(generated, 1)
    ids.remember(generated.upper(), 2)  # not the canonical spelling: another id
    ids.remember("0x" + generated[2:], 3)
    assert ids.lookup(generated) == (True, 1)
    assert ids.lookup(generated.upper()) == (True, 2)
    assert ids.lookup("0x" + generated[2:]) == (True, 3)
    assert ids.lookup("0" * 24)[0] is False
