"""An exported model, checked on load: weights, config and ONNX graph in one folder.

A bundle is what leaves the experiment directory (see export.py): `model.safetensors` (plain
tensors, no pickle), `config.json` (model shape, class names, preprocessing, provenance, the
detector's calibrated operating point, deployment figures, and a sha256 of every file and of
itself), `model.onnx` and `model.int8.onnx` (static int8 quantisation). `write_config` here is
the one place config.json is written, so its checksums cannot be forgotten. `load()` refuses a bundle whose files do
not match their checksums, or one written by a newer format than this package reads, with one
line saying what to do; what it returns knows how to turn waveforms into what AudioNet saw in
training (int16-scale samples, one window of `clip_samples`: one second unless the data was
prepared with another --window, standardised per clip).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..corpus.audio import CLIP_SAMPLES, SAMPLE_RATE, WINDOW_RANGE_S, fit_length, to_int16
from ..pipeline.augment import standardise
from ..corpus.discover import SILENCE, UNKNOWN
from ..core.errors import ConfigError
from ..modeling.registry import model_class, recorded

KIND = "audionet-ray-bundle"
FORMAT = 1  # bump when a reader of the old format could misread a new bundle
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
BACKENDS = ("torch", "onnx", "int8")
MODEL_SUFFIXES = {".onnx", ".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle"}
NOT_KEYWORDS = (SILENCE, UNKNOWN)  # classes that are never reported as detected keywords
STANDARDISE_EPS = 1e-5  # as in augment.standardise, used in training and validation


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line that says why and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_digest(config: dict) -> str:
    """sha256 of config.json's content without its own checksum field (canonical JSON)."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def preprocessing_config(std_floor: float = 0.0, clip_samples: int = CLIP_SAMPLES) -> dict:
    """What a bundle's config.json says about its input; mirrors the training data path, so that
    a program outside this project can run model.onnx on raw audio from this alone. The window
    (`clip_samples`, `window_seconds`) is the prepared data's, which the model was built for."""
    standardise = {"per_clip": True, "formula": "(x - mean(x)) / (std(x) + eps)", "std": "unbiased (n - 1)",
                   "eps": STANDARDISE_EPS}
    if std_floor > 0:  # keyword models: quiet windows stay quiet
        standardise.update(formula="(x - mean(x)) / (max(std(x), floor) + eps)", floor=float(std_floor))
    return {
        "sample_rate": SAMPLE_RATE,
        "clip_samples": clip_samples,
        "window_seconds": clip_samples / SAMPLE_RATE,
        "channels": "mono: channels are averaged",
        "resample": "soxr HQ to sample_rate",
        "sample_scale": "int16 units: float audio in [-1, 1] times 32768, rounded",
        "fit": "shorter clips zero-padded at the end, longer ones cut (predict scans long audio instead)",
        "standardise": standardise,
    }


@dataclass
class Bundle:
    """A loaded bundle: the model (torch, or an onnxruntime session) plus its preprocessing."""

    path: Path
    config: dict
    classes: list[str]
    sample_rate: int
    clip_samples: int
    backend: str = "torch"  # or "onnx" (model.onnx), "int8" (model.int8.onnx), both with onnxruntime
    model: torch.nn.Module | None = None  # eval mode (its config.json's architecture); None with the onnx backends
    session: object | None = None  # onnxruntime.InferenceSession with the onnx backends
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    std_floor: float = 0.0  # preprocessing's standardise floor (int16 units; 0: plain standardisation)

    def preprocess(self, clips: np.ndarray) -> torch.Tensor:
        """Waveforms -> standardised float32 (B, clip_samples), exactly as training saw them.

        `clips` is one clip (N,) or a batch (B, N); int16 is taken as is, float audio in [-1, 1]
        is scaled to int16 units first (like prepared data). Other lengths are padded or cut.
        """
        x = np.asarray(clips)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"expected one clip (N,) or a batch (B, N), got shape {x.shape}")
        if x.shape[1] != self.clip_samples:
            x = np.stack([fit_length(row, self.clip_samples) for row in x]) if len(x) else x[:, :0]
        if x.dtype != np.int16:
            x = to_int16(x.astype(np.float32))
        return standardise(torch.from_numpy(np.ascontiguousarray(x)), STANDARDISE_EPS, self.std_floor)

    @torch.no_grad()
    def predict_logits(self, clips: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits (B, n_classes) as float32 numpy for raw clips (see `preprocess`)."""
        x = self.preprocess(clips)
        out = []
        for i in range(0, len(x), batch_size):
            part = x[i:i + batch_size]
            if self.backend in ("onnx", "int8"):
                out.append(self.session.run(None, {self.config["onnx"]["input"]: part.numpy()})[0])
            else:
                out.append(self.model(part.to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def predict_proba(self, clips: np.ndarray, batch_size: int = 256) -> np.ndarray:
        logits = self.predict_logits(clips, batch_size)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def read_config(path: str | Path) -> dict:
    """config.json of a bundle folder, checked: kind, format version and its own checksum."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder (export one with `python -m audionet_ray.export EXPERIMENT_DIR OUT_DIR`)")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise BundleError(f"{path}: not a bundle (no {CONFIG_FILE}); export one with `python -m audionet_ray.export EXPERIMENT_DIR OUT_DIR`")
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{cfg_file}: unreadable ({type(e).__name__}): broken bundle, export it again") from None
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise BundleError(f"{cfg_file}: not an audionet-ray bundle config (kind is not {KIND!r})")
    fmt = config.get("format")
    if not isinstance(fmt, int) or fmt < 1:
        raise BundleError(f"{cfg_file}: bad format version {fmt!r}: broken bundle, export it again")
    if fmt > FORMAT:
        raise BundleError(f"{path}: bundle format {fmt} was written by a newer audionet-ray "
                          f"({config.get('package_version', '?')}); this is {__version__}, which reads format {FORMAT}: "
                          f"upgrade audionet-ray (pip install -U audionet-ray)")
    if config.get("config_sha256") != config_digest(config):
        raise BundleError(f"{cfg_file}: changed after export (checksum mismatch): broken or tampered bundle, export it again")
    return config


def verify_files(path: Path, config: dict) -> None:
    """Every file the config lists is there and has its recorded sha256."""
    files = config.get("files")
    if not isinstance(files, dict) or WEIGHTS_FILE not in files:
        raise BundleError(f"{path / CONFIG_FILE}: lists no {WEIGHTS_FILE}: broken bundle, export it again")
    for name, digest in files.items():
        f = path / name
        if "/" in name or name.startswith("."):
            raise BundleError(f"{path / CONFIG_FILE}: bad file name {name!r} in its file list: broken bundle")
        if not f.is_file():
            raise BundleError(f"{f}: missing from the bundle: export it again")
        if sha256_file(f) != digest:
            raise BundleError(f"{f}: does not match its sha256 in {CONFIG_FILE} (file changed or corrupt): "
                              f"broken or tampered bundle, export it again")
    # a model file export did not write would look like part of the model; notes and evaluate's
    # figures beside it are fine
    extra = sorted(f.name for f in path.iterdir() if f.suffix.lower() in MODEL_SUFFIXES and f.name not in files)
    if extra:
        raise BundleError(f"{path / extra[0]}: a model file {CONFIG_FILE} does not list (not written by export): "
                          f"remove it, or export the bundle again")


def _torch_model(path: Path, config: dict, device: torch.device) -> torch.nn.Module:
    """The bundle's model in eval mode: the class its config.json's model.architecture names (none
    recorded: AudioNet, as every bundle before the registry), with model.safetensors' weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        cls = model_class(recorded(config))
    except ConfigError as e:
        raise BundleError(f"{path / CONFIG_FILE}: {e}: update audionet-ray, or export the bundle again") from None
    try:
        model = cls.from_config(config["model"]["config"])
        state = load_file(str(path / WEIGHTS_FILE), device="cpu")
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise BundleError(f"{path / WEIGHTS_FILE}: does not fit the model in {CONFIG_FILE} ({msg}): broken bundle") from None
    return model.to(device).eval()


def _onnx_session(path: Path, config: dict, int8: bool = False):
    name = INT8_FILE if int8 else ONNX_FILE
    if int8 and (not config.get("int8") or INT8_FILE not in config.get("files", {})):
        why = (config.get("int8_skipped") or "exported by an older audionet-ray").rstrip(".")
        raise BundleError(f"{path}: this bundle has no {INT8_FILE} ({why}): export it again with --data ROOT, "
                          f"or run without --int8")
    if not int8 and (not config.get("onnx") or ONNX_FILE not in config.get("files", {})):
        raise BundleError(f"{path}: this bundle has no {ONNX_FILE} (exported without the onnx package): "
                          f"install it (pip install 'audionet-ray[onnx]') and export again, or run with torch")
    try:
        import onnxruntime as ort
    except ImportError:
        raise BundleError("the onnx backend needs onnxruntime: pip install 'audionet-ray[onnx]'") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path / name), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for invalid graphs
        raise BundleError(f"{path / name}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from None


def write_config(folder: Path, config: dict) -> dict:
    """Write folder/config.json: `config` plus the sha256 of each file in `config["files"]` (names
    only; they must be in the folder) and of the config itself. Returns what was written."""
    config = {k: v for k, v in config.items() if k != "config_sha256"}
    config["files"] = {name: sha256_file(folder / name) for name in config.get("files", {})}
    config["config_sha256"] = config_digest(config)
    tmp = folder / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=1) + "\n")
    tmp.replace(folder / CONFIG_FILE)
    return config


def _supported_window(n) -> bool:
    """A window this package can run: whole samples within WINDOW_RANGE_S (prepare's --window)."""
    lo, hi = WINDOW_RANGE_S
    return isinstance(n, int) and not isinstance(n, bool) and lo * SAMPLE_RATE <= n <= hi * SAMPLE_RATE


def load(path: str | Path, backend: str = "torch", device: str | torch.device = "cpu") -> Bundle:
    """A checked, ready-to-run bundle. Raises `BundleError` (one line) for anything wrong.

    backend "torch" gives `bundle.model`, an AudioNet in eval mode on `device`; "onnx" runs
    model.onnx with onnxruntime on the CPU instead, "int8" model.int8.onnx (checked like the rest).
    """
    if backend not in BACKENDS:
        raise BundleError(f"unknown backend {backend!r}: choose {', '.join(BACKENDS)}")
    path = Path(path).expanduser()
    config = read_config(path)
    verify_files(path, config)
    pre = config.get("preprocessing", {})
    classes = config.get("classes")
    if not isinstance(classes, list) or not classes or pre.get("sample_rate") != SAMPLE_RATE \
            or not _supported_window(pre.get("clip_samples")):
        raise BundleError(f"{path / CONFIG_FILE}: classes or preprocessing missing or unsupported: broken bundle")
    device = torch.device(device)
    bundle = Bundle(path=path, config=config, classes=list(classes), sample_rate=pre["sample_rate"],
                    clip_samples=pre["clip_samples"], backend=backend, device=device,
                    std_floor=float(pre.get("standardise", {}).get("floor", 0.0)))
    if backend == "torch":
        bundle.model = _torch_model(path, config, device)
        if bundle.model.config.n_classes != len(classes):
            raise BundleError(f"{path / CONFIG_FILE}: {len(classes)} class names for a model with "
                              f"{bundle.model.config.n_classes} outputs: broken bundle")
        if bundle.model.config.clip_samples != bundle.clip_samples:
            raise BundleError(f"{path / CONFIG_FILE}: preprocessing's clip_samples {bundle.clip_samples} for a model "
                              f"built for {bundle.model.config.clip_samples}: broken bundle")
    else:
        bundle.session = _onnx_session(path, config, int8=backend == "int8")
    return bundle


def load_for(path: str | Path, onnx: bool = False, int8: bool = False, device: str = "auto") -> Bundle:
    """The bundle as a command's --onnx / --int8 / --device flags ask for it."""
    backend = "int8" if int8 else "onnx" if onnx else "torch"
    return load(path, backend=backend, device=resolve_device(device) if backend == "torch" else "cpu")


def resolve_device(name: str) -> torch.device:
    """'auto' -> the GPU when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BundleError(f"--device {name}: not a torch device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BundleError(f"--device {name}: torch sees no GPU here; use --device cpu")
    return device
