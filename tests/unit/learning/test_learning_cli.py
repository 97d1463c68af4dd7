"""``mlserving learn``: settings, and refusals that stop the learner before it serves."""

from __future__ import annotations

import pytest
from learning_testing import KEY, fitted_sgd_classifier, save_skops

from mlserving.cli import build_parser
from mlserving.learning.cli import build_pipeline, main, settings_from


def flags(tmp_path, model_path, **extra) -> list[str]:
    key = tmp_path / "key"
    key.write_bytes(KEY)
    argv = [
        "--model-name", "iris",
        "--model-uri", str(model_path),
        "--storage-uri", (tmp_path / "store").as_uri(),
        "--signing-key-file", str(key),
    ]  # fmt: skip
    for name, value in extra.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def test_the_subcommand_is_registered_with_mlserving(tmp_path, iris):
    model = save_skops(fitted_sgd_classifier(iris), tmp_path / "model.skops")
    argv = ["learn", *flags(tmp_path, model, max_delay="1800", snapshot_every=50)]
    args = build_parser(argv).parse_args(argv)
    settings = settings_from(args)
    assert (settings.model_name, settings.max_delay, settings.snapshot_every) == ("iris", 1800.0, 50)
    pipeline = build_pipeline(settings)
    assert pipeline.config.base_sha256 and pipeline.learner.n_features == 4


def test_flags_override_the_environment(tmp_path, iris, monkeypatch):
    model = save_skops(fitted_sgd_classifier(iris), tmp_path / "model.skops")
    monkeypatch.setenv("MLLEARNER_BATCH_SIZE", "64")
    monkeypatch.setenv("MLLEARNER_WINDOW", "200")
    argv = ["learn", *flags(tmp_path, model, window=100)]
    settings = settings_from(build_parser(argv).parse_args(argv))
    assert (settings.batch_size, settings.window) == (64, 100)


def test_a_model_that_cannot_learn_stops_the_learner_with_the_reason(tmp_path, iris, capsys):
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(iris.x, iris.y)
    model = save_skops(forest, tmp_path / "forest.skops")
    with pytest.raises(SystemExit) as exit_info:
        main([*flags(tmp_path, model), "--trust-type", "sklearn.tree._tree.Tree"])
    assert exit_info.value.code == 2
    assert "model: RandomForestClassifier has no partial_fit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"algorithm": "Perceptron"},
            "algorithm: the model is a SGDClassifier, not the configured Perceptron",
        ),
        ({"max_delay": "soon"}, "--max-delay (MLLEARNER_MAX_DELAY)"),
        (
            {"batch_size": 0},
            "--batch-size (MLLEARNER_BATCH_SIZE): Input should be greater than or equal to 1",
        ),
        ({"storage_uri": "ftp://host/x"}, "unsupported scheme 'ftp'"),
    ],
)
def test_bad_settings_are_refused_with_the_flag_named(tmp_path, iris, capsys, extra, message):
    model = save_skops(fitted_sgd_classifier(iris), tmp_path / "model.skops")
    argv = flags(tmp_path, model)
    for name, value in extra.items():
        flag = f"--{name.replace('_', '-')}"
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
        else:
            argv += [flag, str(value)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_short_signing_key_or_bad_storage_option_is_refused(tmp_path, iris, capsys):
    model = save_skops(fitted_sgd_classifier(iris), tmp_path / "model.skops")
    argv = flags(tmp_path, model)
    (tmp_path / "key").write_bytes(b"short")
    with pytest.raises(SystemExit):
        main(argv)
    assert "the key must be at least 16 bytes" in capsys.readouterr().err
    (tmp_path / "key").write_bytes(KEY)
    with pytest.raises(SystemExit):
        main([*argv, "--storage-option", "NO_EQUALS_SIGN"])
    assert "--storage-option: storage option 'NO_EQUALS_SIGN': expected KEY=VALUE" in capsys.readouterr().err


def test_history_tells_where_the_snapshot_canary_is():
    from datetime import UTC, datetime

    from mlrollouts.cli.learning import render_learning_history

    status = {
        "servingSnapshot": 3,
        "latestSnapshot": 5,
        "pinned": 3,
        "pinnedBy": "Canary",
        "canary": {
            "phase": "Progressing",
            "stableSnapshot": 3,
            "candidateSnapshot": 5,
            "weight": 20,
            "currentStep": 0,
            "refusedSnapshot": 4,
            "message": "rolling out snapshot 5",
        },
        "snapshots": [{"version": 4, "verdict": "Bad"}, {"version": 5, "verdict": "Unjudged"}],
    }
    text = render_learning_history(status, datetime.now(UTC))
    assert "pinned by Canary to 3" in text
    assert "snapshot canary Progressing: stable 3, candidate 5 at 20 % (step 1), last refused 4" in text
