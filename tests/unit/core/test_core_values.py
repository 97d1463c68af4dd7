"""Verdicts, events and the API names every package shares."""

from __future__ import annotations

import pytest

from mlrollouts.api import CustomResource
from mlrollouts.core import names
from mlrollouts.core.events import Event
from mlrollouts.core.verdicts import Verdict, combined_verdict

P, F, INC, E = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.ERROR


@pytest.mark.parametrize(
    ("verdicts", "combined"),
    [
        ([P, P], P),
        ([P, INC], INC),
        ([INC, E, P], E),
        ([E, F, INC], F),
        ([F], F),
        ([], INC),  # no checks say nothing: never a pass
    ],
)
def test_combined_verdict_takes_the_worst(verdicts, combined):
    assert combined_verdict(verdicts) is combined
    assert combined_verdict(iter(verdicts)) is combined


def test_verdicts_are_their_status_strings():
    assert [v.value for v in Verdict] == ["Pass", "Fail", "Inconclusive", "Error"]
    assert Verdict("Inconclusive") is INC


def test_events_are_normal_or_warning():
    assert Event.normal("Promoted", "done") == Event("Normal", "Promoted", "done")
    assert Event.warning("RolledBack", "no") == Event("Warning", "RolledBack", "no")


def test_names_follow_the_api_group():
    assert names.API_VERSION == "mlrollouts.io/v1alpha1"
    assert CustomResource.model_fields["api_version"].default == names.API_VERSION
    group_keys = (names.ACTION_ANNOTATION, names.OWNER_LABEL, names.REVISION_LABEL, names.VARIANT_LABEL)
    assert [key.split("/") for key in group_keys] == [
        [names.GROUP, "action"],
        [names.GROUP, "owner"],
        [names.GROUP, "revision"],
        [names.GROUP, "variant"],
    ]
