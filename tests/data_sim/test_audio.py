"""Every bad-input case: converted, or refused with the file and the reason."""

import numpy as np
import pytest
import soundfile as sf

from data_sim.audio import AudioError, audio_info, load_audio, load_channels, write_audio
from data_sim.dataset import MixtureDataset
from data_sim.mixer import MixConfig
from data_sim.sources import SourceError, read_jsonl, scan_folder

SR = 16000


def tone(sr, seconds=1.0, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 48000])
def test_rates_converted(tmp_path, sr):
    sf.write(tmp_path / "a.wav", tone(sr), sr)
    x = load_audio(tmp_path / "a.wav")
    assert x.dtype == np.float32 and abs(len(x) - SR) <= 1
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * SR / len(x) - 440) < 3  # the tone survives resampling


def test_stereo_downmixed(tmp_path):
    st = np.stack([tone(SR), tone(SR, f=440.0) * 0.5], axis=1)
    sf.write(tmp_path / "s.wav", st, SR)
    x = load_audio(tmp_path / "s.wav")
    assert x.ndim == 1 and np.allclose(x, 0.75 * tone(SR), atol=1e-3)


def test_channels_kept_apart_silent_ones_dropped(tmp_path):
    silent = np.zeros(48000, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([tone(48000), silent, tone(48000, f=880.0)], 1), 48000)
    x = load_channels(tmp_path / "s.wav")
    assert x.shape == (2, SR) and x.dtype == np.float32
    inner = slice(100, -100)  # resampling rings where the tones start and stop
    assert np.allclose(x[0, inner], tone(SR)[inner], atol=1e-2)
    assert np.allclose(x[1, inner], tone(SR, f=880.0)[inner], atol=1e-2)
    sf.write(tmp_path / "z.wav", np.stack([silent, silent], 1), 48000)
    with pytest.raises(AudioError, match="all-silent"):
        load_channels(tmp_path / "z.wav")


def test_8bit_converted(tmp_path):
    sf.write(tmp_path / "b.wav", tone(SR), SR, subtype="PCM_U8")
    x = load_audio(tmp_path / "b.wav")
    assert np.max(np.abs(x - tone(SR))) < 0.02  # 8-bit quantisation error only


def test_bad_files_raise_with_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav file at all" * 10)
    sf.write(tmp_path / "zero.wav", np.zeros((0,), np.float32), SR)
    nan = tone(SR)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    inf = tone(SR)
    inf[5] = np.inf
    sf.write(tmp_path / "inf.wav", inf, SR, subtype="FLOAT")
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    expect = {
        "empty.wav": "empty file",
        "junk.wav": "unreadable",
        "zero.wav": "zero-length",
        "nan.wav": "NaN or infinite",
        "inf.wav": "NaN or infinite",
        "silent.wav": "all-silent",
        "missing.wav": "not found",
    }
    for name, reason in expect.items():
        with pytest.raises(AudioError, match=reason) as e:
            load_audio(tmp_path / name, reject_silent=True)
        assert name in str(e.value)


def test_info_without_decoding(tmp_path):
    write_audio(tmp_path / "a.flac", tone(SR, 2.5))
    info = audio_info(tmp_path / "a.flac")
    assert info.sample_rate == SR and abs(info.duration - 2.5) < 1e-3


def test_write_is_atomic(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError):
        write_audio(tmp_path / "out.wav", tone(SR))
    assert list(tmp_path.iterdir()) == []


def test_scan_skips_unreadable_with_warning(tmp_path, caplog):
    write_audio(tmp_path / "good.wav", tone(SR))
    (tmp_path / "bad.wav").write_bytes(b"")
    items = scan_folder(tmp_path)
    assert [i.id for i in items] == ["good"]
    assert "bad.wav" in caplog.text and "empty file" in caplog.text


def test_manifest_missing_files_listed_up_front(tmp_path):
    write_audio(tmp_path / "a.wav", tone(SR))
    (tmp_path / "m.jsonl").write_text(
        '{"path": "a.wav"}\n{"path": "gone1.wav"}\n{"path": "/abs/gone2.wav"}\n'
    )
    with pytest.raises(SourceError, match="2 missing") as e:
        read_jsonl(tmp_path / "m.jsonl")
    assert "gone1.wav" in str(e.value) and "gone2.wav" in str(e.value)


def test_training_never_dies_on_bad_files(tmp_path, corpus):
    from data_sim.sources import AudioItem, load_source

    speech = load_source(corpus / "speech.jsonl")
    sf.write(tmp_path / "silent.wav", np.zeros(SR * 3, np.float32), SR)
    (tmp_path / "broken.wav").write_bytes(b"xx")
    bad = [AudioItem("silent", str(tmp_path / "silent.wav"), 3.0),
           AudioItem("broken", str(tmp_path / "broken.wav"), 3.0)]
    noises = load_source(corpus / "noise") + [AudioItem("nb", str(tmp_path / "broken.wav"), 9.0)]
    ds = MixtureDataset(bad + speech, noises, [], MixConfig(p_reverb=0.0), seed=1, length=40)
    skipped = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["noisy"].isfinite().all() and len(item["noisy"]) > 0
        skipped.update(p for p, _ in item["meta"]["skipped"])
    assert str(tmp_path / "silent.wav") in skipped and str(tmp_path / "broken.wav") in skipped
