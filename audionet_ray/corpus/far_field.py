"""A far-field, noisy recording of a Speech-Commands-layout dataset: what users' clips sound like.

Why: keyword audio is recorded metres from the mouth, in reverberant rooms, through telephones and
cheap microphones, next to other people talking; a search judged on close-talk speech says little
about such clips (issue 24). `far_field(src, out)` writes a copy of any dataset folder (the speech
generator's or the user's own) in which every clip went through:

1. babble, for half the clips (BABBLE_SHARE; the others get noise in 4.): 1-3 clips of *other*
   speakers of the *same* split, each shifted in time, mixed at 0-15 dB SNR against the clip;
2. a room: convolution with a simulated room impulse response (rooms.room_bank, reverberation
   times 0.1-0.9 s). Each split has a bank of its own (seeded by the seed and the split's name),
   so training, validation and test rooms are disjoint;
3. a channel: a telephone band or a cheap microphone (rooms.random_mic);
4. noise, for the clips without babble, at 0-15 dB SNR against what the microphone picked up:
   white, pink or brown noise, or a stretch of the set's own `_background_noise_/` files. Each
   split reads its own stretch of every noise file (train 0-70 %, validation 70-80 %, test the last 20 %), so test noise is held out;
5. a level: the peak at -6 to -1 dBFS; int16.

Splits: validation_list.txt / testing_list.txt when the set has them; otherwise the test split is
the project's own speaker-hash rule (discover.discover decides; its test speakers' other clips are
test clips too) and everything else is training. Clips of `_unknown_/` (and of other "_" folders
but `_background_noise_/`) are recorded too, with their speaker's split: keyword-free speech left
clean would teach a model that clean audio means "no keyword". A speaker found only in such a
folder, in a set without lists, counts as training.

Deterministic: every random draw for a clip comes from `numpy.random.default_rng` seeded by the
seed and a SHA-1 of the clip's relative path, never from the order of work, so the same seed gives
byte-identical files whatever the number of processes; another seed, other rooms, babble and noise.

Written next to the clips: `far_field.json` (the seed, the source, per split its room bank seed,
clip count and noise stretch, the SNR and level ranges; it also marks the folder as this module's,
which it alone may replace) and `far_field_clips.jsonl` (one line per clip: split, room, channel,
babble sources and SNR, noise and SNR, peak level). `_background_noise_/`, the list files, README
and any other files are copied (the README gains a paragraph); the speech generator's marker is not.

CLI: ``python -m audionet_ray.far_field SRC OUT [--seed S] [--rooms N] [--jobs J] [--quiet]``; the speech
generator makes a clean set and its far-field copy in one go with
``python -m audionet_ray.speech_data OUT --preset far35 --far-field`` (the copy in OUT, the clean
source in OUT.clean).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import log
from .audio import AUDIO_SUFFIXES, CLIP_SAMPLES, SAMPLE_RATE, BadClip, decode_clip, read_audio, to_int16
from .discover import NOISE_DIR, DatasetError, _read_list, discover, escape_path, speaker_of
from .rooms import RT60_MIN, random_mic, room_bank
from .speech_data import MARKER, N_FFT, coloured_noise, generated_with, one_line_errors, write_wav

logger = log.get(__name__)

MANIFEST = "far_field.json"  # also the marker: far_field() may replace only folders it made
CLIPS_TABLE = "far_field_clips.jsonl"
SPLITS = ("train", "validation", "testing")
BANK_ROOMS = 32  # rooms per split
RT60_MAX = 0.9  # seconds
BABBLE_CLIPS = (1, 3)
BABBLE_SHARE = 0.5  # of the clips get babble, the others noise: "babble of other speakers' words or coloured noise"
BABBLE_SNR_DB = (0.0, 15.0)
NOISE_SNR_DB = (0.0, 15.0)
PEAK_DBFS = (-6.0, -1.0)
FILE_NOISE_SHARE = 0.5  # of the clips, when the set has background noise files; the rest coloured noise
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
NOISE_STRETCH = {"train": (0.0, 0.7), "validation": (0.7, 0.8), "testing": (0.8, 1.0)}  # of each noise file
TELEPHONE_SHARE = 1 / 3  # rooms.random_mic's first draw: a telephone below this
_FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
_TAG_CLIP = 24


class FarFieldError(ValueError):
    """A source or output folder that cannot be used; the message is one line for the user."""


def stable_hash(text: str) -> int:
    """A 63-bit number from a text's bytes (Python's hash() changes from process to process)."""
    return int.from_bytes(hashlib.sha1(os.fsencode(text)).digest()[:8], "big") >> 1


def bank_seed(seed: int, split: str) -> int:
    """The seed of a split's room bank: another split, other rooms."""
    return stable_hash(f"far_field/{seed}/{split}")


def clip_rng(seed: int, rel: str) -> np.random.Generator:
    """Every draw for the clip at `rel` (relative path, forward slashes) comes from this."""
    return np.random.default_rng([seed, _TAG_CLIP, stable_hash(rel)])


def clean_path(out: str | Path) -> Path:
    """Where `speech_data OUT --far-field` keeps the clean source of OUT: the folder OUT.clean beside it."""
    out = Path(out).expanduser()
    return out.with_name(out.name + ".clean")


# ---------------------------------------------------------------------------- what is in the source
@dataclass
class Source:
    """The clips of a dataset folder, each with its speaker and split; its noise files."""

    root: Path
    clips: dict[str, tuple[str, str]]  # relative path -> (speaker, split)
    noise: list[str]  # relative paths of the background noise files
    split_rule: str


def _audio_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _recorded_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != NOISE_DIR)


def find_source(src: str | Path) -> Source:
    """The clips of `src` and their splits (see the module docstring); FarFieldError if there are none."""
    root = Path(src).expanduser()
    shown = escape_path(root)
    if not root.is_dir():
        raise FarFieldError(f"source {shown} does not exist or is not a folder")
    try:
        files = {d.name: _audio_in(d) for d in _recorded_folders(root)}
    except OSError as e:
        raise FarFieldError(f"cannot list {shown}: {e.strerror}") from None
    if not any(files.values()):
        raise FarFieldError(f"source {shown} has no .wav or .flac clips in its folders: nothing to record")
    try:
        found = discover(root)  # the project's test rule, testing_list.txt's or the speaker hash's
        val_list = _read_list(root, "validation_list.txt") or set()
        test_list = _read_list(root, "testing_list.txt")
    except DatasetError as e:
        if any(files[d] for d in files if not d.startswith("_")):
            raise FarFieldError(str(e)) from None
        found, val_list, test_list = None, set(), None  # clips only in "_" folders: all training
    test = {it.path for it in found.items if it.split == "test"} | set(found.held_out) if found else set()
    clips: dict[str, tuple[str, str]] = {}
    split_of_speaker: dict[str, str] = {}
    for folder in sorted(files, key=lambda d: d.startswith("_")):  # word folders first: they set speakers' splits
        for p in files[folder]:
            rel, spk = f"{folder}/{p.name}", speaker_of(p.name)
            known = split_of_speaker.get(spk) if folder.startswith("_") else None  # unlisted: the speaker's split
            if rel in test or (test_list is not None and rel in test_list) or known == "testing":
                split = "testing"
            elif rel in val_list or known == "validation":
                split = "validation"
            else:
                split = "train"
            split_of_speaker.setdefault(spk, split)
            clips[rel] = (spk, split)
    noise_dir = root / NOISE_DIR
    noise = [f"{NOISE_DIR}/{p.name}" for p in _audio_in(noise_dir)] if noise_dir.is_dir() else []
    rule = "validation_list.txt, testing_list.txt" if test_list is not None else "speaker hash (discover)"
    return Source(root, clips, noise, rule)


# ---------------------------------------------------------------------------- one clip
@dataclass
class _State:
    """What a worker needs; set once per process by `_init`."""

    src: str
    out: str
    seed: int
    clips: dict[str, tuple[str, str]]
    banks: dict[str, np.ndarray]  # split -> (rooms, RIR taps)
    noise: dict[str, np.ndarray]  # relative path -> float32 samples
    pools: dict[str, tuple[list[str], np.ndarray]] | None = None  # split -> (clips, speaker numbers)
    speakers: dict[str, int] | None = None  # speaker -> number
    rooms: dict[str, np.ndarray] | None = None  # split -> the rooms' spectra


_STATE: _State | None = None


def _init(state: _State) -> None:
    global _STATE
    speakers = {s: i for i, s in enumerate(sorted({spk for spk, _ in state.clips.values()}))}
    state.speakers = speakers
    state.pools = {}
    for split in SPLITS:
        rels = sorted(r for r, (_, sp) in state.clips.items() if sp == split)
        state.pools[split] = (rels, np.array([speakers[state.clips[r][0]] for r in rels], dtype=np.int64))
    state.rooms = {split: np.fft.rfft(bank.astype(np.float64), N_FFT, axis=1) for split, bank in state.banks.items()}
    _STATE = state


def _power(x: np.ndarray) -> float:
    return float(np.mean(x**2)) + 1e-12


def _shifted(x: np.ndarray, shift: int) -> np.ndarray:
    """`x` moved by `shift` samples, zeros coming in (no wrap-around: a word is not cut in two)."""
    y = np.zeros_like(x)
    if shift >= 0:
        y[shift:] = x[: len(x) - shift]
    else:
        y[:shift] = x[-shift:]
    return y


def _add_babble(st: _State, x: np.ndarray, speaker: str, split: str, rng: np.random.Generator,
                line: dict) -> tuple[np.ndarray, bool]:
    """1. Babble for BABBLE_SHARE of the clips: other speakers of the same split, so no voice crosses splits.

    Returns the mix and whether this clip was babbled (the others get noise in 4.).
    """
    babbled = rng.random() < BABBLE_SHARE
    rels, spk_of = st.pools[split]
    others = np.flatnonzero(spk_of != st.speakers[speaker]) if babbled else np.zeros(0, int)
    k = int(rng.integers(BABBLE_CLIPS[0], BABBLE_CLIPS[1] + 1))
    chosen = [rels[i] for i in rng.choice(others, size=min(k, len(others)), replace=False)] if len(others) else []
    babble = np.zeros(CLIP_SAMPLES)
    for other in chosen:
        try:
            b = decode_clip(Path(st.src) / other)[0].astype(np.float64) / 32768.0
        except BadClip:
            b = np.zeros(CLIP_SAMPLES)
        babble += _shifted(b, int(rng.integers(-CLIP_SAMPLES // 2, CLIP_SAMPLES // 2 + 1))) * rng.uniform(0.5, 1.0)
    snr = float(rng.uniform(*BABBLE_SNR_DB))
    if chosen and np.any(babble):
        x = x + babble * np.sqrt(_power(x) / _power(babble) / 10 ** (snr / 10))
    line["babble"] = [escape_path(c) for c in chosen]
    line["babble_snr_db"] = round(snr, 2) if chosen else None
    return x, babbled


def _room_and_channel(st: _State, x: np.ndarray, split: str, rng: np.random.Generator, line: dict) -> np.ndarray:
    """2. A room of the split's own bank; 3. a telephone or cheap microphone, as users' devices are."""
    room = int(rng.integers(len(st.rooms[split])))
    mic_seed = int(rng.integers(2**63))
    telephone = np.random.default_rng(mic_seed).random() < TELEPHONE_SHARE  # random_mic's own first draw
    channel = random_mic(np.random.default_rng(mic_seed), np.maximum(_FREQS, 1.0))
    y = np.fft.irfft(np.fft.rfft(x, N_FFT) * st.rooms[split][room] * channel, N_FFT)[:CLIP_SAMPLES]
    line["room"] = room
    line["channel"] = "telephone" if telephone else "microphone"
    return y


def _file_noise(st: _State, split: str, rng: np.random.Generator, line: dict) -> np.ndarray:
    """A clip-long piece of one background noise file, from the split's own stretch so test noise is held out."""
    names = sorted(st.noise)
    name = names[int(rng.integers(len(names)))]
    full = st.noise[name]
    lo, hi = (int(f * len(full)) for f in NOISE_STRETCH[split])
    stretch = full[lo:hi] if hi > lo else full
    if len(stretch) < CLIP_SAMPLES:
        stretch = np.resize(stretch, CLIP_SAMPLES)  # a short file: repeated
    start = int(rng.integers(0, len(stretch) - CLIP_SAMPLES + 1))
    line["noise"] = f"{escape_path(name)}@{(lo + start) / SAMPLE_RATE:.3f}s"
    return stretch[start: start + CLIP_SAMPLES].astype(np.float64)


def _add_noise(st: _State, y: np.ndarray, split: str, babbled: bool, rng: np.random.Generator,
               line: dict) -> np.ndarray:
    """4. Noise for the clips without babble: a noise file or coloured noise, at an SNR against what the mic heard.

    The draws happen for babbled clips too, so each clip's later draws do not depend on the babble.
    """
    snr = float(rng.uniform(*NOISE_SNR_DB))
    if st.noise and rng.random() < FILE_NOISE_SHARE:
        noise = _file_noise(st, split, rng, line)
    else:
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        noise = coloured_noise(rng, CLIP_SAMPLES, COLOURS[colour])
        line["noise"] = colour
    if np.any(noise) and not babbled:
        y = y + noise * np.sqrt(_power(y) / _power(noise) / 10 ** (snr / 10))
    line["noise_snr_db"] = None if babbled else round(snr, 2)
    if babbled:
        line["noise"] = None
    return y


def _write_at_level(dst: Path, y: np.ndarray, rng: np.random.Generator, line: dict) -> None:
    """5. A random peak level, as recordings come at all levels; written as int16 in the clip's own format."""
    peak = float(rng.uniform(*PEAK_DBFS))
    y *= 10 ** (peak / 20) / (np.abs(y).max() + 1e-12)
    line["peak_dbfs"] = round(peak, 2)
    out = to_int16(y)
    if dst.suffix.lower() == ".wav":
        write_wav(dst, out)
    else:
        import soundfile as sf

        sf.write(os.fsencode(dst), out, SAMPLE_RATE, subtype="PCM_16")


def record_clip(rel: str) -> dict:
    """Write the far-field version of the clip at `rel`; its line of the clips table.

    The steps draw from one per-clip generator in a fixed order: keep it, or every copy changes.
    """
    st = _STATE
    speaker, split = st.clips[rel]
    src, dst = Path(st.src) / rel, Path(st.out) / rel
    rng = clip_rng(st.seed, rel)
    try:
        pcm, _ = decode_clip(src)
    except BadClip as e:  # copied as it is: preparing the far-field set skips it as it would the source's
        shutil.copyfile(src, dst)
        return {"path": escape_path(rel), "split": split, "skipped": str(e)}
    x = pcm.astype(np.float64) / 32768.0
    line: dict = {"path": escape_path(rel), "split": split}
    x, babbled = _add_babble(st, x, speaker, split, rng, line)
    y = _room_and_channel(st, x, split, rng, line)
    y = _add_noise(st, y, split, babbled, rng, line)
    _write_at_level(dst, y, rng, line)
    return line


# ---------------------------------------------------------------------------- the dataset
def check_out(out: str | Path, src: str | Path | None = None) -> Path:
    """`out` may be written: new, empty or made by far_field before, and not the source's own folder."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FarFieldError(f"{escape_path(out)} is a file, not a folder: choose a new folder for the far-field copy")
    if src is not None:
        a, b = out.resolve(), Path(src).expanduser().resolve()
        if a == b or a in b.parents or b in a.parents:
            raise FarFieldError(f"{escape_path(out)} and the source {escape_path(src)} overlap: choose a folder outside it")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise FarFieldError(f"{escape_path(out)} is not empty and was not made by far_field: choose an empty or new folder")
    return out


def _copy_rest(src: Path, out: Path, readme: str) -> None:
    """Everything but the clips: noise files, lists, README (with `readme` added), other files."""
    for p in sorted(src.iterdir()):
        if p.name.startswith(".") or p.name in (MARKER, MANIFEST, CLIPS_TABLE):
            continue
        if p.is_dir():
            if p.name == NOISE_DIR:
                shutil.copytree(p, out / p.name)
                continue
            (out / p.name).mkdir()
            for q in sorted(p.iterdir()):  # what is not a clip in a clip folder
                if q.is_dir():
                    shutil.copytree(q, out / p.name / q.name)
                elif q.suffix.lower() not in AUDIO_SUFFIXES:
                    shutil.copyfile(q, out / p.name / q.name)
        elif p.name == "README.txt":
            (out / p.name).write_text(p.read_text(errors="replace") + "\n" + readme)
        else:
            shutil.copyfile(p, out / p.name)
    if not (src / "README.txt").is_file():
        (out / "README.txt").write_text(readme)


def _noise_files(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    noise = {}
    for name in names:
        try:
            x = read_audio(root / name)
        except BadClip:
            continue  # an unreadable noise file: coloured noise stands in
        if len(x) >= SAMPLE_RATE // 10:
            noise[name] = x
    return noise


def _manifest(source: Source, seed: int, rooms: int, noise: dict[str, np.ndarray]) -> dict:
    """far_field.json: what the copy was made from and with, so a result can be traced and remade."""
    counts = {split: sum(1 for _, sp in source.clips.values() if sp == split) for split in SPLITS}
    return {
        "version": 1,
        "seed": seed,
        "source": escape_path(source.root.resolve()),
        "source_config": generated_with(source.root),  # the speech generator's settings, if it made the source
        "split_rule": source.split_rule,
        "clips": len(source.clips),
        "splits": {split: {"clips": counts[split], "room_bank_seed": bank_seed(seed, split), "rooms": rooms,
                           "rt60_s": [RT60_MIN, RT60_MAX], "noise_stretch": list(NOISE_STRETCH[split])}
                   for split in SPLITS},
        "babble_clips": list(BABBLE_CLIPS),
        "babble_snr_db": list(BABBLE_SNR_DB),
        "noise_snr_db": list(NOISE_SNR_DB),
        "noise_colours": list(COLOURS),
        "noise_files": [escape_path(n) for n in sorted(noise)],
        "file_noise_share": FILE_NOISE_SHARE if noise else 0.0,
        "peak_dbfs": list(PEAK_DBFS),
        "clips_table": CLIPS_TABLE,
        "versions": {m: importlib.metadata.version(m) for m in ("numpy", "pyroomacoustics")},
        "complete": False,
    }


def _record_all(state: _State, out: Path, jobs: int | None, progress: bool) -> None:
    """Record every clip, in `jobs` processes, writing the clips table in path order whatever the jobs."""
    from tqdm import tqdm

    from .prepare import _pool_context

    rels = sorted(state.clips)
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(rels)))
    ctx = _pool_context()  # before tqdm's monitor thread, which would rule out fork
    with tqdm(total=len(rels), desc="far field", unit="clip", disable=not progress, mininterval=0.5) as bar, \
            open(out / CLIPS_TABLE, "w") as table:
        if jobs == 1:
            _init(state)
            lines = map(record_clip, rels)
        else:
            pool = ctx.Pool(jobs, initializer=_init, initargs=(state,))
            lines = pool.imap(record_clip, rels, chunksize=32)  # in order: the table is the same for any jobs
        try:
            for line in lines:
                table.write(json.dumps(line, ensure_ascii=False) + "\n")
                bar.update()
        finally:
            if jobs > 1:
                pool.terminate()


def far_field(src: str | Path, out: str | Path, seed: int = 0, progress: bool = True, jobs: int | None = None,
              rooms: int = BANK_ROOMS) -> Path:
    """Write the far-field copy of the dataset `src` under `out` (FarFieldError: one line for the user)."""
    if rooms < 1:
        raise FarFieldError(f"--rooms must be at least 1, got {rooms}")
    source = find_source(src)
    out = check_out(out, source.root)
    banks = {split: room_bank(bank_seed(seed, split), rooms, RT60_MAX) for split in SPLITS}
    noise = _noise_files(source.root, source.noise)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = _manifest(source, seed, rooms, noise)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")  # an interrupted run's folder is ours
    _copy_rest(source.root, out, _README.format(seed=seed, src=manifest["source"]))
    _record_all(_State(str(source.root), str(out), seed, source.clips, banks, noise), out, jobs, progress)
    manifest["complete"] = True
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


_README = """
Far-field copy (audionet_ray.corpus.far_field, seed {seed}) of {src}: every clip mixed with 1-3 clips of
other speakers of its split (babble, 0-15 dB SNR), convolved with a simulated room (0.1-0.9 s
reverberation; each split's rooms its own), filtered by a telephone or a cheap microphone, mixed
with coloured noise or a stretch of _background_noise_/ (each split its own stretch; 0-15 dB SNR)
and set to a peak of -6 to -1 dBFS. far_field.json and far_field_clips.jsonl record what each clip
went through.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m audionet_ray.far_field", description=__doc__.splitlines()[0],
                                formatter_class=log.HelpFormatter)
    p.add_argument("src", type=Path, help="a dataset folder in Speech Commands' layout (left as it is)")
    p.add_argument("out", type=Path, help="output folder (new, empty, or made by far_field before)")
    p.add_argument("--seed", type=int, default=0, help="rooms, babble and noise (default: 0)")
    p.add_argument("--rooms", type=int, default=BANK_ROOMS, help=f"rooms per split (default: {BANK_ROOMS})")
    p.add_argument("--jobs", type=int, default=None, help="processes (default: the CPUs this process may use)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (also with --log-level warning)")
    log.add_option(p)
    a = p.parse_args(argv)
    log.setup(a.log_level)
    a.quiet = a.quiet or log.quiet()
    t0 = time.perf_counter()
    if one_line_errors(lambda: far_field(a.src, a.out, seed=a.seed, progress=not a.quiet, jobs=a.jobs, rooms=a.rooms),
                       a.out, a.jobs):
        return 2
    logger.info(f"far_field: {escape_path(a.src)} -> {escape_path(a.out)} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
