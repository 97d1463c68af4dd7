"""A compile cache (``spec.model.compileCache``) gives every serving pod the claim and a server that
reads it, and the revision a compile Job that fills it first; without one the pods are as before."""

from __future__ import annotations

import pytest
from k8s_validation import validate_builtin
from pydantic import ValidationError

from mlrollouts.api import ModelDeployment, format_validation_error
from mlrollouts.builders import Owner, ServingRevision, serving_deployment
from mlrollouts.builders.serving import (
    COMPILE_CACHE_DIR,
    COMPILE_CACHE_VOLUME,
    compile_job,
    compile_job_name,
    job_finished,
)
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.modeldeployment import serving_revision
from mlrollouts.rollout.resource import revision_template
from mlrollouts.rollout.revision import revision_hash

OWNER = Owner(name="forest", namespace="ml", uid="0b6c8f3e-1111-4222-8333-444455556666")


def _rev(**kw):
    return ServingRevision(
        owner=OWNER,
        revision="abc123def0",
        model_name="forest",
        model_uri="s3://m/forest/3/model.skops",
        extra_args=("--trust-type", "sklearn.tree._tree.Tree"),
        **kw,
    )


def _pod(deployment):
    return deployment["spec"]["template"]["spec"]


def _mdep(model_extra=None):
    model = {"uri": "s3://m/forest/3/model.skops", "trustedTypes": ["sklearn.tree._tree.Tree"]}
    return ModelDeployment.model_validate(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "forest", "namespace": "ml"},
            "spec": {"model": {**model, **(model_extra or {})}},
        }
    )


CACHE = {"compileCache": {"persistentVolumeClaim": {"claimName": "model-cache"}}}


def test_without_a_cache_the_pod_has_no_init_step_and_no_cache():
    dep = serving_deployment(_rev())
    pod = _pod(dep)
    assert "initContainers" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "--compile-cache-dir" not in pod["containers"][0]["args"]


def test_with_a_cache_the_pod_mounts_the_claim_and_the_server_reads_it():
    dep = serving_deployment(_rev(compile_cache_claim="model-cache"))
    validate_builtin(dep)
    pod = _pod(dep)
    volume = next(v for v in pod["volumes"] if v["name"] == COMPILE_CACHE_VOLUME)
    assert volume == {"name": COMPILE_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": "model-cache"}}
    server = pod["containers"][0]
    assert {"name": COMPILE_CACHE_VOLUME, "mountPath": COMPILE_CACHE_DIR} in server["volumeMounts"]
    args = server["args"]
    assert args[args.index("--compile-cache-dir") + 1] == COMPILE_CACHE_DIR


def test_the_pods_have_no_init_step_the_job_compiles_what_the_server_loads():
    rev = _rev(compile_cache_claim="model-cache", image="reg/serving:1")
    pod = _pod(serving_deployment(rev))
    assert "initContainers" not in pod  # the Job compiled before the pods start
    server = pod["containers"][0]
    job = compile_job(rev)
    validate_builtin(job)
    assert job["metadata"]["name"] == compile_job_name(OWNER, "abc123def0") == "forest-abc123def0-compile"
    assert job["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    spec = job["spec"]
    assert (
        spec["backoffLimit"] >= 1
        and spec["activeDeadlineSeconds"] > 0
        and spec["ttlSecondsAfterFinished"] > 0
    )
    job_pod = spec["template"]["spec"]
    assert job_pod["restartPolicy"] == "OnFailure"
    assert job_pod["volumes"] == pod["volumes"]
    assert job_pod["securityContext"] == pod["securityContext"]
    [compile_] = job_pod["containers"]
    assert compile_["image"] == server["image"] == "reg/serving:1"
    assert compile_["command"] == ["mlserving"]
    # the server's own arguments: the same model, options and cache key
    assert compile_["args"] == ["compile", "--best-effort", *server["args"][1:]]
    assert compile_["volumeMounts"] == server["volumeMounts"]
    assert compile_["env"] == server["env"]
    assert compile_["securityContext"]["readOnlyRootFilesystem"] is True
    assert "readinessProbe" not in compile_ and "ports" not in compile_
    # its pods are not the revision's serving pods: no Service or Deployment selector picks them
    labels = spec["template"]["metadata"]["labels"]
    selector = serving_deployment(rev)["spec"]["selector"]["matchLabels"]
    assert not all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(
    ("conditions", "ended"),
    [
        (None, None),
        ([], None),
        ([{"type": "Complete", "status": "True"}], "Complete"),
        ([{"type": "SuccessCriteriaMet", "status": "True"}], None),
        ([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}], "Failed"),
        ([{"type": "Failed", "status": "False"}], None),
    ],
)
def test_a_job_has_ended_once_complete_or_failed(conditions, ended):
    job = None if conditions is None else {"status": {"conditions": conditions}}
    assert job_finished(job) == ended


def test_the_job_arguments_are_accepted_by_mlserving_compile(monkeypatch):
    from mlserving.cli import build_parser
    from mlserving.cli_flags import settings_from_flags
    from mlserving.settings import ServerSettings

    for name in ("MLSERVING_MODEL_NAME", "MLSERVING_COMPILE_CACHE_DIR", "MLSERVING_TRUSTED_TYPES"):
        monkeypatch.delenv(name, raising=False)
    [container] = compile_job(_rev(compile_cache_claim="model-cache"))["spec"]["template"]["spec"][
        "containers"
    ]
    args = build_parser(container["args"]).parse_args(container["args"])
    assert args.command == "compile" and args.best_effort is True
    del args.best_effort
    settings = settings_from_flags("compile", ServerSettings, args)
    assert settings is not None
    assert settings.compile_cache_dir == COMPILE_CACHE_DIR
    assert settings.trusted_type_list == ["sklearn.tree._tree.Tree"]


def test_the_controller_passes_the_claim_of_the_spec():
    config = OperatorConfig(prometheus_url=None, poll=1.0)
    with_cache = serving_revision(_mdep(CACHE), OWNER, "r1", config)
    assert with_cache.compile_cache_claim == "model-cache"
    assert serving_revision(_mdep(), OWNER, "r1", config).compile_cache_claim is None


def test_a_cache_is_a_new_revision_and_no_cache_keeps_the_old_one():
    plain, cached = _mdep(), _mdep(CACHE)
    assert "compileCache" not in revision_template(plain)["model"]
    assert revision_hash(**revision_template(plain)) != revision_hash(**revision_template(cached))


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({**CACHE, "uri": "s3://m/forest/3/model.onnx"}, "spec.model.compileCache"),
        ({**CACHE, "format": "onnx"}, "spec.model.compileCache"),
        (
            {"compileCache": {"persistentVolumeClaim": {"claimName": "Bad_Name"}}},
            "compileCache.persistentVolumeClaim.claimName",
        ),
        ({"compileCache": {}}, "spec.model.compileCache.persistentVolumeClaim"),
        (
            {"compileCache": {"persistentVolumeClaim": {"claimName": "c", "readOnly": True}}},
            "spec.model.compileCache.persistentVolumeClaim.readOnly",
        ),
    ],
)
def test_bad_compile_cache_is_refused_naming_the_field(model, field):
    with pytest.raises(ValidationError) as exc:
        _mdep(model)
    assert field in format_validation_error(exc.value)
