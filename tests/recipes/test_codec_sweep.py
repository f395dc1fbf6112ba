"""The codec sweep's measures of a sound that every output shares whatever its input."""

from __future__ import annotations

import numpy as np

from data_sim.audio import write_audio
from recipes.codec_sweep import BASELINE, DESIGNS, SweepConfig, run_dir, shared_sound

SR = 16000


def _files(tmp_path, signals):
    paths = []
    for i, x in enumerate(signals):
        paths.append(tmp_path / f"{i}.wav")
        write_audio(paths[-1], x.astype(np.float32))
    return paths


def test_a_shared_25_hz_comb_shows_in_both_measures(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    # A pulse train at 25 Hz, the same in every file, under independent noise.
    comb = 0.05 * sum(np.cos(2 * np.pi * 25 * k * t) for k in range(1, 40))
    independent = [0.1 * rng.standard_normal(3 * SR) for _ in range(4)]
    clean = shared_sound(_files(tmp_path / "a", independent))
    buzzing = shared_sound(_files(tmp_path / "b", [x + comb for x in independent]))
    assert clean["cross_corr"] < 0.05 and abs(clean["comb_db"]) < 2
    assert buzzing["cross_corr"] > 0.5 and buzzing["comb_db"] > 10


def test_run_folders_are_keyed_by_settings():
    cfg = SweepConfig(steps=100)
    assert run_dir(cfg, "mel") != run_dir(SweepConfig(steps=200), "mel")
    assert run_dir(cfg, "mel") != run_dir(cfg, "interp")
    assert run_dir(cfg, "mel").name.startswith("mel-")
    # Every design restates the pre-sweep codec first, whatever tiny.yaml says today.
    assert DESIGNS["baseline"] == [] and "model.ssl.frontend=conv" in BASELINE
