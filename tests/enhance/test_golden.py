"""Golden test: the bundled default model's LM codes and output on one example file are pinned,
so that a numerical change anywhere on the path (reading, NI-Encoder, prefix, decoding, codec
decoder, chunking) cannot pass unnoticed.

Pinned on the CPU in fp32 with one thread, decoding greedily and as the model directory says
(seeded sampling). Tolerances:

- greedy codes exactly, and their waveform, every ``DECIMATE``-th sample, within ``WAVE_ATOL``
  (its peak is about 0.3; the same codes decode identically up to float summation order, about
  1e-6);
- sampled codes on at least ``SAMPLED_MIN_MATCH`` of the positions: one flipped draw changes
  what the LM conditions on afterwards, so another BLAS may move a few. Between the controls:
  logits perturbed by up to 1e-4 relative (far beyond a rounding difference) kept every sampled
  code, other seeds matched 4-12% of them.

The fixture records the torch version and CPU capability it was made with, and a failure names
both sides. After an intended change (a new default model, a deliberate numerical change),
regenerate and say why in the commit:

    .venv/bin/python -m tests.enhance.test_golden
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from data_sim.audio import load_audio
from l3se import decoding
from l3se.decoding import DecodeConfig
from l3se.enhancer import DEFAULT_MODEL_DIR, PARTS, Enhancer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hum_reverb_5db.wav"
GOLDEN = Path(__file__).parent / "golden" / "default_hum_reverb_5db.npz"
DECIMATE = 8
WAVE_ATOL = 1e-4
SAMPLED_MIN_MATCH = 0.9
GREEDY = DecodeConfig()
REGENERATE = "regenerate with `.venv/bin/python -m tests.enhance.test_golden` if intended"

pytestmark = pytest.mark.usefixtures("one_thread")


def weights_digest() -> str:
    """SHA-256 of the bundled model's three weight files: tells a new model from a regression."""
    h = hashlib.sha256()
    for part in PARTS:
        h.update((DEFAULT_MODEL_DIR / part / "model.safetensors").read_bytes())
    return h.hexdigest()


def this_platform() -> str:
    return (f"torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()} "
            f"({platform.machine()})")


def enhance_example(enhancer: Enhancer, decode: DecodeConfig | None) -> tuple[np.ndarray, np.ndarray]:
    """(LM codes [Q, T12], enhanced waveform [S]) of ``EXAMPLE`` (``decode`` None: the model's
    own setting)."""
    codes = []
    generate = decoding.generate

    def spy(*args, **kwargs):
        codes.append(generate(*args, **kwargs))
        return codes[-1]

    wav = load_audio(EXAMPLE, enhancer.sample_rate)
    with mock.patch.object(decoding, "generate", spy):
        out = enhancer.enhance(wav, enhancer.sample_rate, decode=decode)
    (batch,) = codes  # a 3 s file is one chunk: one generate call
    return batch[0].numpy(), out


def load_model() -> Enhancer:
    return Enhancer.from_pretrained(DEFAULT_MODEL_DIR, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def golden():
    pinned = np.load(GOLDEN)
    assert str(pinned["weights"]) == weights_digest(), f"the bundled model changed: {REGENERATE}"
    return pinned


@pytest.fixture(scope="module")
def enhancer():
    return load_model()


def platforms(golden) -> str:
    return f"pinned with {golden['platform']}, run with {this_platform()}: {REGENERATE}"


def test_greedy_codes_and_waveform_are_pinned(golden, enhancer):
    codes, wave = enhance_example(enhancer, GREEDY)
    np.testing.assert_array_equal(codes, golden["greedy_codes"],
                                  err_msg=f"greedy LM codes differ; {platforms(golden)}")
    assert len(wave) == int(golden["length"])
    np.testing.assert_allclose(wave[::DECIMATE], golden["greedy_wave"], rtol=0, atol=WAVE_ATOL,
                               err_msg=f"the greedy waveform differs; {platforms(golden)}")


def test_sampled_codes_are_pinned_by_match_rate(golden, enhancer):
    codes, wave = enhance_example(enhancer, None)
    assert len(wave) == int(golden["length"])
    match = float((codes == golden["sampled_codes"]).mean())
    assert match >= SAMPLED_MIN_MATCH, (
        f"{match:.1%} of the sampled LM codes match (at least {SAMPLED_MIN_MATCH:.0%} needed); "
        f"{platforms(golden)}")


def main() -> None:
    torch.set_num_threads(1)
    enhancer = load_model()
    greedy, wave = enhance_example(enhancer, GREEDY)
    sampled, _ = enhance_example(enhancer, None)
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, greedy_codes=greedy.astype(np.int16), greedy_wave=wave[::DECIMATE],
                        sampled_codes=sampled.astype(np.int16), length=len(wave),
                        weights=weights_digest(), platform=this_platform())
    print(f"wrote {GOLDEN}: codes {greedy.shape}, {len(wave)} samples, peak "
          f"{np.abs(wave).max():.3f}, {this_platform()}")


if __name__ == "__main__":
    main()
