"""Shared fixtures: one Ray instance, one small demo dataset and its prepared shards per session.

Starting Ray costs seconds and the machine is small, so every test that needs Ray shares
`ray_session`; tests that need their own dataset write it under their own tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Calibration and streaming evaluation add hours of keyword-free audio by default (3 h, so that
# 1 FA/h is measurable); the suite's tiny datasets and models need minutes to test the same code.
os.environ.setdefault("AUDIONET_KEYWORD_FREE_HOURS", "0.05")

DEMO_SPEAKERS = 12  # 10 words x 12 speakers x 2 clips = 240 clips: test, val and train all have speakers
DEMO_CLIPS_PER_SPEAKER = 2
DEMO_SEED = 2  # its 11 non-test speakers' buckets span 0.007-0.995: every train_ratio from 0.01 to 0.99 validates


@pytest.fixture(scope="session")
def ray_session():
    """The session's Ray: 2 CPUs plus 2 `driver_slot`s for Tune trial drivers (see the Ray notes)."""
    import ray

    started = False
    if not ray.is_initialized():
        from audionet_ray.core.ray_setup import init_ray

        init_ray(num_cpus=2)
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset in Speech Commands layout (with testing_list.txt and noise); read-only."""
    from audionet_ray.corpus.demo_data import generate

    return generate(tmp_path_factory.mktemp("demo") / "data", speakers=DEMO_SPEAKERS, seed=DEMO_SEED,
                    clips_per_speaker=DEMO_CLIPS_PER_SPEAKER)


@pytest.fixture(scope="session")
def prepared_demo(demo_root, tmp_path_factory) -> Path:
    """`demo_root` prepared into Parquet shards (all words, no _unknown_/_silence_); read-only."""
    from audionet_ray.corpus.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "demo"
    prepare(demo_root, out, workers=1, progress=False)
    return out
