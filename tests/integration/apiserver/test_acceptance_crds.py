"""The project's CRDs, valid examples and invalid manifests through kubectl, as on a real cluster."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from mlrollouts.local.apiserver import ApiServer
from support import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
INVALID = sorted((ROOT / "tests/manifests/invalid").glob("*.yaml"))
VALID = sorted((ROOT / "tests/manifests/valid").glob("*.yaml")) + sorted((ROOT / "examples").glob("*/*.yaml"))


def _expectation(path: Path) -> str:
    """What the API server must say: the ``# server:`` line, else the ``# expect:`` line."""
    lines = path.read_text().splitlines()
    for prefix in ("# server:", "# expect:"):
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    raise AssertionError(f"{path.name} says neither '# server:' nor '# expect:'")


def _custom_resource_files(paths: list[Path]) -> list[Path]:
    result = []
    for path in paths:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if docs and all(str(d.get("apiVersion", "")).startswith("mlrollouts.io/") for d in docs):
            result.append(path)
    return result


def _kubectl_against_a_new_server(tmp_path_factory):
    """kubectl against an API server of its own (no operator) where the CRDs are established."""
    binary = require_binary("kubectl")
    tmp = tmp_path_factory.mktemp("acceptance")
    with ApiServer(port=0) as api:
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [binary, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp / 'cache'}", *args],
                capture_output=True,
                text=True,
                timeout=60,
            )

        applied = run("apply", "-f", str(CRDS))
        assert applied.returncode == 0, applied.stderr
        established = run("wait", "--for=condition=established", "--timeout=10s", "-f", str(CRDS))
        assert established.returncode == 0, established.stderr
        yield run


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory):
    yield from _kubectl_against_a_new_server(tmp_path_factory)


@pytest.fixture(scope="module")
def server_side(tmp_path_factory):
    """For server-side apply, so that it creates each object rather than updating the client-side one."""
    yield from _kubectl_against_a_new_server(tmp_path_factory)


def test_there_is_something_to_check():
    assert len(sorted(CRDS.glob("*.yaml"))) == 3
    assert _custom_resource_files(VALID)
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", _custom_resource_files(VALID), ids=lambda p: str(p.relative_to(ROOT)))
def test_valid_manifest_is_accepted(kubectl, path):
    result = kubectl("apply", "-f", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", _custom_resource_files(VALID), ids=lambda p: str(p.relative_to(ROOT)))
def test_valid_manifest_is_accepted_by_server_side_apply(server_side, path):
    result = server_side("apply", "--server-side", "-f", str(path))
    assert result.returncode == 0, result.stderr


def test_get_mlrollouts_lists_every_kind_with_printer_columns(kubectl):
    files = [arg for path in _custom_resource_files(VALID) for arg in ("-f", str(path))]
    applied = kubectl("apply", *files)
    assert applied.returncode == 0, applied.stderr
    listed = kubectl("get", "mlrollouts", "--all-namespaces")
    assert listed.returncode == 0, listed.stderr
    kinds = {line.split()[1].split("/")[0] for line in listed.stdout.splitlines() if "/" in line}
    assert {
        "modeldeployment.mlrollouts.io",
        "experiment.mlrollouts.io",
        "compositemodel.mlrollouts.io",
    } <= kinds
    for short_name in ("mdep", "mlexp", "cmodel"):
        table = kubectl("get", short_name, "--all-namespaces")
        assert table.returncode == 0, table.stderr
        header = table.stdout.splitlines()[0].split()
        assert header[:2] == ["NAMESPACE", "NAME"] and len(header) > 3, table.stdout


def _answers(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    answers: dict[str, str] = {}
    for line in result.stderr.splitlines():
        for path in INVALID:
            if f'"{path}"' in line:
                answers[path.name] = answers.get(path.name, "") + line + "\n"
    return answers


@pytest.fixture(scope="module")
def invalid_results(kubectl):
    """kubectl's answer per invalid manifest; one run over the whole folder (kubectl goes on after errors)."""
    return _answers(kubectl("apply", "-f", str(INVALID[0].parent)))


@pytest.fixture(scope="module")
def server_side_invalid_results(server_side):
    """Server-side apply's answer per invalid manifest: one file per run, as its errors do not name
    the file (and a kind no CRD serves stops the whole run)."""

    def answer(path: Path) -> str:
        return server_side("apply", "--server-side", "-f", str(path)).stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {
            path.name: text for path, text in zip(INVALID, pool.map(answer, INVALID), strict=True) if text
        }


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_rejected_naming_the_problem(invalid_results, path):
    assert path.name in invalid_results, f"{path.name} was accepted"
    expected = _expectation(path)
    assert expected in invalid_results[path.name], f"expected {expected!r} in:\n{invalid_results[path.name]}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_rejected_by_server_side_apply_too(server_side_invalid_results, path):
    assert path.name in server_side_invalid_results, f"{path.name} was accepted by server-side apply"
    expected = _expectation(path)
    answer = server_side_invalid_results[path.name]
    assert expected in answer, f"expected {expected!r} in:\n{answer}"
    assert "<class" not in answer and "Traceback" not in answer, answer
