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
import re
from pathlib import Path

import pyarrow.fs as pafs

from . import log

logger = log.get(__name__)


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



# ----------------------------------------------------------------------------- whole files, hidden passwords

CRASH_ENV = "AUDIONET_CRASH_AT"  # tests: the name of a step at which the process SIGKILLs itself


def crash_point(step: str) -> None:
    """Where a test may kill this process (AUDIONET_CRASH_AT=step), to show that a kill there loses nothing."""
    if os.environ.get(CRASH_ENV) == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; a filesystem that cannot fsync a folder is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: "Path | UriPath | str", data: str | bytes) -> None:
    """Write a file whole or not at all: a temporary file beside it, fsynced, then renamed over it,
    so that a crash, a full disk or a reader never sees half of it. An object store (a URI)
    writes an object whole already."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    path = location(path)
    if isinstance(path, UriPath):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# scheme://user:password@...: the password as SQLAlchemy reads it (engine/url.py's pattern)
_PASSWORD = re.compile(r"^(?P<head>[\w+]+://[^:/@]*:)(?P<password>[^@]+)(?P<at>@)")
HIDDEN = "***"


def redact(url: str | None) -> str | None:
    """A storage URL as it may be shown or shared: its password (postgresql://user:pass@host/db)
    replaced by ***. The one place that hides a password; search.json, the terminal and
    report.html all go through it."""
    if not url:
        return url
    return _PASSWORD.sub(lambda m: m["head"] + HIDDEN + m["at"], url, count=1)


def hides_password(url: str | None) -> bool:
    """Whether `url` is a redacted one: its password is *** (search.json's, for instance)."""
    m = _PASSWORD.match(url or "")
    return bool(m) and m["password"] == HIDDEN


def redact_text(text: str, url: str | None) -> str:
    """`text` (e.g. an error message) with `url`'s password hidden wherever it appears."""
    m = _PASSWORD.match(url or "")
    if not m or not m["password"]:
        return text
    return text.replace(url, redact(url)).replace(m["password"], HIDDEN)


# ----------------------------------------------------------------------------- replacing a folder whole

def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or
    the filesystem cannot."""
    import ctypes
    import errno

    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def leftovers(out: Path) -> list[tuple[Path, str, int]]:
    """(folder, "tmp" or "old", pid) for what `replace_folder` leaves beside `out` while it works."""
    found, prefix = [], f".{out.name}."
    for p in out.parent.iterdir():
        kind, _, pid = p.name[len(prefix):].rpartition("-")
        if p.name.startswith(prefix) and kind in ("tmp", "old") and pid.isdigit() and p.is_dir():
            found.append((p, kind, int(pid)))
    return found


def recover_folder(out: Path) -> None:
    """Undo what a killed `replace_folder` left: the old folder it hid is put back when `out` is
    missing, and every other leftover of a process no longer running is deleted."""
    import shutil

    for p, kind, pid in sorted(leftovers(out), key=lambda x: x[1] != "old"):
        if pid_alive(pid) and pid != os.getpid():
            continue  # another export at work
        if kind == "old" and not out.exists():
            os.rename(p, out)
            logger.warning(f"note: {out} restored from {p.name}, left by an export that was killed")
        else:
            shutil.rmtree(p, ignore_errors=True)
    fsync_dir(out.parent)


def replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder `new` at `out`, replacing what is there, so that at every moment
    `out` holds the old folder or the new one, whole.

    On Linux the two are swapped in one step (renameat2), and the old one, now at `new`, is
    deleted. Where that is not supported (another OS, some network filesystems) the old folder
    is first renamed aside to `.NAME.old-PID`: a kill before the new one is in place leaves no
    `out` for a moment, and `recover_folder` (run by the next writer) puts the old one back.
    """
    import shutil

    if not out.exists():
        os.rename(new, out)
    elif _exchange(new, out):
        crash_point("replace:swapped")
        shutil.rmtree(new, ignore_errors=True)
    else:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        crash_point("replace:hidden")
        os.rename(new, out)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
