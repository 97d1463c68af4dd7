"""Where the learner keeps its data: one storage URI holding the data log and the snapshots.

Layout under the URI::

    data/                   the production-data log (a Delta Lake table)
    snapshots/<n>/          one published snapshot (serving model, learner state, manifest.json)
    snapshots/latest        the number of the newest published snapshot

``file://`` URIs (and plain paths) and ``s3://`` URIs are supported. Storage options use the
object_store names that ``deltalake`` takes (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``, ...); the ones
fsspec needs are translated, so both libraries reach the same bucket with the same settings.
Without options both read the standard ``AWS_*`` environment variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

DATA_DIR = "data"
SNAPSHOTS_DIR = "snapshots"

_FSSPEC_S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_SESSION_TOKEN": "token",
}
_ENDPOINT_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
_REGION_KEYS = ("AWS_REGION", "AWS_DEFAULT_REGION")


class StorageError(ValueError):
    """A storage URI or option is unusable; the message names it."""


@dataclass(frozen=True)
class StorageLocation:
    """A storage URI with its options; gives fsspec and deltalake the same place."""

    uri: str
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parsed = urlparse(self.uri)
        scheme = parsed.scheme.lower()
        if scheme == "file" and parsed.netloc:
            raise StorageError(f"storage uri {self.uri!r}: file URIs look like file:///absolute/path")
        if scheme not in ("", "file", "s3"):
            raise StorageError(
                f"storage uri {self.uri!r}: unsupported scheme {scheme!r} (use file:// or s3://)"
            )
        if scheme == "s3" and not parsed.netloc:
            raise StorageError(f"storage uri {self.uri!r}: an s3:// URI needs a bucket")
        if self.is_local:
            # Relative plain paths would depend on the working directory of whoever reads them.
            object.__setattr__(self, "uri", Path(self.local_root).resolve().as_uri())
        else:
            object.__setattr__(self, "uri", self.uri.rstrip("/"))
        object.__setattr__(self, "options", dict(self.options))

    @property
    def is_local(self) -> bool:
        return urlparse(self.uri).scheme.lower() in ("", "file")

    @property
    def local_root(self) -> str:
        parsed = urlparse(self.uri)
        return unquote(parsed.path) if parsed.scheme else self.uri

    def url(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    # ---------------------------------------------------------------- deltalake

    @property
    def data_uri(self) -> str:
        return self.url(DATA_DIR)

    @property
    def delta_options(self) -> dict[str, str] | None:
        if self.is_local:
            return None
        options = dict(self.options)
        endpoint = next((options[k] for k in _ENDPOINT_KEYS if options.get(k)), "")
        if endpoint.startswith("http://"):
            options.setdefault("AWS_ALLOW_HTTP", "true")
        return options or None

    # ---------------------------------------------------------------- fsspec

    @cached_property
    def filesystem(self) -> Any:
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file", auto_mkdir=True)
        return fsspec.filesystem("s3", **self._s3fs_options())

    def path(self, *parts: str) -> str:
        """A path for ``filesystem`` (no scheme)."""
        if self.is_local:
            return "/".join([self.local_root.rstrip("/"), *parts])
        parsed = urlparse(self.uri)
        return "/".join([parsed.netloc + parsed.path.rstrip("/"), *parts])

    def _s3fs_options(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        client: dict[str, Any] = {}
        for name, value in self.options.items():
            if name in _FSSPEC_S3_KEYS:
                kwargs[_FSSPEC_S3_KEYS[name]] = value
        endpoint = next((self.options[k] for k in _ENDPOINT_KEYS if self.options.get(k)), None)
        if endpoint:
            client["endpoint_url"] = endpoint
        region = next((self.options[k] for k in _REGION_KEYS if self.options.get(k)), None)
        if region:
            client["region_name"] = region
        if client:
            kwargs["client_kwargs"] = client
        # Each process caches its own instance; a shared cached instance would outlive its loop.
        kwargs["skip_instance_cache"] = True
        return kwargs


def parse_storage_options(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings (from repeated ``--storage-option``) into a dict."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise StorageError(f"storage option {pair!r}: expected KEY=VALUE")
        options[name.strip()] = value
    return options
