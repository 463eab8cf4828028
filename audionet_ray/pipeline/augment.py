"""Per-epoch augmentation as batched torch ops, run where the model runs.

Clips travel from the data pipeline as int16 (half the bytes of float32, a quarter of the
work for the CPUs that feed a GPU); here they become augmented, standardised float32 in a
handful of vectorised ops, microseconds on a GPU and ~5 000 clips/s per CPU core. The
reference recipe: uniform noise of +-200 int16 units, a circular shift in [-250, 250],
per-clip standardisation; plus the common Speech Commands recipe of mixing in a random
stretch of background noise at a random volume. `perturb` is the random part, `standardise`
the deterministic one (all that validation and test clips get); `augment` is both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..corpus.audio import SAMPLE_RATE
from ..corpus.discover import SILENCE, UNKNOWN
from ..corpus.rooms import RT60_MIN, measured_bank


@dataclass
class AugmentConfig:
    noise_amplitude: int = 200  # int16 units of uniform noise; 0 turns it off
    max_shift: int = 250  # samples of circular shift either way; 0 turns it off
    background_prob: float = 0.8  # chance a clip gets background noise (if the dataset has any)
    background_volume: float = 0.1  # maximum volume of that noise
    # Keyword tasks (classes with _unknown_): what a sliding window sees. window_prob of the clips are
    # cut from a stream of three clips (a neighbour either side) at a random offset and relabelled by
    # what the window holds (stream_windows); gain_db changes each clip's level by up to that many dB
    # down (and a third of it up), so quiet and loud speech and noise all occur.
    window_prob: float = 0.0
    gain_db: float = 0.0
    # Far-field capture (`capture`), each a share of the clips (0: off) and a strength: mixed with 1-3
    # other clips of the batch (babble) at babble_snr_db to 15 dB above; put in a simulated room
    # (rooms.room_bank, reverberation up to rt60_max s; or rir_folder's measured ones); through a
    # random microphone or telephone band; given coloured or background noise at snr_db to 20 dB above.
    babble_prob: float = 0.0
    babble_snr_db: float = 5.0
    room_prob: float = 0.0
    rt60_max: float = 0.9
    rir_folder: str = ""  # measured room impulse responses (audio files) instead of simulated rooms
    mic_prob: float = 0.0
    snr_prob: float = 0.0
    snr_db: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> list[str]:
        """Mistakes, one line each (config.TrainConfig.validate raises them)."""
        out = []
        if not 0.0 <= self.window_prob <= 1.0:
            out.append(f"augment.window_prob must be in [0, 1], got {self.window_prob}")
        if not 0.0 <= self.gain_db <= 60.0:
            out.append(f"augment.gain_db must be in [0, 60] (dB), got {self.gain_db}")
        if not 0.0 <= self.background_prob <= 1.0:
            out.append(f"augment.background_prob must be in [0, 1], got {self.background_prob}")
        if self.background_volume < 0 or self.noise_amplitude < 0 or self.max_shift < 0:
            out.append("augment.background_volume, noise_amplitude and max_shift must be >= 0")
        for name in ("babble_prob", "room_prob", "mic_prob", "snr_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"augment.{name} must be in [0, 1] (a share of the clips), got {getattr(self, name)}")
        for name in ("babble_snr_db", "snr_db"):
            if not -10.0 <= getattr(self, name) <= 40.0:
                out.append(f"augment.{name} must be in [-10, 40] (dB, the lowest signal-to-noise ratio), got {getattr(self, name)}")
        if not RT60_MIN <= self.rt60_max <= 2.0:
            out.append(f"augment.rt60_max must be in [{RT60_MIN}, 2.0] (seconds of reverberation), got {self.rt60_max}")
        if self.rir_folder and self.room_prob > 0:  # before training, not at a trial's first batch
            try:
                measured_bank(self.rir_folder, first_only=True)
            except ValueError as e:
                out.append(str(e))
        return out

    @property
    def far_field(self) -> bool:
        """Whether any part of the far-field capture is on."""
        return max(self.babble_prob, self.room_prob, self.mic_prob, self.snr_prob) > 0


@dataclass(frozen=True)
class Roles:
    """Which classes of a keyword task are keywords, and which are _unknown_ and _silence_."""

    keyword: torch.Tensor  # bool per class
    unknown: int
    silence: int | None

    @classmethod
    def of(cls, classes: list[str], device: torch.device | str = "cpu") -> "Roles | None":
        """None for a plain classifier (no _unknown_ class): its clips are never relabelled."""
        if UNKNOWN not in classes:
            return None
        kw = torch.tensor([c not in (UNKNOWN, SILENCE) for c in classes], device=device)
        return cls(kw, classes.index(UNKNOWN), classes.index(SILENCE) if SILENCE in classes else None)


KEYWORD_SHARE = 0.5  # a window holding less than this share of a keyword's energy is not that keyword
SPEECH_SHARE = 0.15  # ... and one holding at least this share of some word's energy is _unknown_, else _silence_


def stream_windows(pcm: torch.Tensor, y: torch.Tensor, gen: torch.Generator, roles: Roles,
                   prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """int16 clips (B, N) and labels -> the same with `prob` of them replaced by sliding-window cuts.

    Each chosen clip gets a random neighbour from the batch either side (a stream of three
    clips, end to end) and a one-clip window is cut at a random offset up to 3/4 of a clip
    either way. Its label follows what the window holds, measured by each clip's energy inside
    it: the keyword with at least KEYWORD_SHARE of its energy there (the larger share wins),
    else _unknown_ when some word has SPEECH_SHARE or more there (a partial word, a neighbour),
    else _silence_. So the detector learns that half a keyword, or a keyword's neighbour, is
    not the keyword: the windows `predict` slides over a stream look exactly like these.
    """
    b, n = pcm.shape
    dev = pcm.device
    chosen = (torch.rand(b, generator=gen, device=dev) < prob).nonzero().squeeze(1)
    k = len(chosen)
    if k == 0:
        return pcm, y
    left = torch.randint(0, b, (k,), generator=gen, device=dev)
    right = torch.randint(0, b, (k,), generator=gen, device=dev)
    parts = torch.stack([pcm[left], pcm[chosen], pcm[right]], 1)  # (k, 3, N)
    labels = torch.stack([y[left], y[chosen], y[right]], 1)
    energy = parts.float().square_()
    cum = F.pad(energy.cumsum(-1), (1, 0))  # (k, 3, N + 1): energy before each sample
    reach = (3 * n) // 4
    start = n + torch.randint(-reach, reach + 1, (k,), generator=gen, device=dev)  # on the 3N canvas
    share = []
    for p in range(3):
        lo = (start - p * n).clamp(0, n)
        hi = (start + n - p * n).clamp(0, n)
        c = cum[:, p]
        share.append((c.gather(1, hi[:, None]) - c.gather(1, lo[:, None])).squeeze(1) / c[:, -1].clamp_min(1e-6))
    share = torch.stack(share, 1)  # (k, 3)
    is_kw = roles.keyword.to(dev)[labels]  # no copy when Roles.of put it on the training device
    speech = labels != (roles.silence if roles.silence is not None else -1)
    kw_share = torch.where(is_kw, share, torch.zeros_like(share))
    top = kw_share.max(1)  # the keyword with the largest share of its energy in the window
    heard = top.values >= KEYWORD_SHARE
    new = torch.where(heard, labels.gather(1, top.indices[:, None]).squeeze(1),
                      torch.full_like(labels[:, 0], roles.unknown))
    quiet = ~((share >= SPEECH_SHARE) & speech).any(1) & ~heard
    if roles.silence is not None:
        new = torch.where(quiet, torch.full_like(new, roles.silence), new)
    windows = parts.reshape(k, 3 * n).gather(1, start[:, None] + torch.arange(n, device=dev))
    pcm, y = pcm.clone(), y.clone()
    pcm[chosen], y[chosen] = windows, new
    return pcm, y


def standardise(x: torch.Tensor, eps: float = 1e-5, floor: float = 0.0) -> torch.Tensor:
    """Zero mean, unit variance per clip: what AudioNet sees in training and in use.

    `floor` (int16 units, 0: none) bounds the divisor from below: a window of quiet noise then
    stays quiet instead of being lifted to the level of speech (keyword models, which must tell
    near-silence from a word; the classifier's clips always hold one).

    Centre, then one dot product per clip for the spread and one in-place scale: on CPU ~3x
    faster than `std_mean` followed by `(x - mean) / std`, with the same result.
    """
    x = x.float()  # no copy when it already is
    n = x.shape[-1]
    c = x - x.mean(dim=-1, keepdim=True)
    var = torch.linalg.vecdot(c, c).unsqueeze(-1) / max(n - 1, 1)  # unbiased, like torch.std
    return c.mul_(1.0 / (var.sqrt().clamp_min(floor) + eps))


def _uniform_int16(shape: tuple[int, int], gen: torch.Generator, device) -> torch.Tensor:
    """Uniform int16 over its whole range, four per 64-bit draw.

    Torch's CPU generator costs about the same per draw whatever the width, so drawing 64 bits
    and reading them as four int16 is ~4x cheaper than `randint` per sample.
    """
    b, n = shape
    words = torch.empty((b, (n + 3) // 4), dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=gen)
    return words.view(torch.int16)[:, :n]


ROOMS = 64  # room impulse responses in a run's bank
MICS = 64  # microphone and telephone responses
COLOURS = (0.0, 1.0, 2.0)  # noise power ~ 1/f**c: white, pink, brown
NOISE_SECONDS = 10  # of each colour, cut at random offsets: no noise is generated per batch


@dataclass
class Capture:
    """A run's far-field chain on the training device: rooms and microphones as spectra (rfft of
    2N points, so a room's tail never wraps into the clip), and seconds of coloured noise."""

    rooms: torch.Tensor  # (ROOMS + 1, N + 1) complex; the last row: no room
    mics: torch.Tensor  # (MICS + 1, N + 1) real; the last row: no microphone colour
    colours: torch.Tensor  # (len(COLOURS) * NOISE_SECONDS * SAMPLE_RATE,) RMS 3000 int16 units, end to end

    @classmethod
    def of(cls, cfg: AugmentConfig, seed: int, n: int, device: torch.device | str = "cpu") -> "Capture | None":
        """None when the capture is off: nothing is simulated then."""
        import numpy as np

        from ..corpus.rooms import random_mic, room_bank

        if not cfg.far_field:
            return None
        if cfg.room_prob <= 0:
            bank = np.ones((1, 1), np.float32)
        else:
            bank = measured_bank(cfg.rir_folder) if cfg.rir_folder else room_bank(seed, ROOMS, cfg.rt60_max)
        rooms = torch.fft.rfft(torch.from_numpy(bank[:, :n]), 2 * n)
        rooms = torch.cat([rooms, torch.ones_like(rooms[:1])])
        freqs = np.fft.rfftfreq(2 * n, 1.0 / SAMPLE_RATE)
        rng = np.random.default_rng([seed, 0x3C])
        mics = np.stack([*(random_mic(rng, freqs) for _ in range(MICS)), np.ones_like(freqs)])
        mics = torch.from_numpy(mics.astype(np.float32))
        m = NOISE_SECONDS * SAMPLE_RATE
        f = np.maximum(np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE), 20.0)
        noise = []
        for c in COLOURS:
            x = np.fft.irfft(np.fft.rfft(rng.standard_normal(m)) * f ** (-c / 2), m)
            noise.append(3000.0 * x / np.sqrt(np.mean(x**2)))  # int16 units, as the clips (_rms floors at 1)
        colours = torch.from_numpy(np.concatenate(noise).astype(np.float32))
        return cls(rooms.to(device), mics.to(device), colours.to(device))


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean(-1, keepdim=True).sqrt_().clamp_min_(1.0)


def _stretches(source: torch.Tensor, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """`k` random stretches of `n` samples of a long 1-D signal, as float32 (k, n)."""
    start = torch.randint(0, source.numel() - n + 1, (k,), generator=gen, device=source.device)
    return source.reshape(-1).unfold(0, n, 1)[start].float()


def capture(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, cap: Capture,
            noise: torch.Tensor | None = None, speech: torch.Tensor | None = None) -> torch.Tensor:
    """Float clips (B, N) in int16 units -> the same clips (changed in place) as a far-field microphone records them.

    In the order sound meets them: other talkers (1-3 other clips of the batch, each at its own
    SNR; `speech` masks the clips that may be babbled over, so a _silence_ clip never becomes
    speech), the room, the microphone or telephone band, then noise (coloured, or a stretch of
    the dataset's background noise when it has some) at an SNR to the clip. Only the clips
    chosen for each step are touched: one FFT pair of 2N for room and microphone together.
    """
    b, n = x.shape
    dev = x.device

    def chosen(p: float) -> torch.Tensor:
        return torch.rand(b, generator=gen, device=dev) < p

    def rows(mask: torch.Tensor) -> torch.Tensor:
        return mask.nonzero().squeeze(1)

    if cfg.babble_prob > 0 and b > 1:
        talk = chosen(cfg.babble_prob) & (speech if speech is not None else True)
        src, level = x.clone(), _rms(x)
        for t in range(3):  # the first talker always, a second and third with chance 1/2 each
            i = rows(talk & chosen(0.5) if t else talk)
            other = (i + torch.randint(1, b, (len(i),), generator=gen, device=dev)) % b
            snr = cfg.babble_snr_db + 15 * torch.rand(len(i), 1, generator=gen, device=dev)
            x[i] += src[other] * (level[i] / level[other] * torch.pow(10.0, -snr / 20))
    room = chosen(cfg.room_prob) if cfg.room_prob > 0 else torch.zeros(b, dtype=torch.bool, device=dev)
    mic = chosen(cfg.mic_prob) if cfg.mic_prob > 0 else torch.zeros(b, dtype=torch.bool, device=dev)
    i = rows(room | mic)
    if len(i):
        r = torch.randint(0, len(cap.rooms) - 1, (len(i),), generator=gen, device=dev)
        m = torch.randint(0, len(cap.mics) - 1, (len(i),), generator=gen, device=dev)
        r = torch.where(room[i], r, len(cap.rooms) - 1)  # the last row: no room, no microphone
        m = torch.where(mic[i], m, len(cap.mics) - 1)
        resp = cap.rooms[r].mul_(cap.mics[m])
        x[i] = torch.fft.irfft(torch.fft.rfft(x[i], 2 * n) * resp, 2 * n)[:, :n]
    if cfg.snr_prob > 0:
        i = rows(chosen(cfg.snr_prob))
        extra = _stretches(cap.colours, len(i), n, gen)
        if noise is not None and noise.numel() > n:  # half of them the dataset's own background
            own = rows(torch.rand(len(i), generator=gen, device=dev) < 0.5)
            extra[own] = _stretches(noise, len(own), n, gen)
        snr = cfg.snr_db + 20 * torch.rand(len(i), 1, generator=gen, device=dev)
        x[i] += extra * (_rms(x[i]) / _rms(extra) * torch.pow(10.0, -snr / 20))
    return x


def perturb(
    pcm: torch.Tensor,
    gen: torch.Generator,
    cfg: AugmentConfig,
    noise: torch.Tensor | None = None,
    cap: Capture | None = None,
    speech: torch.Tensor | None = None,
) -> torch.Tensor:
    """int16 clips (B, N) -> shifted, noisy float32 clips (B, N) in int16 units, not standardised.

    With `cap` (a far-field run) the shifted clips go through `capture` before the noises below.

    The shift is applied first, on int16 (half the bytes), then background and uniform noise;
    as both noises are position-independent this is the same distribution as noise-then-shift.
    Uniform noise is continuous in [-a, a) rather than integer-valued: same mean and spread.
    """
    b, n = pcm.shape
    dev = pcm.device
    if cfg.max_shift > 0:
        s = cfg.max_shift
        shift = torch.randint(-s, s + 1, (b,), generator=gen, device=dev)
        start = (n - shift) % n  # torch.roll by `shift`, one shift per clip, as one row gather
        pcm = torch.cat([pcm, pcm], dim=1).unfold(1, n, 1)[torch.arange(b, device=dev), start]
    x = pcm.to(torch.float32, copy=True)  # ours to change in place, whatever came in
    if cap is not None:
        x = capture(x, gen, cfg, cap, noise, speech)
    if noise is not None and noise.numel() > n and cfg.background_prob > 0 and cfg.background_volume > 0:
        start = torch.randint(0, noise.numel() - n + 1, (b,), generator=gen, device=dev)
        seg = noise.reshape(-1).unfold(0, n, 1)[start]  # (B, N) random stretches of background
        keep = torch.rand(b, 1, generator=gen, device=dev) < cfg.background_prob
        vol = torch.rand(b, 1, generator=gen, device=dev) * cfg.background_volume * keep
        x.addcmul_(seg, vol)
    if cfg.noise_amplitude > 0:
        x.add_(_uniform_int16((b, n), gen, dev), alpha=cfg.noise_amplitude / 32768.0)
    if cfg.gain_db > 0:
        db = torch.rand(b, 1, generator=gen, device=dev) * (cfg.gain_db * 4 / 3) - cfg.gain_db
        x.mul_(torch.pow(10.0, db / 20))
    return x


def augment(
    pcm: torch.Tensor,
    gen: torch.Generator,
    cfg: AugmentConfig,
    noise: torch.Tensor | None = None,
    floor: float = 0.0,
    cap: Capture | None = None,
    speech: torch.Tensor | None = None,
) -> torch.Tensor:
    """int16 clips (B, N) -> augmented, standardised float32 (B, N); randomness only from `gen`.

    Training input. Validation and test clips get `standardise` alone.
    """
    return standardise(perturb(pcm, gen, cfg, noise, cap, speech), floor=floor)


def epoch_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """Fresh randomness every epoch and worker, the same again for the same seed (and on resume)."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 7_919 + rank) % (2**63 - 1))
    return g
