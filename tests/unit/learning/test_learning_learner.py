"""The online learner on tiny data sets: refusals, labels, batches, test-then-train, state."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from learning_testing import fitted_sgd_classifier, fitted_sgd_regressor, logged, save_skops

from mlserving.learning.learner import LearnerError, OnlineLearner, check_learnable, load_initial_model
from mlserving.learning.records import RecordError
from mlserving.runtimes import ModelLoadError


def learn_all(learner: OnlineLearner, x: np.ndarray, y: np.ndarray, start_seq: int = 0) -> int:
    learner.add(x, list(y), np.arange(start_seq, start_seq + len(y)), data_version=0)
    return learner.step()


# ---------------------------------------------------------------- refusals


def test_an_estimator_without_partial_fit_is_refused(iris):
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(iris.x, iris.y)
    with pytest.raises(
        LearnerError, match=r"model: RandomForestClassifier has no partial_fit.*SGDClassifier"
    ):
        check_learnable(forest)
    with pytest.raises(LearnerError, match="no partial_fit"):
        OnlineLearner(forest)


def test_an_unfitted_estimator_is_refused():
    from sklearn.linear_model import SGDClassifier

    with pytest.raises(LearnerError, match="model: SGDClassifier is not fitted"):
        check_learnable(SGDClassifier())


def test_another_algorithm_than_configured_is_refused(iris):
    with pytest.raises(
        LearnerError, match="algorithm: the model is a SGDClassifier, not the configured Perceptron"
    ):
        check_learnable(fitted_sgd_classifier(iris), "Perceptron")


def test_an_onnx_initial_model_is_refused(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    with pytest.raises(LearnerError, match="ONNX model, which cannot learn"):
        load_initial_model(model, allow_unsafe_pickle=False, trusted_types=())


def test_a_pickled_initial_model_needs_explicit_permission(tmp_path, iris):
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump(fitted_sgd_classifier(iris), path)
    with pytest.raises(ModelLoadError, match="refusing to load a joblib/pickle file"):
        load_initial_model(path, allow_unsafe_pickle=False, trusted_types=())
    assert (
        type(load_initial_model(path, allow_unsafe_pickle=True, trusted_types=())).__name__ == "SGDClassifier"
    )


def test_the_initial_model_loads_from_a_skops_file(tmp_path, iris):
    path = save_skops(fitted_sgd_classifier(iris), tmp_path / "initial" / "model.skops")
    estimator = load_initial_model(path.parent, allow_unsafe_pickle=False, trusted_types=())
    assert OnlineLearner(estimator).classes.tolist() == [0, 1, 2]


def test_a_model_of_several_outputs_is_refused(diabetes):
    from sklearn.neural_network import MLPRegressor

    targets = np.column_stack([diabetes.y, diabetes.y / 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two_outputs = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(
            diabetes.x, targets
        )
    with pytest.raises(LearnerError, match="model: MLPRegressor predicts several outputs"):
        check_learnable(two_outputs)


def test_a_batch_size_below_one_is_refused(iris):
    with pytest.raises(LearnerError, match="batch_size"):
        OnlineLearner(fitted_sgd_classifier(iris), batch_size=0)


# ---------------------------------------------------------------- labels


def test_labels_are_coerced_to_the_classes_fixed_at_the_first_fit(iris):
    learner = OnlineLearner(fitted_sgd_classifier(iris))
    request = logged("a", iris.x[0])
    assert learner.check_labels(2, request) == (2,)
    assert learner.check_labels("1", request) == (1,)
    assert learner.check_labels(2.0, request) == (2,)
    with pytest.raises(RecordError, match=r"label: 7 is not one of the model's classes \[0, 1, 2\]"):
        learner.check_labels(7, request)
    with pytest.raises(RecordError, match="label: True is not one of"):
        learner.check_labels(True, request)
    with pytest.raises(RecordError, match="label: None is not one of"):
        learner.check_labels(None, request)


def test_string_classes(iris):
    from sklearn.linear_model import SGDClassifier

    names = np.array(["setosa", "versicolor", "virginica"])[iris.y]
    learner = OnlineLearner(SGDClassifier(random_state=0).fit(iris.x[:40], names[:40]))
    request = logged("a", iris.x[0])
    assert learner.check_labels("virginica", request) == ("virginica",)
    assert learner.label_kind == "string"
    with pytest.raises(RecordError, match="label: 'tulip' is not one of"):
        learner.check_labels("tulip", request)


def test_a_request_of_several_rows_takes_one_label_per_row(iris):
    learner = OnlineLearner(fitted_sgd_classifier(iris))
    request = logged("a", iris.x[:3])
    assert learner.check_labels([0, 1, 2], request) == (0, 1, 2)
    with pytest.raises(RecordError, match=r"label\[1\]: 9 is not one of"):
        learner.check_labels([0, 9, 2], request)
    with pytest.raises(RecordError, match=r"label: one label per row expected \(3\), got 2"):
        learner.check_labels([0, 1], request)
    with pytest.raises(RecordError, match="label: the request had 3 rows"):
        learner.check_labels(0, request)


def test_a_regressor_takes_finite_numbers(diabetes):
    learner = OnlineLearner(fitted_sgd_regressor(diabetes))
    request = logged("a", diabetes.x[0])
    assert learner.check_labels(151, request) == (151.0,)
    assert learner.label_kind == "float"
    for bad in ("151", True, float("nan"), None):
        with pytest.raises(RecordError, match="label: a regression model needs a finite number"):
            learner.check_labels(bad, request)


def test_the_label_field_is_named_as_configured(iris):
    learner = OnlineLearner(fitted_sgd_classifier(iris))
    with pytest.raises(RecordError, match=r"^outcome: 5 is not"):
        learner.check_labels(5, logged("a", iris.x[0]), field="outcome")


# ---------------------------------------------------------------- learning


def test_each_batch_is_scored_before_it_is_learned(iris):
    initial = fitted_sgd_classifier(iris)
    learner = OnlineLearner(copy.deepcopy(initial), batch_size=16, window=1000)
    x, y = iris.x[30:], iris.y[30:]
    learned = learn_all(learner, x, y)
    assert learned == 112  # 7 whole batches of 16; 8 rows wait for the next
    assert learner.pending == 8
    assert learner.learned_seq == 112

    reference = copy.deepcopy(initial)
    hits, losses = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, 112, 16):
            xb, yb = x[start : start + 16], y[start : start + 16]
            proba = reference.predict_proba(xb)
            hits.extend(np.argmax(proba, axis=1) == yb)
            losses.extend(-np.log(np.clip(proba[np.arange(len(yb)), yb], 1e-15, 1 - 1e-15)))
            reference.partial_fit(xb, yb, classes=np.array([0, 1, 2]))
    np.testing.assert_allclose(learner.estimator.coef_, reference.coef_)
    assert learner.metrics["accuracy"] == pytest.approx(np.mean(hits))
    assert learner.metrics["logLoss"] == pytest.approx(np.mean(losses))
    assert learner.samples == 112


def test_step_stops_at_the_budget(iris):
    learner = OnlineLearner(fitted_sgd_classifier(iris), batch_size=10)
    learner.add(iris.x[:45], list(iris.y[:45]), np.arange(45), data_version=4)
    assert learner.step(max_samples=15) == 20  # whole batches: two of 10
    assert learner.data_version == 4
    assert learner.step() == 20
    assert learner.pending == 5


def test_a_classifier_without_probabilities_reports_accuracy_only(iris):
    from sklearn.linear_model import Perceptron

    learner = OnlineLearner(Perceptron(random_state=0).fit(iris.x[:30], iris.y[:30]), batch_size=8)
    learn_all(learner, iris.x[30:], iris.y[30:])
    assert set(learner.metrics) == {"accuracy"}


def test_a_regressor_reports_mae_and_rmse(diabetes):
    learner = OnlineLearner(fitted_sgd_regressor(diabetes), batch_size=32, window=100)
    learn_all(learner, diabetes.x[50:], diabetes.y[50:])
    assert set(learner.metrics) == {"mae", "rmse"}
    assert 0 < learner.metrics["mae"] <= learner.metrics["rmse"]


@pytest.mark.parametrize(
    "name", ["MultinomialNB", "BernoulliNB", "MLPClassifier", "PassiveAggressiveClassifier"]
)
def test_other_online_classifiers_learn(iris, name):
    import sklearn.linear_model
    import sklearn.naive_bayes
    import sklearn.neural_network

    kinds = {
        "MultinomialNB": sklearn.naive_bayes.MultinomialNB,
        "BernoulliNB": sklearn.naive_bayes.BernoulliNB,
        "MLPClassifier": lambda: sklearn.neural_network.MLPClassifier(
            hidden_layer_sizes=(8,), random_state=0
        ),
        "PassiveAggressiveClassifier": lambda: sklearn.linear_model.PassiveAggressiveClassifier(
            random_state=0
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = kinds[name]().fit(iris.x[:30], iris.y[:30])
    learner = OnlineLearner(estimator, batch_size=32)
    assert learn_all(learner, iris.x[30:], iris.y[30:]) == 96
    assert learner.errors == 0
    assert 0.0 <= learner.metrics["accuracy"] <= 1.0


def test_a_batch_partial_fit_refuses_is_counted_and_learning_goes_on(iris):
    from sklearn.naive_bayes import MultinomialNB

    learner = OnlineLearner(MultinomialNB().fit(iris.x[:30], iris.y[:30]), batch_size=4)
    negative = -iris.x[30:34]
    learner.add(negative, list(iris.y[30:34]), np.arange(4), data_version=0)
    learner.add(iris.x[34:38], list(iris.y[34:38]), np.arange(4, 8), data_version=1)
    assert learner.step() == 8
    assert learner.errors == 1
    assert "Negative values" in learner.last_error
    assert learner.learned_seq == 8


def test_a_restored_state_learns_exactly_as_the_original(iris):
    original = OnlineLearner(fitted_sgd_classifier(iris), batch_size=8, window=50)
    learn_all(original, iris.x[30:70], iris.y[30:70])
    capture = original.capture()
    restored = OnlineLearner.from_state(capture.state, batch_size=8, window=50)
    assert restored.samples == original.samples == 40
    assert restored.learned_seq == 40
    assert restored.metrics == original.metrics
    learn_all(original, iris.x[70:], iris.y[70:], start_seq=40)
    learn_all(restored, iris.x[70:], iris.y[70:], start_seq=40)
    np.testing.assert_array_equal(restored.estimator.coef_, original.estimator.coef_)
    assert restored.metrics == original.metrics


def test_a_capture_is_not_changed_by_later_learning(iris):
    learner = OnlineLearner(fitted_sgd_classifier(iris), batch_size=8)
    capture = learner.capture()
    before = capture.estimator.coef_.copy()
    learn_all(learner, iris.x[30:], iris.y[30:])
    np.testing.assert_array_equal(capture.estimator.coef_, before)
    assert capture.samples == 0


def test_an_unknown_state_format_is_refused(iris):
    state = OnlineLearner(fitted_sgd_classifier(iris)).capture().state
    with pytest.raises(LearnerError, match="learner state: unknown format 99"):
        OnlineLearner.from_state({**state, "format": 99}, batch_size=32, window=10)
