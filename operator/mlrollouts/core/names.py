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
