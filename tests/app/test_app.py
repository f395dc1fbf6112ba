"""The demo's logic without a browser: upload checks, model directories, spectrograms, the handler."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

import app
from data_sim.audio import write_audio
from l3se import enhancer
from l3se.card import ModelCard, write_card
from l3se.decoding import DecodeConfig
from l3se.enhancer import CONFIG_FILE, PARTS
from tests.conftest import speech_like

SR = 16000


class StandIn:
    """Enhancer stand-in: halves the signal at 16 kHz and remembers the settings it ran with."""

    def __init__(self, path: Path):
        self.path = path
        self.calls: list = []

    def enhance(self, wav, sr, progress=None, decode=None):
        from l3se.enhancer import to_mono

        self.calls.append(decode)
        for done in (1, 2):
            if progress is not None:
                progress(done, 2)
        return 0.5 * to_mono(wav, sr, SR)


def fake_model_dir(path: Path) -> Path:
    """A directory with the layout ``check_model_dir`` asks for (no weights: loaders are fakes)."""
    for part in PARTS:
        (path / part).mkdir(parents=True)
    (path / CONFIG_FILE).write_text("{}\n")
    return path


def error_message(excinfo) -> str:
    assert isinstance(excinfo.value, gr.Error)
    return excinfo.value.message


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    write_audio(path, speech_like(np.random.default_rng(0), 1.5))
    return path


def test_read_upload_accepts_and_converts(tmp_path):
    stereo = np.stack([speech_like(np.random.default_rng(1), 1.0, sr=44100)] * 2, axis=1)
    sf.write(tmp_path / "x.wav", stereo, 44100)
    wav = app.read_upload(str(tmp_path / "x.wav"))
    assert wav.dtype == np.float32 and wav.shape == (SR,)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: write_audio(p, np.zeros(SR * 2, np.float32)), "silent"),
        (lambda p: p.write_text("this is not a sound file\n" * 50), "not audio"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: write_audio(p, 0.3 * np.ones(800, np.float32)), "at least 0.08 s"),
        (lambda p: write_audio(p, 0.1 * np.ones(SR * 3, np.float32)), "at most 2 s"),
    ],
    ids=["silent", "not-audio", "empty", "too-short", "too-long"],
)
def test_read_upload_rejects_with_message(tmp_path, make, expected):
    path = tmp_path / "upload.wav"
    make(path)
    with pytest.raises(gr.Error) as excinfo:
        app.read_upload(str(path), max_seconds=2.0)
    assert expected in error_message(excinfo)


def test_read_upload_without_file():
    with pytest.raises(gr.Error) as excinfo:
        app.read_upload(None)
    assert "Upload or record" in error_message(excinfo)


def test_too_long_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    write_audio(path, 0.1 * np.ones(SR * 5, np.float32))
    monkeypatch.setattr(app, "load_audio", lambda *a, **k: pytest.fail("decoded a long file"))
    with pytest.raises(gr.Error) as excinfo:
        app.read_upload(str(path), max_seconds=4.0)
    assert "5.0 s long" in error_message(excinfo)


def test_quiet_upload_warns(tmp_path):
    path = tmp_path / "quiet.wav"
    write_audio(path, 1e-3 * speech_like(np.random.default_rng(2), 1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(app.read_upload(str(path))) == SR
    assert any("very quiet" in str(w.message) for w in caught)


def test_model_dir_validation(tmp_path):
    default = fake_model_dir(tmp_path / "default")
    other = fake_model_dir(tmp_path / "other")
    cache = app.ModelCache(StandIn, default)
    assert cache.resolve("") == default.resolve()
    assert cache.resolve(f"  {other}  ") == other.resolve()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "lm").mkdir()
    with pytest.raises(gr.Error) as excinfo:
        cache.resolve(str(tmp_path / "plain"))
    assert "not an enhancer model directory" in error_message(excinfo)
    assert "enhancer.yaml" in error_message(excinfo) and "codec" in error_message(excinfo)
    with pytest.raises(gr.Error) as excinfo:
        cache.resolve(str(tmp_path / "missing"))
    assert "not found" in error_message(excinfo)
    with pytest.raises(gr.Error) as excinfo:
        cache.resolve("/etc")
    assert "not an enhancer model directory" in error_message(excinfo)


def test_missing_default_model_says_how_to_get_one(tmp_path, monkeypatch):
    # As in a checkout whose bundled model was deleted.
    monkeypatch.setattr(enhancer, "DEFAULT_MODEL_DIR", tmp_path / "pretrained" / "default")
    cache = app.ModelCache(StandIn, enhancer.DEFAULT_MODEL_DIR)
    with pytest.raises(gr.Error) as excinfo:
        cache.resolve(None)
    assert "--model" in error_message(excinfo)


def test_models_are_loaded_once_per_dir(tmp_path):
    a, b = fake_model_dir(tmp_path / "a"), fake_model_dir(tmp_path / "b")
    loaded = []
    cache = app.ModelCache(lambda p: loaded.append(p) or StandIn(p), a)
    first = cache.get(cache.resolve(""))
    assert cache.get(cache.resolve(str(a))) is first
    assert cache.get(cache.resolve(str(b))) is not first
    assert loaded == [a.resolve(), b.resolve()]


def test_loader_failure_is_a_user_error(tmp_path):
    def broken(path):
        raise ValueError("bad weights")

    cache = app.ModelCache(broken, fake_model_dir(tmp_path / "m"))
    with pytest.raises(gr.Error) as excinfo:
        cache.get(cache.resolve(""))
    assert "Could not load the model" in error_message(excinfo)
    assert "bad weights" in error_message(excinfo)


def test_stft_db_full_scale_sine_is_0_db():
    t = np.arange(SR) / SR
    db = app.stft_db(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    assert db.shape == (app.SPEC_N_FFT // 2 + 1, SR // app.SPEC_HOP + 1)
    assert abs(db.max()) < 0.5
    assert np.argmax(db[:, 10]) == round(1000 * app.SPEC_N_FFT / SR)


def test_spectrogram_images_share_a_colour_scale():
    loud = speech_like(np.random.default_rng(3), 2.0)
    noisy_img, quiet_img = app.spectrogram_pair(loud, 0.01 * loud)
    width, height = app.SPEC_SIZE
    for img in (noisy_img, quiet_img):
        assert img.shape == (height, width, 3) and img.dtype == np.uint8
        assert img.std() > 10
    # 40 dB quieter on the same scale: a darker picture (magma: dark = low).
    assert quiet_img.mean() < noisy_img.mean() - 5
    own_scale = app.spectrogram_image(app.stft_db(0.01 * loud), "q", -120, -40)
    assert own_scale.shape == (height, width, 3)
    assert abs(own_scale.mean() - noisy_img.mean()) < abs(quiet_img.mean() - noisy_img.mean())


def test_decode_config_validation():
    cfg = app.decode_config("sample", 0.7, 0.9, 3)
    assert (cfg.strategy, cfg.temperature, cfg.top_p, cfg.seed) == ("sample", 0.7, 0.9, 3)
    assert app.decode_config("greedy", 1.0, 1.0, None).seed is None
    for bad, message in [(("beam", 1.0, 1.0, 0), "strategy must be 'greedy', 'sample' or 'mbr'"),
                         (("sample", 0.0, 1.0, 0), "temperature must be above 0"),
                         (("sample", 1.0, 0.0, 0), "top_p must be in (0, 1]")]:
        with pytest.raises(gr.Error) as excinfo:
            app.decode_config(*bad)
        assert message in error_message(excinfo)


def test_enhance_handler_writes_wav(tmp_path):
    model = fake_model_dir(tmp_path / "model")
    instances = []
    cache = app.ModelCache(lambda p: instances.append(StandIn(p)) or instances[-1], model)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    handler = app.make_enhance_handler(cache, out_dir)
    src = speech_like(np.random.default_rng(4), 1.5, sr=22050)
    sf.write(tmp_path / "in.wav", src, 22050)
    reported = []
    path, noisy_img, enhanced_img = handler(
        str(tmp_path / "in.wav"), "", "sample", 0.7, 0.9, 5,
        progress=lambda p, **kw: reported.append(p),
    )
    out, sr = sf.read(path, dtype="float32")
    assert Path(path).parent == out_dir and Path(path).name.startswith("in_enhanced_")
    assert sr == SR and out.shape == (round(1.5 * SR),)
    expected = 0.5 * app.read_upload(str(tmp_path / "in.wav"))
    np.testing.assert_allclose(out, expected, atol=2 / 32768)
    assert noisy_img.shape == enhanced_img.shape == (app.SPEC_SIZE[1], app.SPEC_SIZE[0], 3)
    assert (1, 2) in reported and (2, 2) in reported
    (model_obj,) = instances
    # The cached model is shared: each request passes its own settings.
    assert model_obj.calls == [DecodeConfig("sample", 0.7, 0, 0.9, 5)]


def test_enhance_handler_refuses_bad_model_dir_before_loading(tmp_path, speech):
    cache = app.ModelCache(lambda p: pytest.fail("loaded a non-model dir"), tmp_path)
    handler = app.make_enhance_handler(cache, tmp_path)
    with pytest.raises(gr.Error) as excinfo:
        handler(str(speech), str(tmp_path), "greedy", 1.0, 1.0, 0, progress=lambda *a, **k: None)
    assert "not an enhancer model directory" in error_message(excinfo)


def test_old_outputs_are_pruned(tmp_path):
    old, new = tmp_path / "old.wav", tmp_path / "new.wav"
    for p in (old, new):
        p.write_bytes(b"x")
    os.utime(old, (1, 1))
    app.prune_outputs(tmp_path, 60)
    assert not old.exists() and new.exists()


def test_build_app_and_launch_settings(tmp_path):
    demo = app.build_app(fake_model_dir(tmp_path / "m"), loader=StandIn, output_dir=tmp_path / "o")
    ids = {b.elem_id for b in demo.blocks.values()}
    assert {"noisy-audio", "enhance", "enhanced-audio", "noisy-spec", "enhanced-spec"} <= ids
    (audio_in,) = [b for b in demo.blocks.values() if b.elem_id == "noisy-audio"]
    assert audio_in.sources == ["upload", "microphone"]
    kwargs = app.launch_kwargs("10mb")
    assert kwargs == {"allowed_paths": [str(app.EXAMPLES_DIR)], "max_file_size": "10mb"}
    assert len(app.example_files()) >= 2


def test_decoding_controls_start_from_the_models_settings(tmp_path):
    def strategy_and_temperature(model: Path):
        demo = app.build_app(model, loader=StandIn, output_dir=tmp_path / "o")
        values = {b.label: b.value for b in demo.blocks.values() if hasattr(b, "value")}
        return values["Strategy"], values["Temperature (sample and mbr)"]

    assert strategy_and_temperature(fake_model_dir(tmp_path / "plain")) == ("greedy", 1.0)
    sampled = fake_model_dir(tmp_path / "sampled")
    (sampled / CONFIG_FILE).write_text("decode:\n  strategy: sample\n  temperature: 0.6\n")
    assert strategy_and_temperature(sampled) == ("sample", 0.6)


def test_cli_share_flag():
    assert app._bool("false") is False and app._bool("True") is True
    with pytest.raises(argparse.ArgumentTypeError):
        app._bool("maybe")


def test_model_card_follows_the_model_box(tmp_path):
    carded = fake_model_dir(tmp_path / "carded")
    write_card(ModelCard("tiny-demo", "three synthetic voices", measured="| a |\n|---|\n| 1 |",
                         warning="ignores its input. And more that only the full card says."),
               carded)
    plain = fake_model_dir(tmp_path / "plain")
    demo = app.build_app(carded, loader=StandIn, output_dir=tmp_path / "o")
    shown = {b.elem_id: b.value for b in demo.blocks.values()
             if b.elem_id in ("model-card", "model-card-full")}
    # Above the Enhance button one line; the whole card, table included, in the panel.
    assert shown["model-card"] == ("tiny-demo: trained on three synthetic voices. Warning: "
                                   "ignores its input; see the model card below")
    assert "And more that only the full card says" in shown["model-card-full"]
    assert shown["model-card-full"].endswith("| a |\n|---|\n| 1 |")
    cache = app.ModelCache(pytest.fail, carded)  # showing a card never loads a model
    assert "three synthetic voices" in cache.card("")[0]
    assert "No model card" in cache.card(str(plain))[0]
    text, full = cache.card(str(tmp_path / "typo"))
    assert text.startswith("**Not a model directory:**") and full == ""
