"""Gradio web demo: upload or record noisy speech, enhance it with an L3-SE model, compare the
spectrograms. ``python app.py [--model DIR] [--host 127.0.0.1] [--port 7860] [--share false]``.

The model is loaded on the first request (so the page comes up at once) and kept, one per model
directory. The server only serves the example folder, uploads and its own outputs: a typed model
directory is read, never served, and must hold a model (``l3se.enhancer.check_model_dir``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data_sim.audio import SAMPLE_RATE, AudioError, audio_info, load_audio, write_audio
from l3se.card import model_markdown
from l3se.cli import quiet_warnings
from l3se.config import ConfigError
from l3se.decoding import DecodeConfig
from l3se.enhancer import (
    DEFAULT_MODEL_DIR,
    MIN_SECONDS,
    Enhancer,
    check_model_dir,
    read_config,
)

log = logging.getLogger("l3se.app")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_SECONDS = 60.0
MAX_FILE_SIZE = "50mb"
# Peak level (dBFS) under which an upload is enhanced but flagged as probably too quiet.
QUIET_PEAK_DB = -50.0
# Enhanced files older than this are deleted from the output folder.
OUTPUT_MAX_AGE_S = 3600
SPEC_SIZE = (640, 260)  # (width, height) of one spectrogram image, pixels
SPEC_N_FFT, SPEC_HOP = 512, 128
SPEC_RANGE_DB = 80.0

# model directory -> object with .enhance(wav, sr, progress=fn(done, total), decode=DecodeConfig)
Loader = Callable[[Path], Any]

AUDIO_REASONS = {
    "empty file": "The uploaded file is empty.",
    "zero-length audio": "The uploaded audio contains no samples.",
    "all-silent audio": "The audio is silent: there is nothing to enhance.",
    "contains NaN or infinite samples": "The audio contains invalid (NaN or infinite) samples.",
}


class ModelCache:
    """Enhancers by model directory, each loaded on its first use and then kept."""

    def __init__(self, loader: Loader, default_dir: Path):
        self.loader = loader
        self.default_dir = Path(default_dir)
        self._models: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def resolve(self, typed: str | None) -> Path:
        """The model directory a user typed (empty: the default), or a gr.Error saying why it is
        not one."""
        path = Path(typed.strip()).expanduser() if typed and typed.strip() else self.default_dir
        try:
            return check_model_dir(path).resolve()
        except FileNotFoundError as e:
            raise gr.Error(str(e), title="Not a model directory") from None

    def card(self, typed: str | None) -> tuple[str, str]:
        """(the model card's one line, the whole card) as markdown for the directory typed so
        far, or why there is none: shown while typing, so it never raises."""
        try:
            return model_markdown(self.resolve(typed))
        except gr.Error as e:
            return f"**Not a model directory:** {e.message}", ""

    def get(self, model_dir: Path) -> Any:
        # One lock for all loads: two first requests must not load the same model twice.
        with self._lock:
            if model_dir not in self._models:
                log.info("loading model %s", model_dir)
                try:
                    self._models[model_dir] = self.loader(model_dir)
                except Exception as e:
                    log.exception("loading %s failed", model_dir)
                    raise gr.Error(f"Could not load the model in {model_dir}: {e}") from None
            return self._models[model_dir]


def read_upload(path: str | None, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """An uploaded or recorded file as float32 mono 16 kHz [S]; a gr.Error for anything that
    cannot be enhanced. The length is checked from the header, before decoding."""
    if not path:
        raise gr.Error("Upload or record some audio first.", title="No audio")
    try:
        seconds = audio_info(path).duration
        if seconds > max_seconds:
            raise gr.Error(
                f"The audio is {seconds:.1f} s long; this demo accepts at most {max_seconds:g} s.",
                title="Audio too long",
            )
        wav = load_audio(path, SAMPLE_RATE, reject_silent=True)
    except AudioError as e:
        if e.reason.startswith("unreadable"):
            message = "This file is not audio that can be read (use WAV, FLAC, OGG or MP3)."
        else:
            message = AUDIO_REASONS.get(e.reason, f"This audio cannot be used: {e.reason}.")
        raise gr.Error(message, title="Unusable audio") from None
    if len(wav) < MIN_SECONDS * SAMPLE_RATE:
        raise gr.Error(
            f"The audio is {len(wav) / SAMPLE_RATE:.2f} s long; it needs at least "
            f"{MIN_SECONDS:g} s.",
            title="Audio too short",
        )
    if 20 * np.log10(np.abs(wav).max()) < QUIET_PEAK_DB:
        gr.Warning("The audio is very quiet; the result may be poor.")
    return wav


def stft_db(wav: np.ndarray) -> np.ndarray:
    """[S] -> magnitude spectrogram in dB re full scale [F, T] (a full-scale sine peaks at 0)."""
    window = torch.hann_window(SPEC_N_FFT)
    spec = torch.stft(
        torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), SPEC_N_FFT, SPEC_HOP,
        window=window, return_complex=True,
    ).abs() / (window.sum() / 2)
    return (20 * torch.log10(spec.clamp_min(1e-8))).numpy()


def spectrogram_image(
    db: np.ndarray, title: str, vmin: float, vmax: float, size: tuple[int, int] = SPEC_SIZE
) -> np.ndarray:
    """[F, T] dB -> an RGB image [H, W, 3] uint8 of ``size`` (width, height) with a dB colour bar."""
    width, height = size
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    seconds = db.shape[1] * SPEC_HOP / SAMPLE_RATE
    image = ax.imshow(
        db, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
        extent=(0, seconds, 0, SAMPLE_RATE / 2000),
    )
    ax.set(title=title, xlabel="time (s)", ylabel="frequency (kHz)")
    fig.colorbar(image, ax=ax, label="dB")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def spectrogram_pair(noisy: np.ndarray, enhanced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images of both signals [S] on one colour scale, so their levels compare directly."""
    a, b = stft_db(noisy), stft_db(enhanced)
    vmax = float(np.ceil(max(a.max(), b.max())))
    vmin = vmax - SPEC_RANGE_DB
    return spectrogram_image(a, "noisy", vmin, vmax), spectrogram_image(b, "enhanced", vmin, vmax)


def decode_config(
    strategy: str, temperature: float, top_p: float, seed: float | None
) -> DecodeConfig:
    """The decoding controls' values as settings, or a gr.Error saying what is wrong."""
    try:
        return DecodeConfig(
            strategy=strategy, temperature=float(temperature), top_p=float(top_p),
            seed=None if seed is None else int(seed),
        )
    except ConfigError as e:
        raise gr.Error(f"Decoding: {e}.", title="Bad decoding setting") from None


def make_enhance_handler(cache: ModelCache, out_dir: Path, max_seconds: float = MAX_SECONDS):
    """The Enhance button's function: (audio path, model dir text, decoding options) ->
    (enhanced wav path, noisy spectrogram, enhanced spectrogram)."""

    def enhance(
        audio_path: str | None, model_text: str, strategy: str, temperature: float,
        top_p: float, seed: float | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio's marker for a tracker)
    ) -> tuple[str, np.ndarray, np.ndarray]:
        wav = read_upload(audio_path, max_seconds)
        decode = decode_config(strategy, temperature, top_p, seed)
        model_dir = cache.resolve(model_text)
        progress(0.0, desc="Loading model")
        enhancer = cache.get(model_dir)
        progress(0.0, desc="Enhancing")
        try:
            enhanced = enhancer.enhance(
                wav, SAMPLE_RATE,
                progress=lambda done, total: progress((done, total), desc="Enhancing",
                                                      unit="chunks"),
                decode=decode,
            )
        except Exception as e:
            log.exception("enhancement failed")
            raise gr.Error(f"Enhancement failed: {e}") from None
        enhanced = np.asarray(enhanced, dtype=np.float32)
        progress(1.0, desc="Drawing spectrograms")
        prune_outputs(out_dir, OUTPUT_MAX_AGE_S)
        stem = Path(audio_path).stem[:40] or "audio"
        out = Path(tempfile.mkstemp(prefix=f"{stem}_enhanced_", suffix=".wav", dir=out_dir)[1])
        write_audio(out, enhanced, SAMPLE_RATE)
        return str(out), *spectrogram_pair(wav, enhanced)

    return enhance


def prune_outputs(out_dir: Path, max_age_s: float) -> None:
    """Delete enhanced files older than ``max_age_s``: a long-running demo must not fill the disk
    (the browser already has its copy, served from gradio's cache)."""
    cutoff = time.time() - max_age_s
    for path in out_dir.glob("*.wav"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def example_files() -> list[list[str]]:
    return [[str(p)] for p in sorted(EXAMPLES_DIR.glob("*.wav"))]


def saved_decode(model_dir: Path) -> DecodeConfig:
    """The decoding settings stored with a model (the defaults if it has none): the decoding
    controls start from them, so the page's first run decodes as the model's trainer chose."""
    try:
        return read_config(model_dir).decode
    except ConfigError:
        return DecodeConfig()


def build_app(
    model_dir: str | Path | None = None, loader: Loader = Enhancer.from_pretrained,
    max_seconds: float = MAX_SECONDS, output_dir: str | Path | None = None,
) -> gr.Blocks:
    """The demo page; ``model_dir`` is the default model (None: the bundled one), ``loader`` turns
    a model directory into an enhancer (tests pass a stand-in), enhanced files go to
    ``output_dir`` (None: a new temporary folder)."""
    default_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    cache = ModelCache(loader, default_dir)
    out_dir = Path(output_dir or tempfile.mkdtemp(prefix="l3se-app-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = make_enhance_handler(cache, out_dir, max_seconds)
    decode = saved_decode(default_dir)
    with gr.Blocks(title="L3-SE speech enhancement", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# L3-SE speech enhancement\n"
            "Upload or record noisy speech (at most "
            f"{max_seconds:g} s), then press **Enhance**. The language model regenerates the "
            "speech from its codec tokens: the output is 16 kHz mono."
        )
        with gr.Row():
            with gr.Column():
                audio_in = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Noisy speech",
                    elem_id="noisy-audio",
                )
                model_box = gr.Textbox(
                    label="Model directory", elem_id="model-dir",
                    placeholder=f"empty: the default model ({default_dir})",
                )
                card_line, card_text = cache.card("")
                card = gr.Markdown(card_line, elem_id="model-card")
                with gr.Accordion("Decoding", open=False):
                    strategy = gr.Radio(["greedy", "sample", "mbr"], value=decode.strategy,
                                        label="Strategy")
                    temperature = gr.Slider(0.1, 2.0, value=decode.temperature, step=0.05,
                                            label="Temperature (sample and mbr)")
                    top_p = gr.Slider(0.05, 1.0, value=decode.top_p, step=0.05,
                                      label="Top-p (sampling only)")
                    seed = gr.Number(value=decode.seed, precision=0, label="Seed (sampling only)")
                button = gr.Button("Enhance", variant="primary", elem_id="enhance")
            with gr.Column():
                audio_out = gr.Audio(
                    type="filepath", format="wav", label="Enhanced speech", interactive=False,
                    buttons=["download"], elem_id="enhanced-audio",
                )
                if example_files():
                    gr.Examples(example_files(), inputs=[audio_in], label="Noisy examples")
        with gr.Row():
            spec_in = gr.Image(label="Noisy spectrogram", format="png", interactive=False,
                               elem_id="noisy-spec")
            spec_out = gr.Image(label="Enhanced spectrogram", format="png", interactive=False,
                                elem_id="enhanced-spec")
        with gr.Accordion("Model card: training data, warnings and measured results", open=False):
            full_card = gr.Markdown(card_text, elem_id="model-card-full")
        model_box.change(cache.card, model_box, [card, full_card], show_progress="hidden",
                         queue=False)
        # One request at a time: a second model pass in parallel would only contend for the device.
        button.click(
            handler, [audio_in, model_box, strategy, temperature, top_p, seed],
            [audio_out, spec_in, spec_out], concurrency_limit=1, api_name="enhance",
        )
    return demo


def launch_kwargs(max_file_size: str | int = MAX_FILE_SIZE) -> dict:
    """Settings for ``Blocks.launch``: the only extra folder served is the examples', and uploads
    are capped."""
    return {"allowed_paths": [str(EXAMPLES_DIR)], "max_file_size": max_file_size}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="L3-SE speech enhancement web demo")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"default model directory (default: {DEFAULT_MODEL_DIR})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", type=_bool, nargs="?", const=True, default=False,
                        help="also serve through a public gradio.live link")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help="longest input accepted, seconds")
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help='upload cap, e.g. "50mb"')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_warnings()
    if args.model is not None:
        check_model_dir(args.model)
    elif not DEFAULT_MODEL_DIR.exists():
        log.warning("no default model at %s: type a model directory in the page, or restart "
                    "with --model DIR", DEFAULT_MODEL_DIR)
    demo = build_app(args.model, max_seconds=args.max_seconds)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                        **launch_kwargs(args.max_file_size))


if __name__ == "__main__":
    main()
