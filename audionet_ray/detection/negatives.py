"""Which negative words fire a keyword detector most: the test split's `_unknown_` clips, grouped by
what they say.

A DET curve says how often a detector fires on keyword-free speech, not on what. For a wake
word the answer matters: a model that fires on "commuter" for "computer" needs more of such
negatives in training, one that fires on "hey" alone for "hey computer" needs the parts. Here
every test clip that is not a keyword is scored once, whole (the keyword probability is the
largest probability of any keyword class), and the clips are grouped by their text:

- a wake-word set (wakeword.json at the source root) names every `_unknown_/` clip's kind
  (confusable, part, other word) and its file name says the text (`<speaker>_nohash_<text>.wav`);
- any other set: the text is the word folder the clip came from (`bed/..._nohash_0.wav` -> bed).

Per text: clips, the mean and largest keyword probability, the share of clips at or over the
threshold (the bundle's operating threshold, when it has one) and the keyword that wins most.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .bundle import NOT_KEYWORDS, Bundle
from ..corpus.discover import UNKNOWN, unescape_path
from ..pipeline.dataset import PreparedDataset
from ..corpus.prepare import pcm_from_binary

WAKEWORD_MANIFEST = "wakeword.json"  # wakeword.MANIFEST, not imported: wakeword pulls in espeak-ng
TOP = 15


@dataclass(frozen=True)
class Firing:
    """One negative text and how the detector answers it."""

    text: str
    kind: str  # confusable, part, other word (a wake-word set), else "word"
    clips: int
    mean_probability: float
    max_probability: float
    fires: float  # share of its clips at or over the threshold
    top_keyword: str


def text_of(path: str) -> str:
    """The words a negative clip says, from its path relative to the source root."""
    p = PurePosixPath(unescape_path(path))
    if p.parent.name != UNKNOWN or "_nohash_" not in p.stem:
        return p.parent.name or p.stem
    return p.stem.split("_nohash_", 1)[1].replace("_", " ")


def kinds_of(source: str | Path | None) -> dict[str, str]:
    """path -> kind for a wake-word source (its wakeword.json), else {}."""
    if not source:
        return {}
    try:
        manifest = json.loads((Path(source) / WAKEWORD_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {path: kind.replace("_", " ").rstrip("s") for path, kind in manifest.get("unknown", {}).items()}


def _negative_rows(data: PreparedDataset, classes: list[str]):
    """(pcm, paths) batches of the test split's clips whose class is not a keyword of the bundle."""
    negative = np.array([c not in classes or c in NOT_KEYWORDS for c in data.classes] + [False])
    silence = data.classes.index("_silence_") if "_silence_" in data.classes else -1
    for batch in data.batches("test", ("pcm", "label", "path"), 256):
        labels = batch.column("label").to_numpy()
        keep = negative[labels] & (labels != silence)
        if keep.any():
            paths = [p for p, k in zip(batch.column("path").to_pylist(), keep) if k]
            yield pcm_from_binary(batch.column("pcm"))[keep], paths


def firing_negatives(bundle: Bundle, prepared: str | Path, threshold: float, source: str | Path | None = None,
                     top: int = TOP) -> list[Firing]:
    """The `top` negative texts the detector fires on most (share over threshold, then mean);
    `source`: the dataset root (default: the one the prepared manifest names)."""
    keywords = [i for i, c in enumerate(bundle.classes) if c not in NOT_KEYWORDS]
    if not keywords:
        return []
    data = PreparedDataset.open(prepared)
    kinds = kinds_of(source or unescape_path(data.manifest.get("source", "")))
    probs: dict[str, list[np.ndarray]] = {}
    for pcm, paths in _negative_rows(data, bundle.classes):
        p = bundle.predict_proba(pcm)[:, keywords]
        for path, row in zip(paths, p):
            probs.setdefault(path, []).append(row)
    by_text: dict[tuple[str, str], list[np.ndarray]] = {}
    for path, rows in probs.items():
        plain = unescape_path(path)
        by_text.setdefault((text_of(path), kinds.get(plain, "word" if not kinds else "other word")), []).extend(rows)
    out = []
    for (text, kind), rows in by_text.items():
        p = np.stack(rows)
        best = p.max(axis=1)
        winner = np.bincount(p.argmax(axis=1), minlength=len(keywords)).argmax()
        out.append(Firing(text, kind, len(rows), float(best.mean()), float(best.max()),
                          float((best >= threshold).mean()), bundle.classes[keywords[winner]]))
    out.sort(key=lambda f: (-f.fires, -f.mean_probability, f.text))
    return out[:top]


def as_dicts(firings: list[Firing]) -> list[dict]:
    return [asdict(f) for f in firings]
