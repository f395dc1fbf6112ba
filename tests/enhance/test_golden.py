"""Golden test: the bundled default model's LM codes and output on one example file are pinned,
so that a numerical change anywhere on the path (reading, NI-Encoder, prefix, decoding, codec
decoder, chunking) cannot pass unnoticed.

Pinned on the CPU in fp32 with one thread, decoding as the model directory says (seeded
sampling: every draw is reproducible). Tolerances: the codes exactly; the waveform, every
``DECIMATE``-th sample, within ``WAVE_ATOL`` (its peak is about 0.3; the same codes decode
identically up to float summation order, about 1e-6).

After an intended change (a new default model, a deliberate numerical change), regenerate and say
why in the commit:

    .venv/bin/python -m tests.enhance.test_golden
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from data_sim.audio import load_audio
from l3se import decoding
from l3se.enhancer import DEFAULT_MODEL_DIR, PARTS, Enhancer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hum_reverb_5db.wav"
GOLDEN = Path(__file__).parent / "golden" / "default_hum_reverb_5db.npz"
DECIMATE = 8
WAVE_ATOL = 1e-4
REGENERATE = "regenerate with `.venv/bin/python -m tests.enhance.test_golden` if intended"

pytestmark = pytest.mark.usefixtures("one_thread")


def weights_digest() -> str:
    """SHA-256 of the bundled model's three weight files: tells a new model from a regression."""
    h = hashlib.sha256()
    for part in PARTS:
        h.update((DEFAULT_MODEL_DIR / part / "model.safetensors").read_bytes())
    return h.hexdigest()


def enhance_example() -> tuple[np.ndarray, np.ndarray]:
    """(LM codes [Q, T12], enhanced waveform [S]) of the bundled model on ``EXAMPLE``."""
    enhancer = Enhancer.from_pretrained(DEFAULT_MODEL_DIR, device="cpu", dtype="fp32")
    codes = []
    generate = decoding.generate

    def spy(*args, **kwargs):
        codes.append(generate(*args, **kwargs))
        return codes[-1]

    wav = load_audio(EXAMPLE, enhancer.sample_rate)
    with mock.patch.object(decoding, "generate", spy):
        out = enhancer.enhance(wav, enhancer.sample_rate)
    (batch,) = codes  # a 3 s file is one chunk: one generate call
    return batch[0].numpy(), out


def test_default_model_output_is_pinned():
    golden = np.load(GOLDEN)
    assert str(golden["weights"]) == weights_digest(), f"the bundled model changed: {REGENERATE}"
    codes, wave = enhance_example()
    np.testing.assert_array_equal(codes, golden["codes"], err_msg=f"LM codes differ: {REGENERATE}")
    assert len(wave) == int(golden["length"])
    np.testing.assert_allclose(wave[::DECIMATE], golden["wave"], rtol=0, atol=WAVE_ATOL,
                               err_msg=f"the waveform differs: {REGENERATE}")


def main() -> None:
    torch.set_num_threads(1)
    codes, wave = enhance_example()
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, codes=codes.astype(np.int16), wave=wave[::DECIMATE],
                        length=len(wave), weights=weights_digest())
    print(f"wrote {GOLDEN}: codes {codes.shape}, {len(wave)} samples, peak {np.abs(wave).max():.3f}")


if __name__ == "__main__":
    main()
