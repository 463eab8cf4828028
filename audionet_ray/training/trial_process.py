"""One-worker trials trained in Tune's own trial process: no TorchTrainer, no processes to start.

A TorchTrainer per trial starts about seven processes (Train's controller, its worker and helper
actors): ~20 CPU-seconds and 20-30 s before a trial's first step on 2 cores (docs/performance.md,
"Search throughput"). A trial of one worker whose data fits in memory needs none of them: the same
loop (`train.fit`) runs in the process Tune started for the trial, and with Tune's `reuse_actors`
that process, torch and the loop already imported, serves the next trial too.

The run folder is the one a TorchTrainer would use (train_runs/<trial id>/): the same checkpoint
folders (checkpoint.py) and metrics.jsonl, kept the same way (the best `keep_checkpoints` by the
search's metric, and the latest), so export, the report and a resumed search (either way) read it
alike. A trial Tune stops (ASHA, the budget) ends at its next report, which is where it waits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import torch

from . import checkpoint
from .config import RunSettings, TrainConfig
from .train import fit, storage_uri


class TrialSession:
    """train.fit's runner inside Tune's trial process (the other is train.TrainSession)."""

    rank, world = 0, 1

    def __init__(self, run: RunSettings):
        self.run_dir = Path(storage_uri(run.storage)) / run.name
        on_gpu = run.gpus_per_worker > 0 and torch.cuda.is_available()  # Ray set CUDA_VISIBLE_DEVICES
        self.device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
        self.keep, self.metric, self.mode = run.keep_checkpoints, run.metric, run.mode

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def resume(self):
        from ray.train import Checkpoint

        for torn in self.run_dir.glob(".writing_*"):  # a save cut short by a kill: never a checkpoint
            shutil.rmtree(torn, ignore_errors=True)
        fs = pafs.LocalFileSystem()
        _, path = checkpoint.latest_whole(fs, str(self.run_dir))
        return Checkpoint(path=path, filesystem=fs) if path else None

    def dataset_shard(self, name: str):
        raise RuntimeError("a trial trained in Tune's process reads its data into memory (train.fit's in_memory)")

    def report(self, metrics: dict, save) -> None:
        """Checkpoint (written aside, then renamed: never half a folder), metrics line, then Tune."""
        from ray import tune

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if save is not None:
            t0 = time.perf_counter()
            tmp = Path(tempfile.mkdtemp(prefix=".writing_", dir=self.run_dir))
            save(tmp)
            final = self.run_dir / f"checkpoint_epoch_{metrics['epoch']:04d}"
            if final.exists():  # an epoch trained again after a crash between the save and the report
                shutil.rmtree(final)
            os.replace(tmp, final)
            self.prune()
            metrics = {**metrics, "checkpoint_seconds": time.perf_counter() - t0}  # what checkpointing costs
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({**metrics, "time": time.time()}) + "\n")
        tune.report(metrics)

    def prune(self) -> None:
        """Keep the latest checkpoint and the best `keep` by the metric, as Train's CheckpointConfig does."""
        found = []
        for d in self.run_dir.glob("checkpoint_*"):
            meta, _ = checkpoint.read_meta(d)
            if meta is not None:
                found.append((d.name, d, meta))
        latest = max(found, key=lambda c: c[2].get("epoch", 0), default=None)
        kept = {latest[0]} if latest else set()
        rest = list(found)
        for _ in range(self.keep):
            top = checkpoint.best(rest, self.metric, self.mode)
            if top is None:
                break
            kept.add(top[0])
            rest.remove(top)
        for name, d, _ in found:
            if name not in kept:
                shutil.rmtree(d, ignore_errors=True)


def fit_in_trial(cfg: TrainConfig, run: RunSettings, measure_latency: bool = False) -> None:
    """One trial's whole training, here in Tune's trial process (data in memory, one worker). `cfg`
    is checked already (TrainConfig.from_dict, in run_trial) and goes to the loop as it is."""
    fit(cfg, TrialSession(run), in_memory=True, measure_latency=measure_latency)
