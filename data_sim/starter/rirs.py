"""Room impulse responses of shoebox rooms, simulated with pyroomacoustics' image-source method.

A room is drawn from a seed: its size, a target RT60, and a source and a microphone at least
``WALL_MARGIN_M`` from every wall. ``pra.inverse_sabine`` turns the target RT60 into wall
absorption and the image order needed; the order is capped (``max_order``), because the cost
grows with its cube and a small, very reverberant room would otherwise take seconds. The
randomised image-source method breaks up the flutter echoes of a perfectly regular shoebox.

The response is cut so that the direct path sits ``DIRECT_DELAY_S`` after the start, truncated
at its RT60 (the target or the simulated one, whichever is longer) with a short fade, and
scaled so that its peak (the direct path) is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra

from data_sim.audio import SAMPLE_RATE

WALL_MARGIN_M = 0.5
MIN_SOURCE_MIC_M = 0.5
# Kept before the direct peak: the fractional-delay filter's pre-ringing (1 ms).
DIRECT_DELAY_S = 0.001
ROOM_MIN_M = (3.0, 3.0, 2.4)
ROOM_MAX_M = (10.0, 8.0, 4.0)
_FADE_S = 0.02


@dataclass(frozen=True)
class Room:
    dims: tuple[float, float, float]  # metres
    rt60: float  # target, seconds
    source: tuple[float, float, float]  # metres
    mic: tuple[float, float, float]  # metres
    absorption: float  # energy absorption of every wall
    max_order: int  # image-source order used (after the cap)


def sample_room(rng: np.random.Generator, rt60_range: tuple[float, float], max_order: int) -> Room:
    """Draw a room whose target RT60 is reachable (absorption <= 1) with the given order cap."""
    while True:
        dims = rng.uniform(ROOM_MIN_M, ROOM_MAX_M)
        rt60 = float(rng.uniform(*rt60_range))
        try:
            absorption, order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # a large room cannot be that dry: draw again
            continue
        source, mic = (rng.uniform(WALL_MARGIN_M, dims - WALL_MARGIN_M) for _ in range(2))
        if np.linalg.norm(source - mic) < MIN_SOURCE_MIC_M:
            continue
        return Room(
            dims=tuple(round(float(d), 3) for d in dims),
            rt60=round(rt60, 4),
            source=tuple(float(v) for v in source),
            mic=tuple(float(v) for v in mic),
            absorption=float(absorption),
            max_order=int(min(order, max_order)),
        )


def simulate_rir(room: Room, seed: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The room's impulse response: float32 [S], direct peak at ``DIRECT_DELAY_S``, peak 1."""
    pra.random.seed(numpy=seed, libroom=seed)  # the randomised image positions
    shoebox = pra.ShoeBox(
        list(room.dims),
        fs=sr,
        materials=pra.Material(room.absorption),
        max_order=room.max_order,
        use_rand_ism=True,
        max_rand_disp=0.05,
    )
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.mic))
    shoebox.compute_rir()
    h = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    peak = int(np.argmax(np.abs(h)))
    start = max(0, peak - int(DIRECT_DELAY_S * sr))
    # Image-source rooms often ring longer than Sabine's formula promises: keep the longer one.
    keep_s = max(room.rt60, measure_rt60(h[start:], sr), 0.1)
    h = h[start : start + int((DIRECT_DELAY_S + keep_s) * sr)]
    fade = min(int(_FADE_S * sr), len(h))
    h[len(h) - fade :] *= np.linspace(1.0, 0.0, fade)
    return (h / np.abs(h).max()).astype(np.float32)


def measure_rt60(h: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """RT60 (s) from the Schroeder decay, extrapolated from its -5..-35 dB range (T30)."""
    return float(pra.experimental.measure_rt60(h, fs=sr, decay_db=30))
