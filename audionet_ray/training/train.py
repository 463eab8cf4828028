"""Training AudioNet with Ray Train: the per-worker loop and the TorchTrainer around it.

Read top to bottom: `train_loop_per_worker` is what every worker runs (data shard in,
metrics and checkpoints out); `build_trainer` wires it to Ray Train for one configuration;
`main` is `python -m audionet_ray.train` for users who already know their hyperparameters.
The search (tune.py) builds the same trainer once per trial.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from . import checkpoint
from ..core import ranking
from ..modeling import registry
from . import schema
from ..core import log as logs
from ..corpus.audio import SAMPLE_RATE
from ..pipeline.augment import Capture, Roles, augment, epoch_generator, standardise, stream_windows
from .config import ConfigError, RunSettings, TrainConfig
from ..modeling.costs import model_costs
from ..pipeline.data import torch_batches
from ..pipeline.dataset import PreparedDataset, fits_in_memory, split_sizes
from ..corpus.discover import SILENCE, DatasetError
from ..modeling.model import ModelConfig
from ..corpus.prepare import window_option
from ..core.ray_private import UserCallback, train_run_folder, without_dataset_manager
from ..core.storage import is_uri

log = logs.get(__name__)

IN_MEMORY_KEY = "in_memory"  # in the loop's config: build_trainer's choice, so that every worker follows it
LATENCY_KEY = "measure_latency"  # in the loop's config: rank 0 measures the model's latency per window (costs.py)


# ----------------------------------------------------------------------------- checkpoints

def resume_checkpoint() -> Checkpoint | None:
    """Train's latest checkpoint, or a newer whole one in this run's folder that Train never recorded.

    A driver killed after a checkpoint's upload but before Train wrote down that it exists leaves
    a complete checkpoint that `ray.train.get_checkpoint()` does not know; without this look the
    run would start again from epoch 1 and its last epochs of training would be lost.
    """
    found = ray.train.get_checkpoint()
    known = checkpoint.whole_epoch(found.filesystem, found.path) if found else -1
    fs, run_dir = train_run_folder()
    epoch, path = checkpoint.latest_whole(fs, run_dir)
    return Checkpoint(path=path, filesystem=fs) if epoch > known else found


def restore_rng(rng: dict) -> None:
    """Dropout's random stream, as it was when the checkpoint was written."""
    if "torch_rng" in rng:
        torch.set_rng_state(rng["torch_rng"])
    if "cuda_rng" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda_rng"])


# ----------------------------------------------------------------------------- the recipe

def class_weights(manifest: dict, classes: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Inverse class frequency over the manifest's train+val clips (scikit-learn's "balanced":
    a clip's weight averages 1 over the data), for class_balance. A class with no clip weighs as
    one with one."""
    counts = (manifest.get("counts") or {}).get("trainval") or {}
    n = torch.tensor([max(int(counts.get(c, 0)), 1) for c in classes], dtype=torch.float64)
    return (n.sum() / (len(classes) * n)).to(torch.float32).to(device)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """NAdam as the reference (weight decay as L2 in the gradient), or AdamW (decoupled decay)."""
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.NAdam
    return opt_cls(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """The multiple of `cfg.lr` for the optimizer step `step` (0-based) of `total`.

    A pure function of the step: the scheduler's state is only its step count, saved with the
    checkpoint. Past `total` (a streamed epoch a few batches longer than counted) it stays at
    its final value instead of failing as torch's OneCycleLR would.
    """
    if cfg.schedule == "cosine":
        warmup = round(cfg.warmup_epochs * total / cfg.epochs)
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if cfg.schedule == "onecycle":  # torch's OneCycleLR shape (pct_start 0.3, div 25, final div 1e4), no momentum cycling
        up = max(1, round(0.3 * total))
        lo, end = 1 / 25, 1 / 25 / 1e4
        if step < up:
            return lo + (1 - lo) * 0.5 * (1 - math.cos(math.pi * step / up))
        p = min(1.0, (step - up) / max(1, total - up))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * p))
    return 1.0


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule, stepped once per batch; None for the reference's constant lr."""
    if cfg.schedule == "constant":
        return None
    total = max(1, steps_per_epoch * cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg, step, total))


def steps_per_epoch(manifest: dict, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps per epoch on each worker, from the manifest's clips per speaker bucket:
    Ray splits the training rows equally between workers (dropping the remainder)."""
    n_train = split_sizes(manifest, cfg.train_ratio)["train"]
    return max(1, math.ceil((n_train // world) / max(1, cfg.batch_size // world)))


# ----------------------------------------------------------------------------- the detector's metric

def make_probe(cfg: TrainConfig, classes: list[str], noise):
    """Validation-speaker streams for `frr_at_target` (streaming.DetectorProbe), built once per run."""
    from ..detection.streaming import DetectorProbe, stream_keywords

    if cfg.detector_minutes <= 0:
        return None
    pcm, ids = PreparedDataset.open(cfg.data).arrays("val", cfg.train_ratio)
    return DetectorProbe(pcm, [classes[i] for i in ids], stream_keywords(classes, classes), noise,
                         cfg.detector_minutes, cfg.target_fa_per_hour, seed=cfg.seed)


def measure_probe(probe, model: torch.nn.Module, classes: list[str], cfg: TrainConfig, device, epoch: int) -> dict:
    """The model, as it is now, run as a detector over the probe's streams."""
    from ..detection.bundle import Bundle

    t0 = time.perf_counter()
    b = Bundle(path=Path(cfg.data), config={}, classes=classes, sample_rate=SAMPLE_RATE,
               clip_samples=model.config.clip_samples, model=model, device=device, std_floor=cfg.std_floor)
    with torch.no_grad():
        m = probe.measure(b)
    return {**m, "frr_epoch": epoch, "probe_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- the loop

def _world_sum(t: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


def _step_stats(logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """[loss sum, correct, count] kept on the device: no .item() sync per batch."""
    n = y.new_tensor(y.numel(), dtype=torch.float32)
    return torch.stack([loss.detach().float() * n, (logits.argmax(1) == y).sum().float(), n])


def _read_shard(cfg: TrainConfig, split: str, rank: int, world: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This worker's part of a split, read straight from the shards, as int16 clips and labels on `device`.
    Training parts are equal in size on every worker, so that DDP's steps stay in lockstep."""
    pcm, labels = PreparedDataset.open(cfg.data).arrays(split, cfg.train_ratio, rank, world, equal=split == "train")
    return torch.from_numpy(pcm).to(device), torch.from_numpy(labels).to(device)


def _use_cpus() -> int:
    """Torch threads = the CPUs Ray gave this worker: one thread on a 4-CPU reservation leaves three
    idle, and more threads than CPUs fight the other trials sharing the machine."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(cpus + 1e-9))
    torch.set_num_threads(threads)
    return threads


def _memory_batches(data: tuple[torch.Tensor, torch.Tensor], batch_size: int, shuffle_seed: int | None = None):
    """Batches of an in-memory shard, in a fresh random order per `shuffle_seed` (or in order)."""
    pcm, y = data
    order = None
    if shuffle_seed is not None:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(shuffle_seed)).to(pcm.device)
    for i in range(0, len(y), batch_size):
        idx = slice(i, i + batch_size) if order is None else order[i:i + batch_size]
        yield pcm[idx], y[idx]


class TrainSession:
    """What the loop needs from whoever runs it, here a Ray Train worker: its rank, device, latest
    checkpoint, data shards, and where each epoch's metrics (and checkpoint) go. The other runner is
    Tune's own trial process (trial_process.TrialSession), for one-worker trials."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1

    def resume(self) -> Checkpoint | None:
        return resume_checkpoint()

    def dataset_shard(self, name: str):
        return ray.train.get_dataset_shard(name)

    def report(self, metrics: dict, save) -> None:
        """One epoch's metrics; `save(folder)` writes a checkpoint into a folder (None: no checkpoint)."""
        if save is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if self.rank == 0:
                save(Path(tmp))
                ckpt = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def train_loop_per_worker(config: dict) -> None:
    """What every Ray Train worker runs."""
    fit(config, TrainSession())


def _loop_config(config: dict | TrainConfig, in_memory: bool | None,
                 measure_latency: bool) -> tuple[TrainConfig, bool | None, bool]:
    """The settings, whether the data is in memory, and whether to measure latency. A dict crossed a
    process boundary (Ray Train's train_loop_config, with build_trainer's choices in it) and is read
    back once here; a TrainConfig (the trial process's own, checked already) is used as it is."""
    if isinstance(config, TrainConfig):
        return config, in_memory, measure_latency
    config = dict(config)
    in_memory = config.pop(IN_MEMORY_KEY, in_memory)  # decided by build_trainer, which gave no Datasets then
    measure_latency = config.pop(LATENCY_KEY, measure_latency)
    return TrainConfig.from_dict(config), in_memory, measure_latency


def _gpu_math(device: torch.device) -> bool:
    """Whether this worker trains on a GPU; there, cuDNN picks its fastest kernels and matmuls use TF32."""
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return on_gpu


@dataclass
class Model:
    """The model and what trains it, built once per run: `net` as the session placed it (DDP on
    several workers), `bare` the module itself (what a checkpoint keeps and the probe runs), and
    where training goes on from (`start_epoch`, dropout's `rng`), after a resumed checkpoint."""

    config: ModelConfig
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    bare: torch.nn.Module | None = None
    start_epoch: int = 1
    rng: dict = field(default_factory=dict)


def _build_model(cfg: TrainConfig, manifest: dict, clip_samples: int, world: int) -> Model:
    """The model for the data's classes and window, with its optimizer and learning-rate schedule."""
    model_cfg = cfg.model_config(len(manifest["classes"]), clip_samples)
    torch.manual_seed(cfg.seed)  # the same initial weights on every worker and every rerun
    net = registry.build(getattr(cfg, "architecture", registry.DEFAULT), model_cfg)  # TrainConfig has no architecture yet
    opt = make_optimizer(net, cfg)
    return Model(model_cfg, net, opt, make_scheduler(opt, cfg, steps_per_epoch(manifest, cfg, world)))


def _resume(session, m: Model) -> None:
    """Weights, optimizer, schedule, epoch and random stream from the session's latest checkpoint, if any."""
    resumed = session.resume()
    if resumed:
        with resumed.as_directory() as d:
            meta = checkpoint.load(Path(d), m.net, m.opt, m.sched)
        m.start_epoch, m.rng = meta["epoch"] + 1, meta["rng"]


def _place(session, m: Model, world: int, device: torch.device) -> None:
    """The model on this worker's device (DDP when world > 1), the optimizer's state following it."""
    if world > 1 and device.type == "cuda" and m.config.norm == "batch":
        # Batch statistics over the global batch, as on one device. SyncBatchNorm runs on GPUs
        # only: on CPU each worker normalises by its own half-batch, and DDP broadcasts rank 0's
        # running statistics to the others every step, so all workers evaluate alike.
        m.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(m.net)  # same parameters: opt stays valid
    m.net = session.prepare_model(m.net)
    m.bare = m.net.module if hasattr(m.net, "module") else m.net
    for state in m.opt.state.values():  # optimizer state follows the weights to the device
        for k, v in state.items():
            if torch.is_tensor(v) and k != "step":
                state[k] = v.to(device)


@dataclass
class Recipe:
    """How a training batch becomes a loss: augmentation (noise, the far-field capture, a keyword
    task's detector windows), class weights, label smoothing and bf16 autocast."""

    cfg: TrainConfig
    noise: torch.Tensor
    cap: Capture | None
    silence: int  # babble never turns silence into speech; -1: no _silence_ class
    roles: Roles | None
    weights: torch.Tensor | None = None
    autocast: Any = None


def _recipe(cfg: TrainConfig, classes: list[str], noise_np, clip_samples: int, device: torch.device) -> Recipe:
    """The run's augmentation pieces on the device (the weights and autocast follow, see `fit`)."""
    noise = torch.from_numpy(noise_np).to(device)
    cap = Capture.of(cfg.augment, cfg.seed, clip_samples, device)  # None unless a far-field setting is on
    silence = classes.index(SILENCE) if SILENCE in classes else -1
    # a keyword task (--keywords): windows as a detector sees them, and a detector's metric; a classifier
    # whose data happens to have _unknown_ (prepare --words ... --unknown) trains as it always did
    roles = Roles.of(classes, device) if cfg.keyword_list else None
    return Recipe(cfg, noise, cap, silence, roles)


@dataclass
class Shards:
    """This worker's data, batched alike whether it sits in memory (clips and labels on the device)
    or streams from the session's Ray Data shards."""

    in_memory: bool
    train: Any
    val: Any
    batch_size: int  # per worker
    pin_memory: bool

    def train_batches(self, shuffle_seed: int):
        if self.in_memory:
            return _memory_batches(self.train, self.batch_size, shuffle_seed)
        return torch_batches(self.train, self.batch_size, shuffle_seed=shuffle_seed, pin_memory=self.pin_memory)

    def val_batches(self):
        size = max(self.batch_size, 256)
        if self.in_memory:
            return _memory_batches(self.val, size)
        return torch_batches(self.val, size, pin_memory=self.pin_memory)


def _shards(cfg: TrainConfig, session, manifest: dict, in_memory: bool | None, on_gpu: bool) -> Shards:
    """Where this worker's batches come from.

    Small data (the demo, a search on a subset) is read from the shards once and served from memory
    (on the GPU when training there): a Ray Data pipeline costs seconds to start and CPUs of its own,
    more than a whole epoch of a small model (benchmarks/bench_throughput.py). Larger data streams."""
    rank, world, device = session.rank, session.world, session.device
    batch_size = max(1, cfg.batch_size // world)
    if in_memory is None:
        in_memory = fits_in_memory(manifest, world)
    if in_memory:
        return Shards(True, _read_shard(cfg, "train", rank, world, device), _read_shard(cfg, "val", rank, world, device),
                      batch_size, on_gpu)
    return Shards(False, session.dataset_shard("train"), session.dataset_shard("val"), batch_size, on_gpu)


def _train_step(m: Model, r: Recipe, pcm: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One optimizer step on one batch; its [loss sum, correct, count]."""
    if r.roles is not None and r.cfg.augment.window_prob > 0:
        pcm, y = stream_windows(pcm, y, gen, r.roles, r.cfg.augment.window_prob)
    x = augment(pcm, gen, r.cfg.augment, r.noise, floor=r.cfg.std_floor, cap=r.cap, speech=y != r.silence)
    with r.autocast:
        logits = m.net(x)
    loss = F.cross_entropy(logits.float(), y, weight=r.weights, label_smoothing=r.cfg.label_smoothing)
    m.opt.zero_grad(set_to_none=True)
    loss.backward()
    m.opt.step()
    if m.sched is not None:
        m.sched.step()
    return _step_stats(logits, y, loss)


def _train_epoch(m: Model, r: Recipe, data: Shards, epoch: int, rank: int, device: torch.device) -> torch.Tensor:
    """One pass over this worker's training part, in this epoch's order and augmentation draws."""
    m.net.train()
    gen = epoch_generator(r.cfg.seed, epoch, rank, device)
    stats = torch.zeros(3, device=device)
    for pcm, y in data.train_batches(r.cfg.seed * 100_003 + epoch):
        pcm, y = pcm.to(device, non_blocking=True), y.to(device, non_blocking=True)
        stats += _train_step(m, r, pcm, y, gen)
    return stats


def _validate(m: Model, r: Recipe, data: Shards, device: torch.device) -> torch.Tensor:
    """This worker's validation part through the model as it is now: [loss sum, correct, count]."""
    m.net.eval()
    stats = torch.zeros(3, device=device)
    with torch.no_grad(), r.autocast:
        for pcm, y in data.val_batches():
            pcm, y = pcm.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = m.net(standardise(pcm, floor=r.cfg.std_floor)).float()
            stats += _step_stats(logits, y, F.cross_entropy(logits, y))
    return stats


def _epoch_metrics(epoch: int, stats: torch.Tensor, t0: float, train_seconds: float, threads: int,
                   start_epoch: int, costs: dict, detector: dict) -> dict:
    """One epoch's report, from the train and val sums of all workers (`stats`: 6 numbers each)."""
    tr_loss, tr_ok, tr_n, va_loss, va_ok, va_n = _world_sum(stats).tolist()
    return {
        "epoch": epoch,
        "train_loss": tr_loss / max(tr_n, 1),
        "train_accuracy": tr_ok / max(tr_n, 1),
        "val_loss": va_loss / max(va_n, 1),
        "val_accuracy": va_ok / max(va_n, 1),
        "clips_per_s": tr_n / train_seconds,
        "train_clips": int(tr_n),
        "val_clips": int(va_n),
        "torch_threads": threads,
        "epoch_seconds": time.perf_counter() - t0,
        "resumed_from": start_epoch - 1,  # 0: started fresh; k: continued from epoch k's checkpoint
        "node_id": ray.get_runtime_context().get_node_id(),  # where rank 0 ran: spread over a cluster
        **costs,
        **detector,  # keyword tasks: frr_at_target as of the last checkpoint epoch (frr_epoch)
    }


def _say_epoch(metrics: dict, epochs: int) -> None:
    log.info(f"epoch {metrics['epoch']}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
             f"train_acc {metrics['train_accuracy']:.3f}  val_loss {metrics['val_loss']:.4f}  "
             f"val_acc {metrics['val_accuracy']:.3f}  {metrics['clips_per_s']:.0f} clips/s")


def fit(config: dict | TrainConfig, session, in_memory: bool | None = None, measure_latency: bool = False) -> None:
    """The training loop, whoever runs it (`session`: TrainSession or trial_process.TrialSession):
    set up the model, the recipe and the data once, then train, validate and report each epoch."""
    cfg, in_memory, measure_latency = _loop_config(config, in_memory, measure_latency)
    threads = _use_cpus()
    rank, world, device = session.rank, session.world, session.device
    on_gpu = _gpu_math(device)
    dataset = PreparedDataset.open(cfg.data)
    manifest = dataset.manifest  # read once per process
    classes = manifest["classes"]
    clip_samples = cfg.data_clip_samples(manifest, cfg.data)  # the data's window: the model is built for it
    m = _build_model(cfg, manifest, clip_samples, world)
    # what the model costs to run, a search's second objective: the same every epoch
    costs = model_costs(m.config, latency=measure_latency and rank == 0, model=m.net)
    _resume(session, m)
    _place(session, m, world, device)
    noise_np = dataset.noise()
    recipe = _recipe(cfg, classes, noise_np, clip_samples, device)
    probe = make_probe(cfg, classes, noise_np) if recipe.roles is not None and rank == 0 else None
    recipe.weights = class_weights(manifest, classes, device) if cfg.class_balance else None
    recipe.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and cfg.bf16)
    data = _shards(cfg, session, manifest, in_memory, on_gpu)

    restore_rng(m.rng)  # last, so that nothing above draws from the restored stream
    detector: dict = {}
    for epoch in range(m.start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_stats = _train_epoch(m, recipe, data, epoch, rank, device)
        train_seconds = time.perf_counter() - t0
        val_stats = _validate(m, recipe, data, device)
        checkpointing = epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs
        # the detector's metric where a checkpoint keeps the weights, and in the first epoch of a run (a
        # start or a resume), so that every epoch's report carries it (Tune needs its metric in each)
        if probe is not None and (checkpointing or not detector):
            detector = measure_probe(probe, m.bare, classes, cfg, device, epoch)
        metrics = _epoch_metrics(epoch, torch.cat([train_stats, val_stats]), t0, train_seconds, threads,
                                 m.start_epoch, costs, detector)
        if rank == 0:
            _say_epoch(metrics, cfg.epochs)
        session.report(metrics, (lambda d: checkpoint.save(d, m.bare, m.opt, epoch, cfg, m.config, classes, metrics,
                                                           m.sched)) if checkpointing else None)


# ----------------------------------------------------------------------------- the trainer

class MetricsLog(UserCallback):
    """Every epoch's metrics as a line of `<run>/metrics.jsonl`: Train's Result keeps only the
    reports that carried a checkpoint, and learning curves need them all."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({**metrics[0], "time": time.time()}) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def build_trainer(cfg: TrainConfig, run: RunSettings, callbacks: list | None = None,
                  measure_latency: bool = False) -> TorchTrainer:
    """One TorchTrainer run. Same storage and name again = resume from its latest checkpoint.
    `measure_latency`: every epoch's metrics carry the model's latency per window (a search's objective)."""
    cfg.validate()
    ray.data.DataContext.get_current().enable_progress_bars = False  # Tune/Train show progress
    dataset = PreparedDataset.open(cfg.data)
    cfg.data_clip_samples(dataset.manifest, cfg.data)  # a clip_samples setting that is not the data's: one line, here
    in_memory = dataset.fits_in_memory(run.workers)
    if in_memory:  # each worker reads its part itself (PreparedDataset.arrays): no Ray Data pipeline to start
        dataset.check_train_ratio(cfg.train_ratio, cfg.data)
        datasets = None
    else:
        datasets = dataset.ray_datasets(cfg.train_ratio, shuffle_files=not cfg.deterministic)
    data_config = None
    if cfg.deterministic:
        from ray.data import ExecutionOptions

        data_config = DataConfig(execution_options=ExecutionOptions(preserve_order=True))
    use_gpu = run.gpus_per_worker > 0
    resources = {"CPU": run.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = run.gpus_per_worker
    # By reference to the importable module, also when this file runs as __main__ (whose
    # functions cloudpickle would copy by value, dragging torch's modules along).
    from audionet_ray.training.train import train_loop_per_worker as loop

    return without_dataset_manager(TorchTrainer(  # data in memory: no Ray Datasets, no DatasetManager
        loop,
        train_loop_config={**cfg.to_dict(), IN_MEMORY_KEY: in_memory, LATENCY_KEY: measure_latency},
        scaling_config=ScalingConfig(num_workers=run.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run.name,
            storage_path=storage_uri(run.storage),
            checkpoint_config=CheckpointConfig(
                num_to_keep=run.keep_checkpoints,
                checkpoint_score_attribute=run.metric,  # what the search ranks by: its best is never deleted
                checkpoint_score_order=run.mode,
            ),
            failure_config=FailureConfig(max_failures=run.max_failures),
            callbacks=[*(callbacks or []), *_local_log(run)] or None,
        ),
        datasets=datasets,
        **({"dataset_config": data_config} if data_config else {}),
    ))


def _local_log(run: RunSettings) -> list:
    if is_uri(run.storage):
        return []  # on shared object storage Tune's own result files are the record
    return [MetricsLog(str(Path(storage_uri(run.storage)) / run.name / "metrics.jsonl"))]


def storage_uri(storage: str) -> str:
    """Local paths made absolute (Ray needs that); URIs such as s3:// pass through."""
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    """`train`'s options: --data, --keywords and --window say what data; one option per setting of
    TrainConfig (the model's and the augmentation's included), made from its fields (schema.py);
    then where and on what it runs."""
    r = RunSettings()
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.train", formatter_class=logs.HelpFormatter,
                                 description="Train AudioNet once with Ray Train (no search).")
    ap.add_argument("--data", required=True, help="a dataset root (prepared on first use) or a prepared folder")
    ap.add_argument("--keywords", help="a keyword detector: these words (comma-separated), _unknown_ and _silence_; "
                                       "checkpoints kept by frr_at_target")
    ap.add_argument("--window", metavar="SECONDS", help="a dataset root's clip length when it is prepared "
                                                        "(default: the source's wakeword.json, else 1 s)")
    schema.add_options(ap, TrainConfig, skip=("data", "keywords"))
    ap.add_argument("--workers", type=int, default=r.workers, help="Ray Train workers (one per GPU)")
    ap.add_argument("--gpus-per-worker", type=float, default=None, help="default: 1 if Ray sees a GPU, else 0")
    ap.add_argument("--cpus-per-worker", type=float, default=r.cpus_per_worker, help="CPUs each worker holds")
    ap.add_argument("--max-failures", type=int, default=r.max_failures, help="worker crashes to recover from")
    ap.add_argument("--storage", default=r.storage,
                    help="where runs and checkpoints go: a local folder, NFS or s3:// (default: ./runs, as tune's; "
                         "a run made under the old default is still reached with --storage ~/audionet_runs)")
    ap.add_argument("--name", default=r.name, help="run name; the same name again resumes that run")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                    help="attach to a running Ray cluster ('auto'; default: $RAY_ADDRESS, else a local Ray)")
    logs.add_option(ap)
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The settings the command line gave, over TrainConfig's defaults (and a keyword task's,
    config.KEYWORD_DEFAULTS, where it gave none), checked once: every mistake in one line."""
    given = schema.values(args, TrainConfig, given_only=True)
    if args.keywords is None:
        return TrainConfig.from_dict(given)
    from .config import keywords_option, with_keyword_defaults

    return TrainConfig.from_dict({**with_keyword_defaults(given), "keywords": ",".join(keywords_option(args.keywords))})


def main(argv: list[str] | None = None) -> int:
    """`python -m audionet_ray.train`: the options checked, the data prepared, one run trained."""
    from ..pipeline.data import ensure_prepared

    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        cfg = config_from_args(args)  # before preparing: a mistyped option should not wait for a dataset's decoding
        window = None if args.window is None else window_option(args.window)
        prepared = ensure_prepared(args.data, keywords=cfg.keyword_list or None, window=window)
        cfg.data = str(prepared)
        PreparedDataset.open(prepared).check_train_ratio(cfg.train_ratio, prepared)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ..core.ray_setup import init_ray

    init_ray(args.address)
    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    run = RunSettings(storage=args.storage, name=args.name, workers=args.workers, gpus_per_worker=gpus,
                      cpus_per_worker=args.cpus_per_worker, max_failures=args.max_failures,
                      **({"metric": "frr_at_target", "mode": "min"} if cfg.keyword_list else {}))
    result = build_trainer(cfg, run).fit()
    if result.error:
        print(f"error: training failed: {result.error}", file=sys.stderr)
        return 1
    _say_result(result, run)
    return 0


def _say_result(result, run: RunSettings) -> None:
    """The run's last epoch, its best checkpoint by the run's metric (ranking.best) and its folder."""
    m = result.metrics or {}
    log.info(f"done: epoch {m.get('epoch')}  val_accuracy {m.get('val_accuracy', float('nan')):.3f}")
    best = ranking.best(result.best_checkpoints, run.metric, run.mode, key=lambda cm: cm[1].get(run.metric))
    if best is not None:
        ckpt, bm = best
        log.info(f"best checkpoint ({run.metric} {bm[run.metric]:.3f}): {ckpt.path}")
    log.info(f"run folder: {result.path}")


if __name__ == "__main__":
    sys.exit(main())
