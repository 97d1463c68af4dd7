"""The API group and version, and the label and annotation keys on everything the operator makes."""

from __future__ import annotations

GROUP = "mlrollouts.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mlrollouts"
"""`kubectl get mlrollouts` lists every kind of the group."""

ACTION_ANNOTATION = f"{GROUP}/action"
"""A manual action (promote: one step, promote-full, abort, retry, resume) the operator carries out and
then removes."""
ACTIONS_HANDLED_ANNOTATION = f"{GROUP}/actions-handled"
"""How many action annotations the operator has carried out and removed; written in the same patch
that removes one, so the status's record of the last action tells a new request of the same value
from one whose removal failed."""

OWNER_LABEL = f"{GROUP}/owner"
"""``<kind>.<name>`` of the resource that owns an object."""
REVISION_LABEL = f"{GROUP}/revision"
"""The revision a serving pod runs."""
VARIANT_LABEL = f"{GROUP}/variant"
"""The experiment variant an object serves."""

PROJECT = "mlrollouts"
"""The value of the managed-by, part-of and (on the CRDs) name labels."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
