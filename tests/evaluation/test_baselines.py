import os

import numpy as np
import pytest
from scipy.signal import correlate

from data_sim.audio import load_audio
from l3se.evaluation import InputError, baselines, evaluate
from l3se.evaluation.baselines import Baseline, BaselineUnavailable, enhance_items, load_baseline
from l3se.evaluation.inputs import load_manifest
from l3se.evaluation.signal import si_sdr
from tests.evaluation.conftest import mix_at_snr


def peak_lag(ref: np.ndarray, out: np.ndarray, window: int = 400) -> int:
    """Lag in samples of ``out`` behind ``ref`` at the cross-correlation peak."""
    c = correlate(out, ref, mode="full", method="fft")
    zero = len(ref) - 1
    return int(np.argmax(c[zero - window:zero + window + 1])) - window


def _available(name: str) -> Baseline:
    try:
        return load_baseline(name)
    except BaselineUnavailable as e:
        pytest.skip(f'{e} (pip install -e ".[baselines]")')


class Delayed(Baseline):
    """A stand-in enhancer at 48 kHz whose output is its input, ``delay`` samples late."""

    name = "dfn3"
    rate = 48000
    delay = 1440

    def process(self, wav):
        return np.concatenate([np.zeros(self.delay, np.float32), wav])[: len(wav)]


def test_delay_compensation_and_resampling_give_back_the_input(speech):
    wav = speech[0][1]
    out = Delayed().enhance(wav)
    assert len(out) == len(wav)
    assert si_sdr(wav, out) > 40  # only resampling error is left


# SI-SDR gains at 5 dB white noise measured on the three conftest sentences: DFN3 +8.5..10.4 dB,
# RNNoise +7.8..7.9, noisereduce +1.0..2.0.
@pytest.mark.parametrize(("name", "min_gain_db"), [("dfn3", 6.0), ("rnnoise", 6.0), ("noisereduce", 0.5)])
def test_baseline_output_is_sample_aligned_and_less_noisy(name, min_gain_db, speech):
    baseline = _available(name)
    text, clean = speech[1]
    noisy = mix_at_snr(clean, 5.0, seed=11)
    out = baseline.enhance(noisy)
    assert len(out) == len(noisy) and out.dtype == np.float32
    # Measured: 0 for all three against the noisy input; DFN3 and noisereduce 0 against the clean
    # speech, RNNoise -1..0 (its filters' phase moves the peak by a fraction of a sample).
    assert abs(peak_lag(noisy, out)) <= 1
    assert abs(peak_lag(clean, out)) <= 1
    assert si_sdr(clean, out) > si_sdr(clean, noisy) + min_gain_db


def test_enhance_items_redoes_a_lost_file_alone_and_everything_on_a_new_version(tmp_path, evalset, monkeypatch):
    items = load_manifest(evalset)
    folder = tmp_path / "dfn3"
    monkeypatch.setattr(Delayed, "version", lambda self: "1.0")
    enhance_items(Delayed(), items, folder, progress=False)
    outputs = sorted(folder.rglob("*.wav"))
    assert [p.relative_to(folder).as_posix() for p in outputs] == [
        "general/utt0.wav", "general/utt1.wav", "low/utt2.wav"]
    # The identity enhancer gives the noisy file back, less its white noise above soxr's passband.
    assert si_sdr(load_audio(items[0].noisy), load_audio(outputs[0])) > 20
    enhanced = []
    real = Delayed.process
    monkeypatch.setattr(Delayed, "process", lambda self, wav: enhanced.append(1) or real(self, wav))
    stamps = [p.stat().st_mtime_ns for p in outputs]
    enhance_items(Delayed(), items, folder, progress=False)
    assert [p.stat().st_mtime_ns for p in outputs] == stamps and not enhanced
    # A lost output, same version: that file alone is redone.
    os.remove(outputs[1])
    enhance_items(Delayed(), items, folder, progress=False)
    assert outputs[1].is_file() and len(enhanced) == 1
    assert [p.stat().st_mtime_ns for p in outputs if p != outputs[1]] == stamps[:1] + stamps[2:]
    # A new version, nothing lost: every file is redone.
    stamps = [p.stat().st_mtime_ns for p in outputs]
    monkeypatch.setattr(Delayed, "version", lambda self: "2.0")
    enhance_items(Delayed(), items, folder, progress=False)
    assert len(enhanced) == 1 + len(outputs)
    assert all(p.stat().st_mtime_ns > s for p, s in zip(outputs, stamps))


def test_baselines_join_the_systems_before_clean(tmp_path, evalset, monkeypatch):
    monkeypatch.setitem(baselines._CLASSES, "dfn3", Delayed)
    monkeypatch.setattr(Delayed, "version", lambda self: "1.0")

    def missing():
        raise BaselineUnavailable("rnnoise", "pyrnnoise not installed")

    monkeypatch.setitem(baselines._CLASSES, "rnnoise", missing)
    res = evaluate(evalset, {"noisy": None, "clean": None}, metrics="sisdr", out_dir=tmp_path / "r",
                   baselines=["dfn3", "rnnoise"], progress=False, workers=1)
    assert res.systems == ["noisy", "dfn3", "clean"]
    assert res.skipped == ['skipped: rnnoise (pyrnnoise not installed; pip install -e ".[baselines]")']
    sdr = {(r["system"], r["id"]): r["sisdr"] for r in res.rows}
    # The identity enhancer, less the white noise above soxr's passband.
    assert sdr[("dfn3", "utt0")] == pytest.approx(sdr[("noisy", "utt0")], abs=0.5)
    assert (tmp_path / "r" / "baselines" / "dfn3" / "low" / "utt2.wav").is_file()


def test_baseline_input_mistakes(tmp_path, evalset, speech):
    with pytest.raises(InputError, match="unknown baseline 'dfn4'"):
        evaluate(evalset, {"noisy": None}, baselines=["dfn4"])
    with pytest.raises(InputError, match="name of a system"):
        evaluate(evalset, {"rnnoise": str(tmp_path)}, baselines=["rnnoise"])
    with pytest.raises(InputError, match="given twice"):
        evaluate(evalset, {}, baselines=["rnnoise", "rnnoise"])
    clean_only = evalset.parent / "general" / "clean"
    with pytest.raises(InputError, match="has none"):
        evaluate(clean_only, {}, baselines=["rnnoise"])


class NullStateLib:
    """A native library whose constructors return NULL and whose other functions crash on it,
    as the C code would (a segfault)."""

    def __init__(self, path):
        pass

    def __getattr__(self, name):
        def fn(*args):
            if name.endswith("_create"):
                return None
            if args and args[0] is None:
                raise AssertionError(f"{name}(NULL): a segfault in C")
            return 480  # frame sizes

        setattr(self, name, fn)  # ctypes' argtypes and restype are set on it
        return fn


@pytest.mark.parametrize(("name", "reason"), [("dfn3", "df_create could not load"),
                                              ("rnnoise", "rnnoise_create returned no state")])
def test_a_native_state_that_cannot_be_made_is_unavailable_not_a_crash(name, reason, monkeypatch):
    _available(name)
    monkeypatch.setattr(baselines.ctypes, "CDLL", NullStateLib)
    with pytest.raises(BaselineUnavailable, match=reason):
        load_baseline(name).enhance(np.zeros(4800, np.float32))
