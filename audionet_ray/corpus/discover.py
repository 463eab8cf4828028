"""Finding classes, clips, speakers and splits in a Speech Commands-style folder.

Splits are by speaker so that the same voice never sits in train and validation (the
reference's file-level split inflated its validation accuracy). Speaker buckets come from a
hash, not from a random shuffle: the same train_ratio always gives the same split, and a
larger train_ratio only moves speakers from validation to train.

File names are bytes on Linux, and datasets copied from other systems hold names that are not
UTF-8 (Latin-1 accents), or hold newlines, tabs and other control characters. Paths stay as
Python gives them (undecodable bytes as lone surrogates, which `open` and `Path` take back
exactly); wherever a name leaves Python as text (Parquet, manifest.json, a message, a class
name) it goes through `escape_path`, which is readable, one line, valid UTF-8 and lossless.

A keyword task (words, and `_unknown_` for every other word) also reads a root-level `_unknown_/`
folder: keyword-free speech (speech_data's other words), every clip of it `_unknown_`. A
classifier ignores it, as every folder whose name starts with "_".
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .audio import AUDIO_SUFFIXES
from ..core.errors import ConfigError

UNKNOWN = "_unknown_"
SILENCE = "_silence_"
NOISE_DIR = "_background_noise_"
TEST_FRACTION = 0.1  # used only when the dataset ships no testing_list.txt
MIN_KEYWORD_CLIPS = 10  # trainval clips a keyword needs: fewer leave training and validation a handful or none
_SHOWN_WORDS = 60  # a message lists at most this many of a dataset's words


class DatasetError(ValueError):
    """A dataset that cannot be used at all; the message is one line for the user."""


def _name_bytes(path: str | os.PathLike) -> bytes:
    try:
        return os.fsencode(path)  # undecodable bytes come back from their surrogates
    except UnicodeEncodeError:  # a surrogate no file name can hold (typed by hand): keep it too
        return os.fspath(path).encode("utf-8", "surrogatepass")


def escape_path(path: str | bytes | os.PathLike) -> str:
    """A path as one line of readable UTF-8 text that maps back to its exact bytes.

    Printable characters stay as they are, a backslash becomes two, and every other byte (not
    UTF-8, or a control character such as a newline or tab) becomes `\\xNN`: `café` written in
    Latin-1 reads `caf\\xe9`. A name that is printable UTF-8 without a backslash (nearly all)
    is unchanged. `unescape_path` reverses it.
    """
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)  # or a URI
    if text.isprintable() and "\\" not in text:  # lone surrogates are not printable
        return text
    text = _name_bytes(text).decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def unescape_path(text: str) -> str:
    """The path `escape_path` made `text` from (a str that `open` and `Path` take as is)."""
    raw, pos = bytearray(), 0
    for m in _ESCAPE.finditer(text):
        raw += text[pos:m.start()].encode("utf-8", "surrogateescape")
        raw += b"\\" if m.group(1) == "\\" else bytes([int(m.group(1)[1:], 16)])
        pos = m.end()
    raw += text[pos:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(raw))


@dataclass
class Item:
    path: str  # relative to the root, forward slashes (as in testing_list.txt); as on disk, see escape_path
    label: int
    speaker: str
    split: str  # "test" or "trainval": the fixed part of the split


@dataclass
class Discovery:
    root: str
    classes: list[str]  # folder names through escape_path: text for manifests, plots and tables
    items: list[Item]
    noise_files: list[str]
    empty_classes: list[str] = field(default_factory=list)  # class folders without clips: not classes
    held_out: list[str] = field(default_factory=list)  # clips of test speakers not in testing_list.txt


def speaker_of(filename: str) -> str:
    """`<speaker>_nohash_<n>.wav` -> speaker; files without the pattern are their own speaker."""
    stem = Path(filename).stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem


def parse_keywords(text: str | list | None) -> list[str]:
    """'yes, no,,up' (or a YAML list) -> ['yes', 'no', 'up'] (order kept, repeats dropped)."""
    if isinstance(text, (list, tuple)):
        text = ",".join(map(str, text))
    return list(dict.fromkeys(w.strip() for w in (text or "").split(",") if w.strip()))


def keywords_option(text: str) -> list[str]:
    """--keywords as a command gives it: at least one keyword, or one line saying so."""
    keywords = parse_keywords(text)
    if not keywords:
        raise ConfigError("--keywords: no keyword given (a comma-separated list such as yes,no,up)")
    return keywords


def is_test_speaker(speaker: str) -> bool:
    """The held-out test split of a dataset without a testing_list.txt: a fixed share of speakers by
    their salted hash, the same on every machine and for every train_ratio (the one test rule)."""
    return speaker_bucket(speaker, "test:") < TEST_FRACTION


def speaker_bucket(speaker: str, salt: str = "") -> float:
    """A stable number in [0, 1) per speaker: the basis of every split."""
    digest = hashlib.sha1(_name_bytes(f"{salt}{speaker}")).digest()  # a name's own bytes, UTF-8 or not
    return int.from_bytes(digest[:8], "big") / 2**64


def _read_list(root: Path, name: str) -> set[str] | None:
    f = root / name
    if not f.is_file():
        return None
    try:
        raw = f.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {escape_path(f)}: {e.strerror}") from None
    # Bytes per line, as the names on disk are: a line that is not UTF-8 still matches its file.
    # A backslash is a separator in lists made on Windows and a plain character in a Linux name;
    # a name a line cannot hold (a newline in it) can be listed as escape_path writes it.
    lines = [os.fsdecode(ln.strip()) for ln in raw.splitlines() if ln.strip()]
    return {*lines, *(ln.replace("\\", "/") for ln in lines), *map(unescape_path, lines)}


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DatasetError(f"cannot list {escape_path(folder)}: {e.strerror}") from None


def _audio_files(folder: Path) -> list[Path]:
    return [p for p in _listdir(folder) if p.suffix.lower() in AUDIO_SUFFIXES]


def _class_folders(root: Path, shown: str) -> tuple[list[str], dict[str, list[Path]], list[str]]:
    """Word folders (not hidden, not `_`-prefixed), the clips in each, and those without clips."""
    folders = [p.name for p in _listdir(root) if p.is_dir() and not p.name.startswith((".", "_"))]
    if not folders:
        raise DatasetError(
            f"dataset root {shown} has no class folders: expected one sub-folder of clips per word"
        )
    files = {f: _audio_files(root / f) for f in folders}
    return folders, files, [f for f in folders if not files[f]]


def _split_words(words: list[str] | None, unknown: bool, silence: bool) -> tuple[list[str] | None, bool, bool]:
    """Words without repeats, with `_unknown_` and `_silence_` taken out into their flags."""
    if not words:
        return words, unknown, silence
    words = list(dict.fromkeys(w for w in words if w))  # drop repeats, keep order
    unknown = unknown or UNKNOWN in words
    silence = silence or SILENCE in words
    return [w for w in words if w not in (UNKNOWN, SILENCE)], unknown, silence


def _chosen_folders(words: list[str], folders: list[str], empty: list[str], name: dict[str, str], shown: str) -> set[str]:
    """The folders `--words` names (by folder or class name); each must exist and hold clips."""
    folder_of = {**{n: f for f, n in name.items()}, **{f: f for f in folders}}  # --words may give either
    missing = [escape_path(w) for w in words if w not in folder_of]
    if missing:
        there = sorted(name[f] for f in folders if f not in empty)
        more = f" ... ({len(there)} in all)" if len(there) > _SHOWN_WORDS else ""
        raise DatasetError(f"--words: no folder for {', '.join(missing)} in {shown}; the words there are: "
                           f"{', '.join(there[:_SHOWN_WORDS]) or 'none'}{more}")
    chosen = {folder_of[w] for w in words}
    no_clips = [name[f] for f in sorted(chosen) if f in empty]
    if no_clips:
        raise DatasetError(f"--words: the folder for {', '.join(no_clips)} in {shown} has no .wav or .flac clips")
    return chosen


def _noise_files(root: Path, silence: bool) -> list[str]:
    """Background noise clips, relative to the root; `_silence_` cannot be made without them."""
    noise_dir = root / NOISE_DIR
    noise_files = [
        p.relative_to(root).as_posix()
        for p in (_listdir(noise_dir) if noise_dir.is_dir() else [])
        if p.suffix.lower() in AUDIO_SUFFIXES
    ]
    if silence and not noise_files:
        raise DatasetError(f"_silence_ needs background noise files in {escape_path(noise_dir)}")
    return noise_files


def _fixed_split(rel: str, speaker: str, test_list: set[str] | None) -> str:
    """testing_list.txt decides the test set; without one, a speaker hash does."""
    if test_list is not None:
        return "test" if rel in test_list else "trainval"
    return "test" if speaker_bucket(speaker, "test:") < TEST_FRACTION else "trainval"


def _hold_out_test_speakers(items: list[Item]) -> tuple[list[Item], list[str]]:
    """Drop the trainval clips of test speakers, so no voice sits on both sides of the split.

    testing_list.txt is the fixed test set; a speaker it names only partly (a hand-made list,
    clips added later) must not leak into train/val, so their other clips are held out.
    """
    test_speakers = {it.speaker for it in items if it.split == "test"}
    held_out = [it.path for it in items if it.split == "trainval" and it.speaker in test_speakers]
    if held_out:
        items = [it for it in items if it.split == "test" or it.speaker not in test_speakers]
    return items, held_out


def _check_keyword_clips(items: list[Item], classes: list[str], shown: str) -> None:
    """Every keyword needs MIN_KEYWORD_CLIPS clips outside the test set to train and validate on."""
    trainval = {c: 0 for c in classes if c not in (UNKNOWN, SILENCE)}
    for it in items:
        if it.split == "trainval" and classes[it.label] in trainval:
            trainval[classes[it.label]] += 1
    few = [f"{c} ({n})" for c, n in trainval.items() if n < MIN_KEYWORD_CLIPS]
    if few:
        raise DatasetError(f"keyword {', '.join(few)}: too few clips outside the test set in {shown}, "
                           f"training needs at least {MIN_KEYWORD_CLIPS} each")


def _label_items(
    root: Path,
    folders: list[str],
    files: dict[str, list[Path]],
    name: dict[str, str],
    classes: list[str],
    test_list: set[str] | None,
    keyword_task: bool,
) -> list[Item]:
    """One Item per clip of a chosen class; in a keyword task every other word's clips are `_unknown_`."""
    index = {c: i for i, c in enumerate(classes)}
    items: list[Item] = []
    for folder in folders:
        if folder != UNKNOWN and name[folder] in index:
            label = index[name[folder]]
        elif keyword_task:
            label = index[UNKNOWN]
        else:
            continue
        for p in files[folder]:
            rel = p.relative_to(root).as_posix()
            spk = speaker_of(p.name)
            items.append(Item(rel, label, spk, _fixed_split(rel, spk, test_list)))
    return items


def discover(
    root: str | Path,
    words: list[str] | None = None,
    unknown: bool = False,
    silence: bool = False,
) -> Discovery:
    """All clips of the chosen classes, each with its speaker and fixed split.

    `words` may itself name `_unknown_` and `_silence_` (the standard 12-class list), which is
    the same as passing unknown=True / silence=True. Words with `_unknown_` make a keyword task:
    every clip in `_unknown_/` is then `_unknown_` too, and each keyword needs MIN_KEYWORD_CLIPS
    clips outside the test set.
    """
    root = Path(root).expanduser()
    shown = escape_path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {shown} does not exist or is not a folder")
    folders, files, empty = _class_folders(root, shown)
    name = {f: escape_path(f) for f in folders}  # the class name of each folder
    words, unknown, silence = _split_words(words, unknown, silence)
    chosen: set[str] = set()
    if words:
        chosen = _chosen_folders(words, folders, empty, name, shown)
        classes = sorted(name[f] for f in chosen) + ([UNKNOWN] if unknown else []) + ([SILENCE] if silence else [])
    else:
        unknown = False  # "all other words" means nothing when every word is a class
        classes = [name[f] for f in folders if f not in empty] + ([SILENCE] if silence else [])
    noise_files = _noise_files(root, silence)
    keyword_task = bool(words) and unknown
    if keyword_task and (root / UNKNOWN).is_dir():  # keyword-free speech: all of it _unknown_
        folders = [*folders, UNKNOWN]
        files[UNKNOWN] = _audio_files(root / UNKNOWN)
    items = _label_items(root, folders, files, name, classes, _read_list(root, "testing_list.txt"), keyword_task)
    if not items:
        raise DatasetError(f"dataset root {shown} has class folders but no .wav or .flac clips in them")
    items, held_out = _hold_out_test_speakers(items)
    if keyword_task:
        _check_keyword_clips(items, classes, shown)
    relevant_empty = [f for f in empty if not words or unknown or f in chosen]
    return Discovery(str(root), classes, items, noise_files, relevant_empty, held_out)

