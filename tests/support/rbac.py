"""RBAC as the API server's authorizer applies it, for checking audited calls against a chart's rules."""

from __future__ import annotations

from typing import Any


def required_verbs(record: dict[str, Any]) -> list[str]:
    """What the RBAC authorizer checks: a PATCH that creates (server-side apply) also needs create."""
    verbs = [record["verb"]]
    if record["verb"] == "patch" and record.get("code") == 201:
        verbs.append("create")
    return verbs


def allowed(record: dict[str, Any], rules: list[dict[str, Any]], verb: str) -> bool:
    """Whether one of ``rules`` allows ``verb`` on the audited call's resource (and name)."""
    resource = record["resource"] + (f"/{record['subresource']}" if record["subresource"] else "")
    for rule in rules:
        if record["apiGroup"] not in rule.get("apiGroups", []):
            continue
        if resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []) and "*" not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if names and record.get("name") not in names:
            continue
        return True
    return False


def subject_rules(
    objects: list[dict[str, Any]], namespace: str, account: str
) -> dict[str, list[dict[str, Any]]]:
    """The rules bound to the ServiceAccount ``namespace/account`` by ``objects`` (rendered RBAC), by
    where they apply: ``""`` for every namespace and cluster-scoped resources (ClusterRoleBindings),
    a namespace's name for the RoleBindings in it."""

    def binds(binding: dict[str, Any]) -> bool:
        return any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == account
            and s.get("namespace", namespace) == namespace
            for s in binding.get("subjects") or []
        )

    def role(kind: str, name: str, where: str | None) -> list[dict[str, Any]]:
        for obj in objects:
            meta = obj["metadata"]
            if (
                obj["kind"] == kind
                and meta["name"] == name
                and (where is None or meta.get("namespace") == where)
            ):
                return list(obj.get("rules") or [])
        return []

    scoped: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        if obj["kind"] not in ("ClusterRoleBinding", "RoleBinding") or not binds(obj):
            continue
        ref = obj["roleRef"]
        if obj["kind"] == "ClusterRoleBinding":
            scoped.setdefault("", []).extend(role("ClusterRole", ref["name"], None))
        else:
            where = obj["metadata"]["namespace"]
            kind_ns = None if ref["kind"] == "ClusterRole" else where
            scoped.setdefault(where, []).extend(role(ref["kind"], ref["name"], kind_ns))
    return scoped


def denied_calls(
    calls: list[dict[str, Any]], scoped: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """The audited ``calls`` the rules of :func:`subject_rules` do not allow, with the verb refused."""
    denied = []
    for call in calls:
        if "resource" not in call:  # discovery and other non-resource paths
            continue
        rules = scoped.get("", []) + (scoped.get(call["namespace"], []) if call.get("namespace") else [])
        for verb in required_verbs(call):
            if not allowed(call, rules, verb):
                denied.append((verb, call))
    return denied
