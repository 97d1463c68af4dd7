"""A skops model with untrusted types: refused with the exact types, reported to the operator."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlrollouts.controller.modeldeployment import REFUSED_MODEL_EXIT_ENV
from mlrollouts.core.termination import UNTRUSTED_MODEL_TYPES as OPERATOR_REASON
from mlrollouts.core.termination import untrusted_types
from mlserving.runtimes import LoadOptions, open_model
from mlserving.runtimes.refusals import (
    EXIT_ENV,
    REFUSED_EXIT_CODE,
    UNTRUSTED_MODEL_TYPES,
    UntrustedTypesError,
    exit_if_refused_for_good,
    refusal_report,
)
from mlserving.runtimes.sklearn import UntrustedSkopsTypes, load_estimator

TREE = "sklearn.tree._tree.Tree"


@pytest.fixture(scope="module")
def tree_skops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skops.io as sio
    from sklearn.tree import DecisionTreeClassifier

    path = tmp_path_factory.mktemp("models") / "tree.skops"
    sio.dump(DecisionTreeClassifier(max_depth=2).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), path)
    return path


def test_the_refusal_names_the_exact_untrusted_types(tree_skops: Path) -> None:
    with pytest.raises(UntrustedSkopsTypes) as refused:
        load_estimator(tree_skops, allow_unsafe_pickle=False, trusted_types=())
    assert refused.value.types == (TREE,)
    assert f"--trust-type {TREE}" in str(refused.value)
    estimator = load_estimator(tree_skops, allow_unsafe_pickle=False, trusted_types=(TREE,))
    assert estimator.predict([[3.0]]).tolist() == [1]


def test_the_types_survive_the_compiler_process(tree_skops: Path) -> None:
    with pytest.raises(UntrustedSkopsTypes) as refused:
        open_model(tree_skops, LoadOptions(format="sklearn", isolate_compile=True))
    assert refused.value.types == (TREE,)


def test_the_report_is_what_the_operator_reads() -> None:
    assert UNTRUSTED_MODEL_TYPES == OPERATOR_REASON
    report = refusal_report(
        UntrustedTypesError("model.skops: not trusted " + "x" * 9000, [TREE, "numpy.dtype"])
    )
    assert len(report) <= 4096
    assert json.loads(report)["untrustedTypes"] == [TREE, "numpy.dtype"]
    pod = {
        "status": {
            "containerStatuses": [{"lastState": {"terminated": {"message": f"a log line\n{report}\n"}}}]
        }
    }
    found = untrusted_types([{"status": {}}, pod])
    assert found is not None and found.types == (TREE, "numpy.dtype")
    message = found.message(["numpy.float64"])
    assert message.startswith("spec.model.trustedTypes: the model file holds types that skops does not trust")
    assert f"{TREE}, numpy.dtype" in message and "(trusted now: numpy.float64)" in message


def test_other_exits_are_not_mistaken_for_a_refusal() -> None:
    crashed = {
        "status": {
            "containerStatuses": [{"state": {"terminated": {"message": "Traceback ...\nKeyError: 1"}}}]
        }
    }
    other = {"reason": "Other", "untrustedTypes": [TREE]}
    unrelated = {
        "status": {"containerStatuses": [{"lastState": {"terminated": {"message": json.dumps(other)}}}]}
    }
    assert untrusted_types([crashed, unrelated, {}]) is None


def test_the_operator_asks_its_servers_to_exit_on_a_refusal() -> None:
    assert REFUSED_MODEL_EXIT_ENV == EXIT_ENV


def test_the_server_exits_with_the_report_only_when_asked(tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()  # the kubelet mounts an empty file
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from mlserving.runtimes.refusals import UntrustedTypesError, exit_if_refused_for_good
        exit_if_refused_for_good(KeyboardInterrupt(), path=Path({str(termination_log)!r}))  # not a failure
        exit_if_refused_for_good(UntrustedTypesError("refused", [{TREE!r}]), path=Path({str(termination_log)!r}))
        print("still running")
        """
    )
    asked = subprocess.run(
        [sys.executable, "-c", script], env={EXIT_ENV: "true"}, capture_output=True, text=True
    )
    assert asked.returncode == REFUSED_EXIT_CODE
    assert json.loads(asked.stderr.strip().splitlines()[-1])["untrustedTypes"] == [TREE]
    assert json.loads(termination_log.read_text())["reason"] == UNTRUSTED_MODEL_TYPES
    not_asked = subprocess.run([sys.executable, "-c", script], env={}, capture_output=True, text=True)
    assert (not_asked.returncode, not_asked.stdout.strip()) == (0, "still running")
    exit_if_refused_for_good(UntrustedTypesError("refused", [TREE]), env={})  # returns: not asked
