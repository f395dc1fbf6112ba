"""Intrusive signal metrics on aligned 16 kHz mono signals: PESQ (wide-band), STOI, ESTOI, SI-SDR.

Every function takes ``ref`` and ``est`` of the same shape [S] (float, 16 kHz) and returns a float;
a signal the metric cannot rate (too short, silent) gives NaN rather than an exception, so one bad
file does not stop a whole evaluation.
"""

from __future__ import annotations

import numpy as np

from l3se.evaluation.base import SAMPLE_RATE


def si_sdr(ref: np.ndarray, est: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019), both signals made zero-mean first."""
    ref = np.asarray(ref, dtype=np.float64) - np.mean(ref)
    est = np.asarray(est, dtype=np.float64) - np.mean(est)
    energy = np.dot(ref, ref)
    if energy < eps:
        return float("nan")
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def pesq_wb(ref: np.ndarray, est: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """ITU-T P.862.2 wide-band PESQ (MOS-LQO, about 1.04..4.64)."""
    from pesq import PesqError, pesq

    try:
        return float(pesq(sr, ref.astype(np.float32), est.astype(np.float32), "wb"))
    except PesqError:  # e.g. no speech detected in the reference
        return float("nan")


def stoi(ref: np.ndarray, est: np.ndarray, sr: int = SAMPLE_RATE, extended: bool = False) -> float:
    """STOI (Taal et al., 2011) or, with ``extended``, ESTOI (Jensen and Taal, 2016)."""
    from pystoi import stoi as _stoi

    # pystoi warns and returns 1e-5 when silence removal leaves under 30 frames: treat as unrated.
    frames_needed = 30 * 256 * sr // 10000
    if len(ref) < frames_needed:
        return float("nan")
    return float(_stoi(ref, est, sr, extended=extended))
