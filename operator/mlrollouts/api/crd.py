"""CustomResourceDefinitions generated from the pydantic models.

The pydantic JSON schema is turned into a *structural* OpenAPI v3 schema as the API server wants
it: `$ref`s inlined, optional fields as plain types (no `anyOf` with null), titles dropped,
`exclusiveMinimum` in the OpenAPI 3.0 form, free-form maps marked with
`x-kubernetes-preserve-unknown-fields`, object defaults reduced to `{}` so nested defaults apply,
and the models' CEL rules kept as `x-kubernetes-validations`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from mlrollouts.api.kinds import COMPOSITE_MODEL, EXPERIMENT, KINDS, MODEL_DEPLOYMENT, ResourceKind
from mlrollouts.core.names import NAME_LABEL, PART_OF_LABEL, PROJECT

JsonSchema = dict[str, Any]
Models = dict[str, type[BaseModel]]

_MODEL_KEY = "x-mlrollouts-model"  # internal: which model a schema node came from

_DROPPED_KEYS = {"title", "$defs", "discriminator"}
_OPENAPI_KEYS = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
}


class NonStructuralSchemaError(ValueError):
    """The model produced a schema construct the Kubernetes API server would refuse."""


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


PRINTER_COLUMNS: dict[str, tuple[PrinterColumn, ...]] = {
    MODEL_DEPLOYMENT.kind: (
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Stable", ".status.stableRevision", description="stable revision"),
        PrinterColumn("Candidate", ".status.candidateRevision", description="revision being rolled out"),
        PrinterColumn("Weights", ".status.weightsSummary", description="traffic percent per revision"),
        PrinterColumn("Step", ".status.step", description="step in progress, e.g. 2/3", priority=1),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
    EXPERIMENT.kind: (
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Policy", ".spec.policy.type"),
        PrinterColumn("Winner", ".status.winner.variant"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
    COMPOSITE_MODEL.kind: (
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Root", ".spec.root", priority=1),
        PrinterColumn("Endpoint", ".status.endpoint"),
        AGE,
    ),
}
"""What `kubectl get` shows of each kind, besides the name."""


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """Inline a `$ref` (keeping sibling keys such as description, default and CEL rules)."""
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = copy.deepcopy(defs[name])
        target[_MODEL_KEY] = name
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = _merge(target, siblings)
    return node


def _merge(base: JsonSchema, extra: JsonSchema) -> JsonSchema:
    merged = dict(base)
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return merged


def _strip_null(node: JsonSchema, path: str) -> JsonSchema:
    """`anyOf: [X, {type: null}]` (an optional field) becomes X with the outer keys merged in."""
    for combinator in ("anyOf", "oneOf"):
        if combinator not in node:
            continue
        branches = [b for b in node[combinator] if b != {"type": "null"}]
        if len(branches) != 1:
            raise NonStructuralSchemaError(f"{path}: {combinator} with {len(branches)} non-null branches")
        outer = {k: v for k, v in node.items() if k != combinator}
        return _merge(branches[0], outer)
    if "allOf" in node and len(node["allOf"]) == 1:
        outer = {k: v for k, v in node.items() if k != "allOf"}
        return _merge(node["allOf"][0], outer)
    return node


def _object_defaults(model: type[BaseModel] | None) -> set[str]:
    """Aliases of fields whose default is a nested model built from its own defaults."""
    if model is None:
        return set()
    names = set()
    for name, info in model.model_fields.items():
        if info.default_factory is not None and isinstance(info.default_factory(), BaseModel):  # type: ignore[call-arg]
            names.add(info.alias or name)
    return names


def collect_models(model: type[BaseModel], found: Models | None = None) -> Models:
    """Every model reachable from `model`'s fields, by class name (names must be unique)."""
    found = {} if found is None else found
    if found.get(model.__name__) is model:
        return found
    if model.__name__ in found:
        raise ValueError(f"two API models are named {model.__name__}")
    found[model.__name__] = model

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            collect_models(annotation, found)
        for arg in get_args(annotation):
            walk(arg)

    for info in model.model_fields.values():
        walk(info.annotation)
    return found


def to_structural(
    node: JsonSchema,
    defs: dict[str, JsonSchema],
    path: str = "",
    *,
    models: Models | None = None,
    in_status: bool = False,
) -> JsonSchema:
    """One pydantic JSON schema node as a structural OpenAPI v3 node (recursively)."""
    for _ in range(8):  # refs and optional wrappers may nest a few levels
        resolved = _strip_null(_resolve(node, defs), path)
        if resolved is node:
            break
        node = resolved
    models = models or {}
    model = models.get(node.get(_MODEL_KEY, ""))
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or key == _MODEL_KEY:
            continue
        if key not in _OPENAPI_KEYS and key != "const":
            raise NonStructuralSchemaError(f"{path or '<root>'}: unsupported schema keyword {key!r}")
        out[key] = value
    if "const" in out:
        out["enum"] = [out.pop("const")]
        out.setdefault("type", "string")
    if isinstance(out.get("exclusiveMinimum"), int | float) and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"] = out["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if isinstance(out.get("exclusiveMaximum"), int | float) and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"] = out["exclusiveMaximum"]
        out["exclusiveMaximum"] = True

    if "properties" in out:
        out["type"] = "object"
        object_defaults = set() if in_status else _object_defaults(model)
        properties = {}
        for name, child in out["properties"].items():
            properties[name] = to_structural(
                child, defs, f"{path}.{name}", models=models, in_status=in_status
            )
            if name in object_defaults:
                properties[name]["default"] = {}  # nested defaults fill it in
        out["properties"] = properties
        if not out.get("required"):
            out.pop("required", None)
    if "items" in out:
        out["items"] = to_structural(out["items"], defs, f"{path}[]", models=models, in_status=in_status)
    additional = out.get("additionalProperties")
    if isinstance(additional, dict):
        if additional:
            out["additionalProperties"] = to_structural(
                additional, defs, f"{path}{{}}", models=models, in_status=in_status
            )
        else:  # dict[str, Any]: a free-form object
            del out["additionalProperties"]
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif additional is True:
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif additional is False:
        del out["additionalProperties"]  # extra="forbid": the API server prunes unknown fields
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True  # an untyped dict
    if not out:
        out = {"x-kubernetes-preserve-unknown-fields": True}  # typing.Any

    if "default" in out:
        default = out["default"]
        if default is None or in_status:
            del out["default"]
        elif isinstance(default, dict):
            out["default"] = {}  # nested defaults fill it in
    if (
        "type" not in out
        and not out.get("x-kubernetes-int-or-string")
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise NonStructuralSchemaError(f"{path or '<root>'}: no type")
    return out


def model_schema(model: type[BaseModel], *, in_status: bool = False) -> JsonSchema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    raw[_MODEL_KEY] = model.__name__
    return _ordered(to_structural(raw, defs, models=collect_models(model), in_status=in_status))


_KEY_ORDER = ("type", "description", "default", "enum", "format")


def _ordered(node: JsonSchema) -> JsonSchema:
    """Keys in a readable order (type and description first); properties keep the model's order."""
    first = [k for k in _KEY_ORDER if k in node]
    rest = sorted(k for k in node if k not in _KEY_ORDER)
    out: JsonSchema = {}
    for key in first + rest:
        value = node[key]
        if key == "properties":
            value = {name: _ordered(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _ordered(value)
        out[key] = value
    return out


def served_versions_note(kind: ResourceKind) -> str:
    """Which apiVersion to write: kubectl's answer to another one is only "no matches for kind"."""
    return f"Served versions: apiVersion {kind.group}/{kind.version} (the only one)."


def openapi_schema(kind: ResourceKind) -> JsonSchema:
    spec = model_schema(kind.spec)
    status = model_schema(kind.status, in_status=True)
    # kopf keeps its own bookkeeping under status, and newer operators may add fields
    status["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "type": "object",
        "description": f"{kind.description} {served_versions_note(kind)}",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


SCALE_SUBRESOURCE: dict[str, dict[str, Any]] = {
    # an autoscaler sets the whole deployment's replicas; the operator splits them between revisions
    "ModelDeployment": {
        "scale": {
            "specReplicasPath": ".spec.serving.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    },
}


def crd(kind: ResourceKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {NAME_LABEL: PROJECT, PART_OF_LABEL: PROJECT},
        },
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": kind.list_kind,
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}, **SCALE_SUBRESOURCE.get(kind.kind, {})},
                    "additionalPrinterColumns": [column.to_dict() for column in PRINTER_COLUMNS[kind.kind]],
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(kind) for kind in KINDS]


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def render(document: dict[str, Any]) -> str:
    """YAML text of a CRD, stable from run to run."""
    header = "# Generated from the mlrollouts.api models by `mlrollouts crds`; do not edit (run make crds).\n"
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def rendered_crds() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {f"{kind.crd_name}.yaml": render(crd(kind)) for kind in KINDS}


def write_crds(output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_crds().items():
        path = output_dir / name
        path.write_text(text)
        written.append(path)
    return written
