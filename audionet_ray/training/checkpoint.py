"""One checkpoint folder: what a training run writes every few epochs, and what resume, the
search, export and the report read. The only module that knows its files:

    model.pt         the model's state_dict (loads with weights_only=True), batch norm's statistics included
    train_state.pt   optimizer, LR scheduler, epoch and RNG states: what resume needs
    meta.json        epoch, classes, model and train config, metrics, and each file's size in bytes
                     and sha256

A checkpoint is *whole* when meta.json parses, names its epoch, lists model.pt, and every file it
lists is there at the listed size and with the listed sha256 (checkpoints written before the
hashes were recorded are judged by size alone). A crash during an upload can leave a meta.json
beside a cut-short model.pt, and a bad disk or copy a file of the right size with wrong bytes;
such a checkpoint is never resumed from, exported or picked as the best.
The same rule holds on a local folder, a `storage.UriPath` and a pyarrow filesystem.

torch is imported only to save and load, so that finding checkpoints loads nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from ..core import ranking

if TYPE_CHECKING:
    import torch

    from .config import TrainConfig
    from ..modeling.model import ModelConfig
    from ..core.storage import UriPath

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"


def save(d: Path, model: "torch.nn.Module", opt: "torch.optim.Optimizer", epoch: int, cfg: "TrainConfig",
         model_cfg: "ModelConfig", classes: list[str], metrics: dict,
         sched: "torch.optim.lr_scheduler.LRScheduler | None" = None) -> None:
    """Write a whole checkpoint into the folder `d` (meta.json last: it vouches for the others).
    meta.json records the model's architecture (registry.name_of), which export builds again."""
    import torch

    from ..modeling.registry import name_of

    torch.save(model.state_dict(), d / MODEL_FILE)
    state = {"optimizer": opt.state_dict(), "epoch": epoch, "torch_rng": torch.get_rng_state()}
    if sched is not None:
        state["scheduler"] = sched.state_dict()
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, d / STATE_FILE)
    files = (MODEL_FILE, STATE_FILE)
    meta = {"epoch": epoch, "classes": classes, "architecture": name_of(model), "model": model_cfg.to_dict(),
            "train_config": cfg.to_dict(), "metrics": metrics,
            "files": {f: (d / f).stat().st_size for f in files},
            "sha256": {f: sha256(lambda: open(d / f, "rb")) for f in files}}  # noqa: B023 - called at once
    (d / META_FILE).write_text(json.dumps(meta, indent=1))


def load_weights(d: Path) -> dict:
    """model.pt's state_dict, on the CPU."""
    import torch

    return torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True)


def load(d: Path, model: "torch.nn.Module", opt: "torch.optim.Optimizer | None" = None,
         sched: "torch.optim.lr_scheduler.LRScheduler | None" = None) -> dict:
    """Restore weights (and the optimizer and LR scheduler when given); returns meta.json's
    content, plus the saved RNG states under "rng" for restoring right before training continues."""
    import torch

    model.load_state_dict(load_weights(d))
    meta = json.loads((d / META_FILE).read_text())
    if opt is not None:
        state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        if sched is not None and "scheduler" in state:
            sched.load_state_dict(state["scheduler"])
        meta["rng"] = {k: state[k] for k in ("torch_rng", "cuda_rng") if k in state}
    return meta


def sha256(open_file: Callable[[], BinaryIO]) -> str:
    """The sha256 of what `open_file()` reads: a local file, a URI's or a pyarrow filesystem's alike."""
    h = hashlib.sha256()
    with open_file() as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def why_not_whole(meta: object, size_of: Callable[[str], int], open_file: Callable[[str], BinaryIO]) -> str:
    """"" for a whole checkpoint, else why not; `size_of(name)` gives a file's size and `open_file(name)`
    opens it to read (OSError: missing). The sizes are checked first: the hashes read every byte."""
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int) or not isinstance(meta.get("files"), dict):
        return f"{META_FILE} is not a checkpoint's"
    if not isinstance(meta.get("sha256", {}), dict):
        return f"{META_FILE}'s sha256 is not a checkpoint's"
    if MODEL_FILE not in meta["files"]:
        return f"{META_FILE} does not list {MODEL_FILE}"
    for name, size in meta["files"].items():
        try:
            got = size_of(name)
        except OSError:
            return f"{name} is missing"
        if got != size:
            return f"{name} is cut short ({got} of {size} bytes)"
    for name, digest in meta.get("sha256", {}).items():
        try:
            got = sha256(lambda: open_file(name))
        except OSError:
            return f"{name} is missing"
        if got != digest:
            return f"{name} is corrupted (its sha256 is not the one {META_FILE} records)"
    return ""


def read_meta(ckpt: "Path | UriPath") -> tuple[dict | None, str]:
    """A checkpoint folder's meta.json if the checkpoint is whole, else (None, why not)."""
    from ..core.storage import UriPath

    try:
        meta = json.loads((ckpt / META_FILE).read_text())
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"{META_FILE} is missing or cut short"
    uri = isinstance(ckpt, UriPath)
    why = why_not_whole(meta, lambda n: (ckpt / n).size() if uri else (ckpt / n).stat().st_size,
                        lambda n: (ckpt / n).open("rb") if uri else open(ckpt / n, "rb"))
    return (None, why) if why else (meta, "")


def whole_epoch(fs, path: str) -> int:
    """The epoch of the checkpoint at `path` on the pyarrow filesystem `fs` if it is whole, else -1."""
    import pyarrow.fs as pafs

    try:
        with fs.open_input_stream(f"{path}/{META_FILE}") as f:
            meta = json.loads(f.read())
        listed = meta.get("files") if isinstance(meta, dict) else None
        infos = {i.base_name: i for i in fs.get_file_info([f"{path}/{n}" for n in listed])} if isinstance(listed, dict) else {}
    except (OSError, ValueError):  # unreadable or cut short
        return -1

    def size_of(name: str) -> int:
        info = infos.get(name)
        if info is None or info.type != pafs.FileType.File:
            raise OSError(name)
        return info.size

    return -1 if why_not_whole(meta, size_of, lambda n: fs.open_input_stream(f"{path}/{n}")) else meta["epoch"]


def latest_whole(fs, run_dir: str) -> tuple[int, str | None]:
    """(epoch, path) of the newest whole checkpoint_* folder in a Train run's folder on the pyarrow
    filesystem `fs`; (-1, None) when there is none."""
    import pyarrow.fs as pafs

    found: tuple[int, str | None] = (-1, None)
    for info in fs.get_file_info(pafs.FileSelector(run_dir, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
            epoch = whole_epoch(fs, info.path)
            if epoch > found[0]:
                found = (epoch, info.path)
    return found


def is_checkpoint(folder: Path) -> bool:
    """Whether `folder` looks like a checkpoint (whole or not)."""
    return (folder / MODEL_FILE).is_file() and (folder / META_FILE).is_file()


def best(found: list[tuple], metric: str, mode: str) -> tuple | None:
    """The best of (name, folder, meta) checkpoints by `metric` (the later epoch on a tie); None
    when none recorded it (ranking.best, the one definition of "best")."""
    return ranking.best(found, metric, mode, key=lambda c: metric_of(c[2], metric), then=lambda c: c[2].get("epoch", 0))


def metric_of(meta: dict, metric: str) -> object:
    """A checkpoint's recorded value of `metric` (None when it recorded none)."""
    return (meta.get("metrics") or {}).get(metric)
