import json

import numpy as np
import pytest
import torch

from data_sim.audio import write_audio
from l3se.cli import main
from l3se.diagnostics import (
    codebook_usage,
    envelope_correlation,
    mean_pairwise_correlation,
    prefix_reliance,
)
from tests.conftest import speech_like
from tests.enhance.tiny_model import make_tiny_model_dir
from tests.models.test_lm import tiny_lm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_envelope_correlation_tracks_loudness_not_level():
    rng = np.random.default_rng(0)
    x, other = speech_like(rng, 2.0), speech_like(rng, 2.0)
    assert envelope_correlation(x, x) == pytest.approx(1.0)
    assert envelope_correlation(0.1 * x, x) == pytest.approx(1.0)
    # Other speech with the same rhythm statistics, and speech-shaped noise with no pauses.
    assert envelope_correlation(other, x) < 0.5
    assert envelope_correlation(rng.standard_normal(len(x)), x) < 0.3
    assert envelope_correlation(np.zeros_like(x), x) == 0.0
    # Different lengths: compared over the common part.
    assert envelope_correlation(x[:16000], x) == pytest.approx(1.0)


def test_usage_and_pairwise_correlation():
    codes = torch.tensor([[[0, 1, 1, 3], [2, 2, 2, 2]]])  # [1, Q=2, T=4]
    assert codebook_usage(codes, 4) == [0.75, 0.25]
    rng = np.random.default_rng(1)
    x = speech_like(rng, 1.0)
    assert mean_pairwise_correlation([x, 2 * x, x[:8000]]) == pytest.approx(1.0)
    noise = [rng.standard_normal(16000) for _ in range(3)]
    assert abs(mean_pairwise_correlation(noise)) < 0.05


def test_prefix_reliance_needs_two_items():
    lm = tiny_lm("acoustic", n_codebooks=4, codebook_size=16).eval()
    prefix, codes = torch.randn(1, 3, 64), torch.randint(0, 16, (1, 4, 3))
    with pytest.raises(ValueError, match="at least 2"):
        prefix_reliance(lm, prefix, torch.tensor([3]), codes)
    # Items cut to the shortest: a borrowed prefix never brings padding.
    report = prefix_reliance(lm, torch.randn(2, 3, 64), torch.tensor([3, 2]),
                             torch.randint(0, 16, (2, 4, 3)))
    assert set(report) == {"true", "shuffled", "zeros"}
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in report.values())


def test_diagnose_command_reports_every_part(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        clean = speech_like(rng, 1.5)
        noisy = clean + 0.05 * rng.standard_normal(len(clean)).astype(np.float32)
        for kind, wav in (("clean", clean), ("noisy", noisy)):
            write_audio(tmp_path / "ev" / "general" / kind / f"u{i}.wav", wav)
        rows.append({"id": f"u{i}", "subset": "general", "noisy": f"general/noisy/u{i}.wav",
                     "clean": f"general/clean/u{i}.wav", "snr_db": 20.0, "text": "A"})
    (tmp_path / "ev" / "evalset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = make_tiny_model_dir(tmp_path / "model")
    out = tmp_path / "report.json"
    assert main(["diagnose", str(model), "--ref", str(tmp_path / "ev"), "-n", "3",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("noisy", "codec", "direct", "enhanced", "teacher_forced"):
        assert f"\n{row} " in text
    assert "teacher-forced" in text and "all-zero prefix" in text
    report = json.loads(out.read_text())
    assert report["utterances"] == ["general/u0", "general/u1", "general/u2"]
    # The noisy input is its clean reference plus weak noise: it follows it.
    assert report["noisy"]["envelope_correlation"] > 0.9
    assert len(report["codec"]["codebook_usage"]) == 8

    assert main(["diagnose", str(tmp_path / "nope"), "--ref", str(tmp_path / "ev")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["diagnose", str(model), "--ref", str(tmp_path / "ev"), "-n", "1"]) == 2
