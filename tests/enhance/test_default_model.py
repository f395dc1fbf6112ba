"""The bundled default model (the full quickstart's, promoted with `--promote`): small enough for
the repo, loadable, and what `l3se enhance` uses when no --model is given."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from l3se.card import read_card
from l3se.cli import main
from l3se.config import load_config
from l3se.enhancer import CONFIG_FILE, DEFAULT_MODEL_DIR, EnhancerConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_is_small_and_samples_as_the_tiny_lm_config_says():
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    assert 1e6 < size <= 30e6
    decode = load_config(EnhancerConfig, DEFAULT_MODEL_DIR / CONFIG_FILE).decode
    assert (decode.strategy, decode.temperature) == ("sample", 0.6)


def test_card_says_what_it_was_trained_on_and_where_it_is_weak():
    from recipes.quickstart import STEPS

    card = read_card(DEFAULT_MODEL_DIR)
    assert card.steps == STEPS
    assert "synthetic TTS speech" in card.trained_on and "CPU" in card.trained_on
    assert "synthetic voices" in card.warning and "may degrade real recordings" in card.warning
    assert "below the noisy input" in card.warning
    for row in ("noisy", "enhanced", "direct", "codec", "dfn3", "clean"):
        assert f"| {row} |" in card.measured, row


def test_enhance_cli_uses_it_without_model(tmp_path):
    noisy = EXAMPLES / "babble_0db.wav"
    out = tmp_path / "enhanced.wav"
    assert main(["enhance", str(noisy), str(out)]) == 0
    x, sr_in = sf.read(noisy, dtype="float32")
    y, sr = sf.read(out, dtype="float32")
    assert sr == 16000 and len(y) == round(len(x) * 16000 / sr_in)
    assert np.isfinite(y).all()
    assert np.sqrt(np.mean(y**2)) > 1e-3  # speech-like output, not silence
    assert not np.allclose(y, x, atol=1e-3)
