"""Keywords typed as text become a dataset: `--synthesize` (issue 29).

Why: a wake word ("hey computer", "marmalade") is rarely a folder of any dataset one has.
`source_for(keywords, data, ...)` returns a folder in Speech Commands' layout that prepare reads
as a keyword task, and the keywords' class names (their folders: "hey computer" -> hey_computer):

- Every keyword is spoken by espeak-ng (audionet_ray.corpus.wakeword.synthesize: positives per speaker
  and take, confusables, parts and other words into `_unknown_/`, background noise, speaker
  lists). The set is cached under `<cache>/synthesized/<folders>-<hash of the WakewordConfig>`,
  reused when `wakeword.synthesized_with` says it was finished with the same settings.
- With `data` (a dataset root), a merged folder joins the two under
  `<cache>/merged/<data name>-<hash>`, keyed by the data's path, the modification times of its
  root, folders and lists, and the synthesis's hash. It holds symlinks, not copies: a data folder
  no keyword shares is one link to it, a shared one (a keyword the data also has, `_unknown_`,
  `_background_noise_`) a real folder of links to both sides' files (the data's file wins a name
  both have). Its validation_list.txt and testing_list.txt are the union of both sides' (a data
  set without a testing_list.txt gets discover's speaker-hash rule written out, since a list
  present means "only these are test"). The data's other words become `_unknown_` negatives as
  in any keyword task; a keyword that is also a data folder uses both and says so in one line.
- wakeword.json stays at the root of what is returned: prepare reads its settings.

The cache is tune's (data.ensure_prepared's): $AUDIONET_CACHE, else ~/.cache/audionet_ray.
Everything is written under a temporary name and renamed into place, so a killed run never leaves
a folder that looks finished; the next run makes it again.

Bad keywords (empty, no letters, another script, too long for the window) and bad settings are
one line each (ConfigError) naming --keywords, --synthesize-speakers or --synthesize-engines.
`engines` keeps the speakers to some of espeak-ng's synthesizers (wakeword.WakewordConfig.engines),
so that another engine can stay out of training and judge the detector on voices it never heard.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from . import confusables as cf
from ..core import log
from . import speech_data as sd
from . import wakeword as ww
from .discover import NOISE_DIR, UNKNOWN, _read_list, escape_path, is_test_speaker, speaker_of
from ..core.errors import ConfigError

logger = log.get(__name__)

DEFAULT_SPEAKERS = 120  # x 2 takes: 240 positives per keyword; 3 120 clips for one keyword, 12 s on 2 busy cores
DEFAULT_TAKES = 2
LISTS = ("validation_list.txt", "testing_list.txt")
MERGED = "keyword_source.json"  # a merged folder's record: what it joins
PREPARED_MANIFEST = "manifest.json"  # prepare's: a prepared folder holds no clips to join


def cache_root(cache: str | Path | None = None) -> Path:
    """Where synthesized and merged sets live: tune's cache (data.ensure_prepared's)."""
    return Path(cache or os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser()


def keyword_folders(keywords: list[str]) -> list[str]:
    """Each keyword's class name, its folder ("Hey Computer" -> hey_computer); one line if one cannot be spoken."""
    try:
        folders = [ww.folder_of(k) for k in keywords]
    except cf.PhraseError as e:
        raise ConfigError(f"--keywords: {e}") from None
    if not folders:
        raise ConfigError("--keywords: no keyword given: type the word or words to detect, e.g. --keywords \"hey computer\"")
    return folders


def parse_engines(value: str | list | tuple | None, option: str = "--synthesize-engines") -> tuple[str, ...] | None:
    """The engines named ("espeak,espeak-klatt" or a list; None: every engine), or one line naming
    `option` and the choices."""
    if value is None:
        return None
    names = [str(e).strip() for e in (value.split(",") if isinstance(value, str) else value) if str(e).strip()]
    bad = [e for e in names if e not in sd.ENGINES]
    if bad or not names:
        shown = value if isinstance(value, str) else ",".join(map(str, value))
        raise ConfigError(f"{option} {shown}: {'no such engine ' + ', '.join(bad) if bad else 'no engine given'}; "
                          f"choose from {', '.join(sd.ENGINES)} (commas separate several)")
    return tuple(dict.fromkeys(names))


def _digest(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _aside(out: Path) -> Path:
    """This process's temporary folder for `out`; those of killed runs (their process gone) are removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f"{out.name}.tmp-*"):
        pid = old.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _replace_with(tmp: Path, out: Path, finished) -> Path:
    """Rename the finished `tmp` to `out`; a stale `out` goes first, one another run finished meanwhile stays."""
    if out.exists() and not finished(out):
        shutil.rmtree(out, ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another run renamed its own there first
        shutil.rmtree(tmp, ignore_errors=True)
        if not finished(out):
            raise
    return out


def synthesized(cfg: ww.WakewordConfig, cache: Path, jobs: int | None = None, progress: bool = True) -> Path:
    """The synthesized set for `cfg`, made once into the cache."""
    out = cache / "synthesized" / f"{'-'.join(map(ww.folder_of, cfg.phrases))[:40]}-{_digest(cfg.to_dict())}"

    def finished(folder: Path) -> bool:
        return ww.synthesized_with(folder) == cfg.to_dict()

    if finished(out):
        return out
    tmp = _aside(out)
    if progress:
        voices = "" if cfg.engines == sd.ENGINES else f", voices of {', '.join(cfg.engines)}"
        logger.info(f"synthesizing {', '.join(cfg.phrases)} ({cfg.speakers} speakers x {cfg.takes} takes{voices}) "
                    f"into {out} ...")
    try:
        ww.synthesize(tmp, cfg, jobs=jobs, progress=progress)
    except cf.PhraseError as e:
        raise ConfigError(f"--keywords: {e}") from None
    except sd.SpeechUnavailable as e:
        raise ConfigError(f"--synthesize: espeak-ng cannot be used here ({e})") from None
    except ValueError as e:  # too few speakers, ...
        raise ConfigError(f"--synthesize-speakers {cfg.speakers}: {e}") from None
    finally:
        if not finished(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return _replace_with(tmp, out, finished)


def _data_root(data: str | Path) -> Path:
    """`data` as a dataset root whose clips can be joined, or one line why not."""
    root = Path(data).expanduser()
    if "://" in str(data):
        raise ConfigError(f"--data {data}: --synthesize joins a local dataset root, not a URI")
    if not root.is_dir():
        raise ConfigError(f"--data {escape_path(root)}: no such folder (a dataset root with one folder of clips per word)")
    if (root / PREPARED_MANIFEST).exists():
        raise ConfigError(f"--data {escape_path(root)}: a prepared folder; --synthesize needs the dataset root it was "
                          "prepared from, whose clips it joins with the synthesized ones")
    return root.resolve()


def _signature(root: Path) -> list:
    """What says the data changed: the modification times of its root, folders and lists."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    return [(p.name, p.stat().st_mtime_ns) for p in [root, *entries]]


def _clips(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _link_folder(dst: Path, sources: list[Path]) -> int:
    """A real folder of links to every file of `sources`, the first source's file winning a name; returns
    how many files of the later sources lost to a name already there."""
    dst.mkdir()
    lost = 0
    for src in sources:
        for f in _clips(src):
            if (dst / f.name).is_symlink():
                lost += 1
            else:
                (dst / f.name).symlink_to(f)
    return lost


def _lists_of(root: Path, clips: list[str]) -> dict[str, set[str]]:
    """A set's validation and testing lists; without a testing list, discover's speaker-hash test split."""
    lists = {name: _read_list(root, name) for name in LISTS}
    if lists["testing_list.txt"] is None:
        lists["testing_list.txt"] = {c for c in clips if is_test_speaker(speaker_of(c))}
    return {name: {line for line in (v or set()) if "\\" not in line} for name, v in lists.items()}


def _relative_clips(root: Path) -> list[str]:
    return [f"{d.name}/{f.name}" for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
            for f in _clips(d)]


def _write_merged(tmp: Path, data: Path, synth: Path, shared: set[str]) -> dict[str, int]:
    """Fill `tmp` with links to `data` and `synth`; returns the synthesized files dropped per shared folder."""
    tmp.mkdir(parents=True)
    lost = {}
    names = {d.name for root in (data, synth) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    for name in sorted(names):
        sides = [root / name for root in (data, synth) if (root / name).is_dir()]
        if len(sides) == 1:
            (tmp / name).symlink_to(sides[0], target_is_directory=True)
        else:
            lost[name] = _link_folder(tmp / name, sides)
    for name in LISTS:  # the union, paths relative to the merged root (the same folder/file on both sides)
        lines = set()
        for root in (data, synth):
            lines |= _lists_of(root, _relative_clips(root))[name]
        (tmp / name).write_text("".join(f"{line}\n" for line in sorted(lines)))
    manifest = json.loads((synth / ww.MANIFEST).read_text())
    (tmp / ww.MANIFEST).write_text(json.dumps({**manifest, "merged_with": str(data)}, indent=1) + "\n")
    return lost


def merged(data: Path, synth: Path, folders: list[str], cache: Path, progress: bool = True) -> Path:
    """`data` and the synthesized set `synth` in one folder of links, made once per data signature."""
    key = _digest(str(data), _signature(data), synth.name)
    out = cache / "merged" / f"{escape_path(data.name)[:40]}-{'-'.join(folders)[:40]}-{key}"
    shared = sorted(f for f in folders if (data / f).is_dir())
    for f in shared:
        if progress:
            logger.info(f"keyword {f}: {len(_clips(data / f))} clips from {escape_path(data)} and "
                        f"{len(_clips(synth / f))} synthesized, used together")

    def finished(folder: Path) -> bool:
        try:
            return json.loads((folder / MERGED).read_text()).get("key") == key
        except (OSError, ValueError, AttributeError):
            return False

    if finished(out):
        return out
    tmp = _aside(out)
    try:
        lost = _write_merged(tmp, data, synth, set(shared))
        (tmp / MERGED).write_text(json.dumps({"key": key, "data": str(data), "synthesized": str(synth),
                                              "keywords": folders, "shared": shared,
                                              "synthesized_clips_dropped": lost}, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        logger.info(f"joined {escape_path(data)} and the synthesized keywords in {out}")
    return _replace_with(tmp, out, finished)


def source_for(keywords: list[str], data: str | Path | None = None, cache: str | Path | None = None, *,
               speakers: int = DEFAULT_SPEAKERS, takes: int = DEFAULT_TAKES, confusables: int = 8, other_words: int = 16,
               seed: int = 0, engines: tuple[str, ...] | None = None, jobs: int | None = None,
               progress: bool = True) -> tuple[Path, list[str]]:
    """The folder to prepare for a keyword task on `keywords` spoken by espeak-ng (joined with `data`'s
    clips when given), and the keywords' class names; `engines` (None: all) the synthesizers speaking."""
    folders = keyword_folders(keywords)
    if speakers < 3:
        raise ConfigError(f"--synthesize-speakers {speakers}: at least 3 (train, validation and test each need one)")
    engines = parse_engines(engines) or sd.ENGINES
    root = _data_root(data) if data is not None else None
    try:
        cfg = ww.WakewordConfig(phrases=tuple(cf.phrase_text(k) for k in keywords), speakers=speakers, takes=takes,
                                confusables=confusables, other_words=other_words, seed=seed, engines=engines)
    except cf.PhraseError as e:
        raise ConfigError(f"--keywords: {e}") from None
    cache = cache_root(cache)
    synth = synthesized(cfg, cache, jobs=jobs, progress=progress)
    if root is None:
        return synth, folders
    return merged(root, synth, folders, cache, progress=progress), folders
