"""The offline quickstart: starter corpus -> the five stages at tiny scale -> enhanced eval set ->
evaluation table (noisy vs enhanced vs the codec's resynthesis of the clean reference vs the clean
reference itself).

    l3se recipe quickstart                    # the whole run (22 min measured on 2 CPU cores)
    l3se recipe quickstart --steps 0.01       # a smoke run: every stage, a few steps each

Every stage is ``l3se train <stage> --config tiny`` with its inputs and outputs redirected under
``--runs``; a stage whose ``model/`` exists is reused and an interrupted one resumes from its
last checkpoint, so running the command again continues where it stopped.
"""

from __future__ import annotations

import importlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

# Optimizer steps per stage for the full quickstart, chosen so that the whole run fits in an hour
# on 2 CPU cores (measured seconds per step in each tiny config's comments).
STEPS = {"codec-1": 2000, "codec-2": 200, "s2t": 800, "distill": 600, "lm": 3000}


@dataclass
class QuickstartConfig:
    data: Path = Path("data")
    runs: Path = Path("runs/quickstart")
    # Multiplies every stage's STEPS (at least 2 steps each): 0.01 is a smoke run.
    steps_scale: float = 1.0
    starter: list[str] = field(default_factory=list)  # StarterConfig overrides
    evalset: list[str] = field(default_factory=list)  # EvalSetConfig overrides
    metrics: str = "default"
    workers: int = 2
    # Copy the model to the bundled default when it beats the noisy input on low-SNR DNSMOS.
    promote: bool = False


def stage_overrides(stage: str, cfg: QuickstartConfig) -> list[str]:
    """``key=value`` overrides that point a tiny config at the quickstart's data and runs."""
    starter = cfg.data / "starter"
    runs = cfg.runs
    steps = max(2, math.ceil(STEPS[stage] * cfg.steps_scale))
    out = [
        f"train.output_dir={runs / stage}",
        f"train.max_steps={steps}",
        f"data.speech={starter}/speech/train.jsonl",
        f"valid.speech={starter}/speech/test.jsonl",
    ]
    if stage in ("distill", "lm"):
        out += [
            f"data.noise={starter}/noise/train.jsonl",
            f"data.rir={starter}/rir/train.jsonl",
            f"valid.noise={starter}/noise/test.jsonl",
            f"valid.rir={starter}/rir/test.jsonl",
        ]
    if steps < 50:
        out += [f"train.val_every={steps}", f"train.ckpt_every={steps}", "optim.warmup_steps=1"]
    codec = runs / "codec-2" / "model"
    out += {
        "codec-1": [],
        "codec-2": [f"init_from={runs / 'codec-1' / 'model'}"],
        "s2t": [f"backbone_from={codec}"],
        "distill": [f"codec={codec}", f"s2t={runs / 's2t' / 'model'}"],
        "lm": [f"codec={codec}", f"ni_encoder={runs / 'distill' / 'model'}"],
    }[stage]
    return out


def train_stages(cfg: QuickstartConfig, log=print) -> dict[str, float]:
    """Run (or reuse) the five stages in order; returns seconds spent per stage."""
    import recipes
    from l3se.cli.train import STAGES
    configs = Path(recipes.__file__).parent / "configs"
    seconds = {}
    for stage, (module, folder) in STAGES.items():
        model = cfg.runs / stage / "model"
        if model.is_dir():
            log(f"[quickstart] {stage}: reusing {model}")
            continue
        log(f"[quickstart] {stage}: training")
        start = time.perf_counter()
        recipe = importlib.import_module(module)
        recipe.run(stage, configs / folder / "tiny.yaml", stage_overrides(stage, cfg))
        seconds[stage] = time.perf_counter() - start
        log(f"[quickstart] {stage}: done in {seconds[stage]:.0f} s")
    return seconds


def resynthesize(codec_dir: Path, evalset: Path, out: Path) -> None:
    """The codec's reconstruction of every clean reference: the ceiling any enhancer that decodes
    through this codec can reach. Written as ``out/<subset>/clean/<id>.wav``."""
    import torch

    from data_sim.audio import load_audio, write_audio
    from l3se.evaluation.inputs import load_manifest
    from l3se.models.codec import WavCodec

    codec = WavCodec.from_pretrained(codec_dir).eval()
    for item in load_manifest(evalset / "evalset.jsonl"):
        dest = out / item.subset / "clean" / f"{item.id}.wav"
        if dest.is_file():
            continue
        wav = torch.from_numpy(load_audio(item.clean, codec.sample_rate))[None]
        with torch.inference_mode():
            audio = codec.decode(codec.encode(wav), wav.shape[-1])[0]
        write_audio(dest, audio.numpy(), codec.sample_rate)


def enhance_evalset(model_dir: Path, evalset: Path, out: Path) -> None:
    """Enhance every noisy eval file into ``out/<subset>/noisy/<id>.wav`` (resumable)."""
    from l3se.enhance_corpus import enhance_corpus

    for subset in sorted(p for p in evalset.iterdir() if (p / "noisy").is_dir()):
        enhance_corpus(subset / "noisy", out / subset.name / "noisy", model=model_dir)


def low_snr_gain(summary: dict) -> float | None:
    """Enhanced minus noisy DNSMOS OVRL on the low-SNR subset (None when not measured)."""
    try:
        low = {s: summary[s]["low"]["dnsmos_ovrl"]["value"] for s in ("noisy", "enhanced")}
    except KeyError:
        return None
    return low["enhanced"] - low["noisy"]


def run(cfg: QuickstartConfig, log=print) -> dict:
    from l3se.cli.data import build_eval, build_starter
    from l3se.enhancer import DEFAULT_MODEL_DIR
    from l3se.evaluation import evaluate
    from l3se.evaluation.report import format_comparison, summarise

    timings: dict[str, float] = {}
    start = time.perf_counter()
    starter = cfg.data / "starter"
    if (starter / "starter.json").is_file() and not cfg.starter:
        log(f"[quickstart] starter corpus complete: {starter}")
    else:
        log(f"[quickstart] building the starter corpus in {starter}")
        build_starter(starter, None, cfg.starter)
    evalset = cfg.data / "evalset"
    if (evalset / "evalset.jsonl").is_file():
        log(f"[quickstart] eval set complete: {evalset}")
    else:
        log(f"[quickstart] building the eval set in {evalset}")
        sources = [f"{k}={starter}/{k}/test.jsonl" for k in ("speech", "noise", "rir")]
        build_eval(evalset, "tiny", sources + list(cfg.evalset))
    timings["material"] = time.perf_counter() - start

    timings.update(train_stages(cfg, log))
    model = cfg.runs / "lm" / "model"
    t = time.perf_counter()
    log("[quickstart] enhancing the eval set")
    enhance_evalset(model, evalset, cfg.runs / "enhanced")
    resynthesize(cfg.runs / "codec-2" / "model", evalset, cfg.runs / "codec")
    timings["enhance"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[quickstart] evaluating")
    # "clean" is the metrics' own ceiling: pocketsphinx's WER on the TTS voices, DNSMOS of clean speech.
    systems = {"noisy": None, "enhanced": str(cfg.runs / "enhanced"), "codec": str(cfg.runs / "codec"),
               "clean": None}
    results = evaluate(evalset, systems, metrics=cfg.metrics, out_dir=cfg.runs / "report",
                       workers=cfg.workers)
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    log(format_comparison(results))
    gain = low_snr_gain(summarise(results))
    if gain is not None:
        log(f"[quickstart] low-SNR DNSMOS OVRL, enhanced - noisy: {gain:+.3f}")
    if cfg.promote:
        if gain is not None and gain > 0:
            # Copied beside it first, so an interrupted copy never leaves a broken default.
            staged = DEFAULT_MODEL_DIR.with_name(".default.part")
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(model, staged)
            shutil.rmtree(DEFAULT_MODEL_DIR, ignore_errors=True)
            staged.rename(DEFAULT_MODEL_DIR)
            log(f"[quickstart] default model updated: {DEFAULT_MODEL_DIR}")
        else:
            log("[quickstart] default model left as it was: no low-SNR DNSMOS gain")
    log(f"[quickstart] done in {timings['total'] / 60:.1f} min; report: {cfg.runs / 'report'}")
    return {"timings": timings, "results": results, "low_snr_dnsmos_gain": gain}
