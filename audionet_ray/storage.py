"""Paths that may be URIs: a prepared dataset or an experiment on s3://, gs:// or any pyarrow filesystem.

On a cluster every node reads the same shards and writes checkpoints where the head can find
them, so both live on shared storage (Ray 2.60 requires it for multi-node checkpointing).
`location(p)` keeps a local path a `pathlib.Path`, as before; a URI becomes a `UriPath`, which
does the few Path operations this package uses (`/`, name, parent, exists, read/write, mkdir,
glob) through `pyarrow.fs` -- the same filesystem layer Ray Data, Tune and Train use, so a URI
that works here works for them, with the same credentials (an instance profile on AWS).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import os
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(p: str | os.PathLike) -> bool:
    return isinstance(p, UriPath) or "://" in str(p)


def location(p: str | os.PathLike) -> "Path | UriPath":
    """A local path (user's ~ expanded) or a URI such as s3://bucket/prepared."""
    if isinstance(p, UriPath):
        return p
    return UriPath(str(p)) if is_uri(p) else Path(p).expanduser()


@functools.lru_cache(maxsize=16)
def _filesystem(root_uri: str) -> tuple[pafs.FileSystem, str]:
    """One filesystem per bucket (S3 looks up the bucket's region once) and the bucket's path."""
    return pafs.FileSystem.from_uri(root_uri)


class UriPath:
    """The subset of pathlib.Path this package needs, for a URI on a pyarrow filesystem."""

    def __init__(self, uri: str, _fs: pafs.FileSystem | None = None, _path: str | None = None):
        self._uri = uri.rstrip("/") if not uri.endswith(":///") else uri
        if _fs is None:
            scheme, rest = self._uri.split("://", 1)
            bucket, _, key = rest.partition("/")
            _fs, root = _filesystem(f"{scheme}://{bucket}/")
            _path = f"{root.rstrip('/')}/{key}"
        self._fs, self._path = _fs, _path.rstrip("/") or "/"

    # ---- names
    def __truediv__(self, part: str | os.PathLike) -> "UriPath":
        part = str(part).strip("/")
        return UriPath(f"{self._uri.rstrip('/')}/{part}" if not self._uri.endswith(":///") else self._uri + part,
                       self._fs, f"{self._path.rstrip('/')}/{part}")

    def __str__(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"UriPath({self._uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, UriPath) and other._uri == self._uri

    def __lt__(self, other: "UriPath") -> bool:
        return self._uri < other._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    @property
    def name(self) -> str:
        return self._path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "UriPath":
        if self._path == "/" or "/" not in self._path:
            return self  # the root, or the bucket itself
        uri = self._uri.rsplit("/", 1)[0]
        return UriPath(uri + "/" if uri.endswith("://") else uri, self._fs, self._path.rsplit("/", 1)[0] or "/")

    def expanduser(self) -> "UriPath":
        return self

    def resolve(self) -> "UriPath":
        return self

    # ---- queries
    def _type(self) -> pafs.FileType:
        return self._fs.get_file_info(self._path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def size(self) -> int:
        info = self._fs.get_file_info(self._path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(str(self))
        return info.size

    def iterdir(self):
        for info in self._fs.get_file_info(pafs.FileSelector(self._path, allow_not_found=True)):
            yield self / info.base_name

    def glob(self, pattern: str):
        """Matches segment by segment, like Path.glob (no `**`)."""
        parts = pattern.strip("/").split("/")
        found = self._fs.get_file_info(pafs.FileSelector(self._path, recursive=True, allow_not_found=True))
        base = len(self._path.rstrip("/")) + 1
        for info in found:
            rel = info.path[base:].split("/")
            if len(rel) == len(parts) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, parts)):
                yield self / "/".join(rel)

    # ---- reading and writing
    def read_bytes(self) -> bytes:
        with self._fs.open_input_stream(self._path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        with self._fs.open_output_stream(self._path) as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def open(self, mode: str = "r", encoding: str = "utf-8", newline: str | None = None):
        """Text or binary, read or write (object stores write the whole object on close)."""
        stream = self._fs.open_output_stream(self._path) if "w" in mode else self._fs.open_input_stream(self._path)
        return stream if "b" in mode else io.TextIOWrapper(stream, encoding=encoding, newline=newline)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.exists() and not exist_ok:
            raise FileExistsError(self._uri)
        self._fs.create_dir(self._path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self._fs.delete_file(self._path)

    # ---- between here and there
    def download(self, dest: str | os.PathLike) -> Path:
        """Copy this file or folder to a local path (made if needed); returns it."""
        dest = Path(dest)
        (dest.parent if self.is_file() else dest).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self._path, str(dest), source_filesystem=self._fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return dest

    def upload_from(self, src: str | os.PathLike) -> "UriPath":
        """Copy a local file or folder here; returns self."""
        (self.parent if Path(src).is_file() else self).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(str(Path(src).resolve()), self._path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self._fs)
        return self


def local_cache(uri: "UriPath | str", kind: str) -> Path:
    """A stable local folder for copies of `uri` (same URI, same folder)."""
    root = Path(os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser()
    key = hashlib.sha1(str(uri).encode()).hexdigest()[:10]
    return root / kind / f"{location(uri).name}-{key}"


def publish(src: str | os.PathLike, dest: str | os.PathLike, last: str = "manifest.json") -> None:
    """Copy a local folder to `dest` (a URI or a folder), the file named `last` at the end.

    A prepared dataset counts as complete once its manifest exists, so it goes up last: a
    reader never finds a manifest whose shards are still on their way.
    """
    src, target = Path(src), location(dest)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for f in sorted(files, key=lambda p: p.name == last):
        rel = f.relative_to(src).as_posix()
        if isinstance(target, UriPath):
            (target / rel).upload_from(f)
        else:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(f.read_bytes())

