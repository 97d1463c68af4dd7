"""Request bodies in the Kubernetes protobuf encoding, for the few kinds ``kubectl create <kind>`` sends.

kubectl's typed clients (``kubectl create namespace|configmap|secret|serviceaccount``) encode bodies
as ``application/vnd.kubernetes.protobuf``. The generated Go types are not available here, so the
wire format is read directly for those kinds; other kinds get ``415`` and a hint to use ``-f``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of a message: ints for varints, bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield number, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, raw in fields(data):
        if number == 1 and isinstance(raw, bytes):
            key = raw.decode()
        elif number == 2 and isinstance(raw, bytes):
            value = raw
    return key, value


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, raw in fields(data):
        if number in names and isinstance(raw, bytes):
            meta[names[number]] = raw.decode()
        elif number in (11, 12) and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = value.decode()
        elif number == 14 and isinstance(raw, bytes):
            meta.setdefault("finalizers", []).append(raw.decode())
    return meta


def _config_map(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {}}
    for number, raw in fields(data):
        if number == 1 and isinstance(raw, bytes):
            obj["metadata"] = _object_meta(raw)
        elif number in (2, 3) and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            if number == 2:
                obj.setdefault("data", {})[key] = value.decode()
            else:
                obj.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
        elif number == 4 and isinstance(raw, int):
            obj["immutable"] = bool(raw)
    return obj


def _secret(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {}}
    for number, raw in fields(data):
        if number == 1 and isinstance(raw, bytes):
            obj["metadata"] = _object_meta(raw)
        elif number == 2 and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            obj.setdefault("data", {})[key] = base64.b64encode(value).decode()
        elif number == 3 and isinstance(raw, bytes):
            obj["type"] = raw.decode()
        elif number == 4 and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            obj.setdefault("stringData", {})[key] = value.decode()
        elif number == 5 and isinstance(raw, int):
            obj["immutable"] = bool(raw)
    return obj


def _metadata_only(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {}}
    for number, raw in fields(data):
        if number == 1 and isinstance(raw, bytes):
            obj["metadata"] = _object_meta(raw)
    return obj


DECODERS: dict[tuple[str, str], Callable[[bytes], dict[str, Any]]] = {
    ("v1", "ConfigMap"): _config_map,
    ("v1", "Secret"): _secret,
    ("v1", "Namespace"): _metadata_only,
    ("v1", "ServiceAccount"): _metadata_only,
}


def decode(body: bytes) -> dict[str, Any]:
    """Decode an enveloped protobuf body of a supported kind into its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    api_version = kind = ""
    raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            for sub_number, sub_value in fields(value):
                if sub_number == 1 and isinstance(sub_value, bytes):
                    api_version = sub_value.decode()
                elif sub_number == 2 and isinstance(sub_value, bytes):
                    kind = sub_value.decode()
        elif number == 2 and isinstance(value, bytes):
            raw = value
    decoder = DECODERS.get((api_version, kind))
    if decoder is None:
        raise ProtobufError(
            f"protobuf bodies of {kind or 'this kind'} are not supported; send JSON or YAML (kubectl create -f, kubectl apply -f)"
        )
    obj = decoder(raw)
    obj["apiVersion"], obj["kind"] = api_version, kind
    return obj
