"""Every benchmark runs: each one in its tiny `--quick` mode, as a user runs it, in a subprocess.

The figures themselves are noise at this size; these tests check that each benchmark runs end to
end, measures both sides and writes figures that make sense (positive rates, every phase timed,
a plot), so that the benchmarks in docs/performance.md can always be re-run.
Each benchmark gets its own demo-data cache, so nothing is written to the user's home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench_cache")


def run_bench(script: str, tmp_path: Path, cache: Path, *args: str, timeout: float = 600) -> dict:
    out = tmp_path / f"{Path(script).stem}.json"
    env = {**os.environ, "AUDIONET_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--json", str(out), *args],
                          env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "load average" in proc.stdout, "every benchmark prints the machine and its load"
    return json.loads(out.read_text())


def test_bench_gpu_quick_on_cpu(tmp_path, bench_cache):
    from audionet_ray.modeling.model import ModelConfig, flops_per_clip

    fig = run_bench("bench_gpu.py", tmp_path, bench_cache, "--device", "cpu")
    assert fig["device"] == "cpu"
    assert fig["flops_per_clip"] == pytest.approx(flops_per_clip(ModelConfig(10, 8, 32)))
    assert fig["matmul_flop_s"]["bf16"] > 0 and fig["matmul_flop_s"]["fp32"] > 0
    measured = [r for r in fig["rows"] if r.get("clips_per_s")]
    assert {r["setting"].split()[0] for r in measured} == {"fp32", "bf16"}
    assert {r["batch"] for r in measured} >= {8, 16}
    assert any(r["h2d"] for r in measured), "the host-to-device row ran"
    for r in measured:
        assert r["clips_per_s"] > 0 and 0 < r["of_bf16_matmul"] < 10


def test_bench_train_quick(tmp_path, bench_cache):
    fig = run_bench("bench_train.py", tmp_path, bench_cache)
    (rnd,) = fig["rounds"]
    runs = rnd["runs"]
    assert set(runs) == {"ray", "ray-stream", "bare"}
    for name, run in runs.items():
        assert len(run["epochs"]) == 3, name
        for key in ("steady_clips_s", "epoch_clips_s", "run_clips_s"):
            assert run["figures"][key] > 0, (name, key)
    # every variant trained on the same rows
    assert len({e["clips"] for run in runs.values() for e in run["epochs"]}) == 1
    assert runs["ray"]["threads"] == runs["ray-stream"]["threads"] == 1, "Ray gave the 1-CPU worker one thread"
    assert runs["ray"]["fill_s"] > 0, "the small demo data was read into memory once"
    assert runs["ray-stream"]["fill_s"] == 0, "AUDIONET_MEMORY_MB=0 streamed every epoch"
    assert set(fig["ratios"]) == {"ray", "ray-stream"}


def test_bench_startup_quick(tmp_path, bench_cache):
    fig = run_bench("bench_startup.py", tmp_path, bench_cache)
    (run,) = fig["runs"]
    phases = dict((name, s) for name, s in run["phases"])
    total = phases["total: launch to first step done"]
    assert 0 < total < 600
    main = [s for name, s in run["phases"] if not name.startswith(" ") and not name.startswith("total")]
    assert all(s == s and s >= 0 for s in main), "every phase was seen, in order"
    assert sum(main) == pytest.approx(total, rel=1e-6)


def test_bench_search_quick(tmp_path, bench_cache):
    png = tmp_path / "search.png"
    fig = run_bench("bench_search.py", tmp_path, bench_cache, "--plot", str(png))
    assert png.stat().st_size > 1000
    assert {r["method"] for r in fig["rows"]} == {"random + FIFO", "TPE + ASHA"}
    for method, curves in fig["curves"].items():
        (ys,) = curves
        assert len(ys) == fig["budget"]
        assert ys == sorted(ys) and 0 <= ys[-1] <= 1, method  # best-so-far never falls
    fifo = next(r for r in fig["rows"] if r["method"] == "random + FIFO")
    assert fifo["trial_epochs"] == fig["budget"], "random + FIFO runs every trial to the end"


def test_bench_variants_quick(tmp_path, bench_cache):
    fig = run_bench("bench_variants.py", tmp_path, bench_cache)
    rows = {r["variant"]: r for r in fig["results"]}
    assert set(rows) == {"reference", "batch"}
    assert rows["batch"]["params"] - rows["reference"]["params"] == 5 * 2 * 8  # width 8: scale and shift per channel
    for r in rows.values():
        assert 0 <= r["val@2"] <= 1 and 0 <= r["test"] <= 1 and r["s/epoch"] > 0


def test_bench_kws_quick(tmp_path, bench_cache):
    fig = run_bench("bench_kws.py", tmp_path, bench_cache)
    assert set(fig["streaming"]) == {"onnx", "int8"}
    assert fig["frr_rows"] and all(r["float FRR@bundle"] is None or 0 <= r["float FRR@bundle"] <= 1 for r in fig["frr_rows"])
    assert fig["int8"]["test_clips"] > 0 and 0 <= fig["int8"]["test_accuracy"] <= 1
    (lat,) = fig["latency"]
    assert lat["float ms"] > 0 and lat["int8 ms"] > 0
    assert fig["deployment"]["latency_per_window_ms"].keys() == {"float", "int8"}


def test_bench_pareto_quick(tmp_path, bench_cache):
    fig = run_bench("bench_pareto.py", tmp_path, bench_cache)
    assert fig["points"] == 2 and 1 <= len(fig["front"]) <= 2
    front = sorted(fig["front"], key=lambda r: r["MMACs"])
    # along the front more MACs buy more validation accuracy; each point was exported and tested
    assert all(a["val_accuracy"] < b["val_accuracy"] for a, b in zip(front, front[1:]))
    assert all(0 <= r["test_accuracy"] <= 1 and r["params"] > 0 for r in front)


def test_bench_wakeword_quick(tmp_path, bench_cache):
    fig = run_bench("bench_wakeword.py", tmp_path, bench_cache, "--out", str(tmp_path / "ww"), timeout=900)
    (phrase,) = fig["phrases"]
    trained = fig["phrases"][phrase]["trained"]
    assert phrase == "marmalade" and trained["window_s"] == 1.0
    assert 0 < trained["synthesize_s"] < trained["typed_to_bundle_s"] and trained["search_s"] > 0
    sets = fig["phrases"][phrase]["sets"]
    assert {s["engine"] for s in sets.values()} == {"espeak", "espeak-klatt"}
    assert sets["held-out engine"]["variants_seen_in_training"] == 0, "the held-out engine stayed out of training"
    for s in sets.values():
        assert 0 <= s["frr_at_1"] <= 1 and 0 <= s["clip_accuracy"] <= 1 and s["phrase_clips"] == 8 * 2
        assert s["keyword_free_hours"] >= 0.02 and s["spoken"] > 0
        assert Path(s["det_plot"]).stat().st_size > 1000
        assert s["rule"] == "top" and set(s["by_rule"]) == {"keyword", "top"}  # the other rule beside it
        assert s["by_rule"]["top"]["frr_at_1"] == s["frr_at_1"]
    assert len(fig["rows"]) == 2 and all("FRR@1FA/h keyword rule" in r for r in fig["rows"])


def test_bench_throughput_budget_quick(tmp_path, bench_cache):
    fig = run_bench("bench_throughput.py", tmp_path, bench_cache, "--time-budget", "90s")
    assert [r["trainer"] for r in fig["rows"]] == ["torch", "auto"] and fig["budget_s"] == 90
    searches = fig["searches"]
    for trainer, r in searches.items():
        assert 0.5 <= r["of_budget"] <= 1.5, (trainer, r["wall_s"])  # the search held its budget
        assert 1 <= r["trials"] <= r["trial_epochs"] and r["clips_per_s"] > 0 and r["bare_clips_per_s"] > 0
        assert r["x_bare_over_budget"] == pytest.approx(r["train_clips"] / (r["bare_clips_per_s"] * 90))
        assert 0 < r["launch_to_first_step_s"] < r["wall_s"] and 0 <= r["test_accuracy"] <= 1
    # torch fits a TorchTrainer per trial; auto trains in Tune's trial process, reused, so later trials start
    assert searches["torch"]["plan"].endswith("a TorchTrainer per trial (--trainer torch)")
    assert "Train worker" in searches["torch"]["cpu_by_kind"]
    assert searches["auto"]["plan"].endswith("trials train in Tune's trial process, reused")
    assert searches["auto"]["turnovers"] and searches["auto"]["later_startup_max_s"] >= 0
    assert searches["torch"]["checkpoint_share"] is None  # a TorchTrainer's report writes them: not timed
    assert searches["auto"]["checkpoints"] >= 1 and 0 < searches["auto"]["checkpoint_share"] < 1
