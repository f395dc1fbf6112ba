"""Write the demo's example inputs to ``examples/``: short noisy (one also reverberant) utterances.

Speech comes from the starter corpus' TTS voices, noise from its procedural generators, and the
mixing from ``data_sim``, so the examples are made offline and the same on every run.
Usage: ``python scripts/make_examples.py [--out examples]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_sim.audio import SAMPLE_RATE, write_audio
from data_sim.mixer import active_power, mix_at_snr, reverberate
from data_sim.starter.noises import generate_noise
from data_sim.starter.rirs import sample_room, simulate_rir
from data_sim.starter.text import sentence_stream
from data_sim.starter.tts import Voice, finish, synthesize

MIN_SECONDS, MAX_SECONDS = 3.0, 6.0
# Input level of every example (dBFS over active frames), loud enough to be heard at once.
LEVEL_DB = -20.0


@dataclass(frozen=True)
class Example:
    name: str
    voice: Voice
    noise: str
    snr_db: float
    rt60: float | None = None  # seconds; None: no reverberation


EXAMPLES = (
    Example("babble_0db", Voice("espeak-ng", "en-us+m3"), "babble", 0.0),
    Example("music_5db", Voice("espeak-ng", "en-gb-x-rp+f2", pitch=2.0), "music", 5.0),
    Example("hum_reverb_5db", Voice("flite", "slt"), "hum", 5.0, rt60=0.6),
)


def make_example(ex: Example, sentences, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The noisy signal [S] (MIN_SECONDS..MAX_SECONDS long) and the transcript it speaks."""
    for sentence in sentences:
        speech = finish(synthesize(ex.voice, sentence.text), rng)
        if MIN_SECONDS * SAMPLE_RATE <= len(speech) <= MAX_SECONDS * SAMPLE_RATE:
            break
    else:
        raise RuntimeError(f"{ex.name}: no sentence fits {MIN_SECONDS}..{MAX_SECONDS} s")
    if ex.rt60 is not None:
        room = sample_room(rng, (ex.rt60, ex.rt60), max_order=20)
        speech, _ = reverberate(speech, simulate_rir(room, seed=int(rng.integers(2**31))))
    noise = generate_noise(ex.noise, rng, len(speech) / SAMPLE_RATE)[: len(speech)]
    noisy = speech + mix_at_snr(speech, noise, ex.snr_db)
    noisy *= 10 ** (LEVEL_DB / 20) / np.sqrt(active_power(noisy))
    return np.clip(noisy, -0.99, 0.99).astype(np.float32), sentence.transcript


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "examples")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    sentences = sentence_stream(seed=0, split="test")
    lines = []
    for ex in EXAMPLES:
        wav, transcript = make_example(ex, sentences, rng)
        write_audio(args.out / f"{ex.name}.wav", wav)
        lines.append(f"- `{ex.name}.wav` ({len(wav) / SAMPLE_RATE:.1f} s, {ex.voice.engine}): "
                     f"{transcript}")
    (args.out / "README.md").write_text(
        "Noisy example inputs for the demo (`app.py`), 16 kHz mono, made offline by "
        "`python scripts/make_examples.py` from the starter corpus' TTS voices and procedural "
        "noises (`data_sim`); file names give the noise, the SNR and any reverberation.\n\n"
        + "\n".join(lines) + "\n"
    )
    print(f"wrote {len(EXAMPLES)} examples to {args.out}")


if __name__ == "__main__":
    main()
