"""What the benchmarks share: the machine line, a demo dataset, small tables, JSON output.

Every benchmark measures its baseline and its candidate side by side in one process run and
prints ratios, because this machine is shared and absolute figures drift with its load: the
machine line records the load average next to the figures.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

CACHE = Path(os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict:
    """CPU model, core count, library versions and the load average right now."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average": load_average(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict | None = None) -> str:
    m = info or machine()
    gpu = f", {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['cpu']}, {m['cores']} cores{gpu}; torch {m['torch']}"
            + (f", ray {m['ray']}" if m.get("ray") else "") + f"; load average {m['load_average']} ({m['date']})")


def demo_prepared(speakers: int = 24, clips_per_speaker: int = 3) -> Path:
    """The demo dataset (the CLI's default is 24 speakers x 3 clips), generated and prepared once."""
    from audionet_ray.pipeline.data import ensure_prepared
    from audionet_ray.corpus.demo_data import generate

    root = CACHE / "bench" / f"demo-{speakers}x{clips_per_speaker}"
    if not (root / "testing_list.txt").exists():
        generate(root, speakers=speakers, clips_per_speaker=clips_per_speaker)
    return ensure_prepared(root, cache_dir=CACHE, progress=False)


def speech_prepared(speakers: int = 200, takes: int = 1, seed: int = 0) -> Path:
    """A real-speech set from the project's espeak-ng generator (16 words), made and prepared once."""
    from audionet_ray.pipeline.data import ensure_prepared
    from audionet_ray.corpus.speech_data import SpeechConfig, generate

    root = CACHE / "bench" / f"speech-{speakers}x{takes}-seed{seed}"
    if not (root / "testing_list.txt").exists():
        generate(root, SpeechConfig(speakers=speakers, takes=takes, seed=seed), progress=False)
    return ensure_prepared(root, cache_dir=CACHE, progress=False)


def print_table(rows: list[dict], cols: list[str] | None = None) -> None:
    """A plain aligned table; floats with 3-4 significant figures."""
    if not rows:
        return
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def write_json(path: str | None, obj: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
        print(f"figures written to {path}")


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def run_search(data: Path, out: Path, name: str, budget: str, extra: list[str]) -> dict:
    """One search in its own process, as a user runs it: its wall time, best-trial line and last lines."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "audionet_ray.tune", "--data", str(data), "--time-budget", budget,
           "--storage", str(out), "--name", name, "--quiet", *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    (out / f"{name}.log").write_text(p.stdout + p.stderr)
    if p.returncode:
        raise SystemExit(f"search {name} failed ({p.returncode}); see {out / (name + '.log')}:\n{p.stderr[-2000:]}")
    lines = p.stdout.strip().splitlines()
    return {"name": name, "wall_s": wall, "best": next((ln for ln in lines if ln.startswith("best trial")), ""),
            "tail": lines[-6:]}
