"""Model sources: ``file://`` (or a plain path), ``http(s)://`` and ``s3://``.

``fetch_model`` returns a local path. Remote files are streamed to a download directory with a size
limit; an optional sha256 is checked for every source. Errors are ``FetchError`` with a message that
names the URI and what went wrong.

An HTTP or S3 download ends with an error when the server makes it wait longer than ``timeout`` for
the connection, the response or the next bytes (a stall; S3 clients retry a stall a few times), and
when the whole download takes longer than ``deadline`` (a server that trickles a byte now and then
would otherwise hold it forever). An S3 prefix is downloaded into ``<name>.part`` and renamed when
complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["DOWNLOAD_DEADLINE", "FetchError", "fetch_model", "file_sha256"]

_CHUNK = 1024 * 1024
DOWNLOAD_DEADLINE = 3600.0
"""Seconds a whole download (HTTP or S3) may take by default (an hour: 2 GiB at under 1 MB/s)."""


class FetchError(RuntimeError):
    """A model could not be fetched; the message says which URI and why."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(uri: str, path: Path, expected: str | None) -> None:
    if not expected or path.is_dir():
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise FetchError(f"{uri}: sha256 mismatch (expected {expected}, got {actual})")


def fetch_model(
    uri: str,
    *,
    download_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    max_bytes: int = 2 * 1024**3,
    timeout: float = 60.0,
    deadline: float = DOWNLOAD_DEADLINE,
    s3_endpoint_url: str | None = None,
) -> Path:
    """Make the model at ``uri`` available locally and return its path (file or directory).

    ``timeout``: longest wait for the connection, the response or the next bytes of an HTTP or S3
    download; ``deadline``: longest time the whole download may take (an HTTP download ends at most
    ``timeout`` later, as a read in progress is not interrupted; an S3 download is cancelled)."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = Path(unquote(parsed.path) if scheme == "file" else uri)
        if parsed.netloc and scheme == "file":
            raise FetchError(
                f"{uri}: file URIs must look like file:///absolute/path (host {parsed.netloc!r})"
            )
        if not path.exists():
            raise FetchError(f"{uri}: no such file or directory")
        if path.is_file() and path.stat().st_size > max_bytes:
            raise FetchError(f"{uri}: {path.stat().st_size} bytes is more than the limit of {max_bytes}")
        _check_sha256(uri, path, sha256)
        return path
    dest_root = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="mlserving-model-"))
    dest_root.mkdir(parents=True, exist_ok=True)
    name = Path(unquote(parsed.path)).name or "model"
    if scheme in ("http", "https"):
        path = _fetch_http(uri, dest_root / name, max_bytes=max_bytes, timeout=timeout, deadline=deadline)
    elif scheme == "s3":
        path = _fetch_s3(
            uri,
            dest_root,
            max_bytes=max_bytes,
            timeout=timeout,
            deadline=deadline,
            endpoint_url=s3_endpoint_url,
        )
    else:
        raise FetchError(f"{uri}: unsupported scheme {scheme!r} (use file://, http(s):// or s3://)")
    _check_sha256(uri, path, sha256)
    return path


def _fetch_http(uri: str, dest: Path, *, max_bytes: int, timeout: float, deadline: float) -> Path:
    import httpx

    tmp = dest.with_name(dest.name + ".part")
    started = time.monotonic()
    # no read may outlast the deadline by more than the stall timeout, however short the deadline
    timeout = min(timeout, deadline)
    try:
        with httpx.stream("GET", uri, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise FetchError(f"{uri}: HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(
                    f"{uri}: Content-Length {declared} is more than the limit of {max_bytes} bytes"
                )
            size = 0
            with open(tmp, "wb") as out:
                for chunk in resp.iter_bytes():  # as they arrive: a trickle must meet the deadline too
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{uri}: download exceeds the limit of {max_bytes} bytes")
                    out.write(chunk)
                    if time.monotonic() - started > deadline:
                        raise FetchError(
                            f"{uri}: download not complete after {deadline:g}s ({size} bytes received)"
                        )
        tmp.replace(dest)
        return dest
    except httpx.TimeoutException as exc:
        raise FetchError(f"{uri}: no answer for {timeout:g}s ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_s3(
    uri: str, dest_root: Path, *, max_bytes: int, timeout: float, deadline: float, endpoint_url: str | None
) -> Path:
    import fsspec

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    timeout = min(timeout, deadline)
    # botocore's connect and read timeouts are per socket operation: the stall timeout.
    options: dict[str, object] = {"config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout}}
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    started = time.monotonic()
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
        # The whole fetch (listing, metadata, every retry and every body) is one coroutine on the
        # file system's event loop, cancelled at the deadline: botocore and s3fs retry stalls on
        # their own, and a trickle never stalls.
        download = asyncio.wait_for(_download_s3(fs, uri, path, dest_root, max_bytes), deadline)
        future = asyncio.run_coroutine_threadsafe(download, fs.loop)
        try:
            return future.result(timeout=deadline + timeout)
        finally:
            future.cancel()
    except FetchError:
        raise
    except FileNotFoundError:
        raise FetchError(f"{uri}: no such object") from None
    except TimeoutError as exc:
        if time.monotonic() - started >= deadline:
            raise FetchError(f"{uri}: download not complete after {deadline:g}s") from None
        raise FetchError(f"{uri}: no answer for {timeout:g}s ({type(exc).__name__})") from None
    except Exception as exc:
        if time.monotonic() - started >= deadline:  # a retry wrapper may hide the cancellation
            raise FetchError(f"{uri}: download not complete after {deadline:g}s") from None
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from None


async def _download_s3(fs: Any, uri: str, path: str, dest_root: Path, max_bytes: int) -> Path:
    """Download an object or every object under a prefix; a directory appears only when complete."""
    if await fs._isdir(path):
        files = [f for f in await fs._find(path) if not f.endswith("/")]
        total = 0
        for f in files:
            total += int((await fs._info(f)).get("size") or 0)
        if total > max_bytes:
            raise FetchError(f"{uri}: {total} bytes is more than the limit of {max_bytes}")
        target = dest_root / (Path(path.rstrip("/")).name or "model")
        partial = target.with_name(target.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            prefix = path.rstrip("/") + "/"
            for f in files:
                rel = f[len(prefix) :]
                if not f.startswith(prefix) or ".." in rel.split("/"):
                    continue  # a key must not reach outside the download directory
                (partial / rel).parent.mkdir(parents=True, exist_ok=True)
                await fs._get_file(f, str(partial / rel))
            shutil.rmtree(target, ignore_errors=True)
            partial.replace(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target
    size = int((await fs._info(path)).get("size") or 0)
    if size > max_bytes:
        raise FetchError(f"{uri}: {size} bytes is more than the limit of {max_bytes}")
    target = dest_root / Path(path).name
    tmp = target.with_name(target.name + ".part")
    try:
        await fs._get_file(path, str(tmp))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
