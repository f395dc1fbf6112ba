"""What limits the laptop codec: codec-1 designs trained on one budget, scored on the resynthesis
of clean eval speech, plotted against the CPU time each took.

    l3se recipe codec-sweep                          # every design in DESIGNS
    l3se recipe codec-sweep --designs baseline,mel --steps 1500

Each design is ``recipes/configs/codec1/tiny.yaml`` set back to the tiny codec before the sweep
(``BASELINE``) plus the overrides in ``DESIGNS`` (one axis at a time, then combinations), trained for ``--steps`` codec-1 steps on one CPU
thread. Its run folder is named by a hash of its overrides and steps, so a finished run is reused
only for the same settings. Each codec resynthesises the clean references of the first
``--files`` eval utterances and is scored with STOI, PESQ, the closed-vocabulary WER, the
multi-scale mel distance, and two measures of a sound shared by every output whatever the input:
the median |correlation| between outputs of different inputs (the inputs' own value beside it)
and the comb, the mean level of the outputs' long-term spectrum at multiples of 25 Hz over the
bins between them. The noisy eval inputs and DeepFilterNet3's enhancement of them are scored
beside the designs: the bars a codec must clear before anything decoded through it can help.
Writes ``table.md``, ``results.json`` and ``plot.png`` under ``--out``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recipes.resynthesis import eval_subset, mel_distance, resynthesize
from recipes.stages import run_stage

# The tiny codec before this sweep (frozen random CNN front end, transposed-conv upsamplers, a
# 50 Hz iSTFT head, dim 64), restated over today's codec1/tiny.yaml so that every design below
# keeps its meaning when tiny.yaml changes.
BASELINE = ["model.ssl.frontend=conv", "model.ssl.arch=tiny", "model.upsampler=transposed",
            "model.head_hop=null", "model.n_fft=1280", "model.dim=64",
            "model.intermediate_dim=128", "model.decoder_layers=4", "model.codebook_size=256",
            "data.mix.segment_seconds=1.0", "train.batch_size=4", "optim.lr=1.0e-3"]
_MEL = ["model.ssl.frontend=mel"]
_INTERP = ["model.upsampler=interp"]
_HOP160 = ["model.head_hop=160", "model.n_fft=640"]
_DIM128 = ["model.dim=128", "model.intermediate_dim=256"]
_BEST = _MEL + _INTERP + _HOP160 + _DIM128

# name -> overrides of BASELINE.
DESIGNS: dict[str, list[str]] = {
    "baseline": [],
    # the front end: a fixed log-mel filterbank (64 or 128 bands), a trainable backbone, wider
    # random convs
    "mel": _MEL,
    "mel128": _MEL + ["model.ssl.arch={preset: tiny, conv_dim: [128, 128, 128, 128, 128, 128, "
                      "128]}"],
    "train-wavlm": ["model.ssl.frozen=false"],
    "conv256": ["model.ssl.arch={preset: tiny, conv_dim: [256, 256, 256, 256, 256, 256, 256]}"],
    # the decoder: no shared comb, a finer iSTFT grid, more depth
    "interp": _INTERP,
    "hop160": _HOP160,
    "dec8": ["model.decoder_layers=8"],
    # capacity and bits
    "dim128": _DIM128,
    "k1024": ["model.codebook_size=1024"],
    # training: longer crops, higher learning rate
    "crop2s": ["data.mix.segment_seconds=2.0", "train.batch_size=2"],
    "lr2e-3": ["optim.lr=2.0e-3"],
    # combinations
    "mel+interp": _MEL + _INTERP,
    "mel+interp+hop160": _MEL + _INTERP + _HOP160,
    "mel+interp+hop160+dim128": _BEST,
    # the budget: the best combination trained 4x longer
    "mel+interp+hop160+dim128 x4": _BEST + ["train.max_steps=6000"],
}


@dataclass
class SweepConfig:
    designs: list[str] = field(default_factory=lambda: list(DESIGNS))
    data: Path = Path("data")
    out: Path = Path("runs/codec-sweep")
    steps: int = 1500
    files: int = 40
    metrics: str = "stoi,pesq,wer_cv"
    workers: int = 1
    baselines: list[str] = field(default_factory=lambda: ["dfn3"])


def run_dir(cfg: SweepConfig, name: str) -> Path:
    """A design's run folder, keyed by everything that changes what it trains."""
    key = json.dumps([BASELINE + DESIGNS[name], cfg.steps, str(cfg.data)])
    return cfg.out / "runs" / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def design_steps(cfg: SweepConfig, name: str) -> int:
    """The sweep's steps, or the design's own when it is about the budget."""
    own = [o.split("=", 1)[1] for o in DESIGNS[name] if o.startswith("train.max_steps=")]
    return int(own[-1]) if own else cfg.steps


def train(cfg: SweepConfig, name: str, log=print) -> tuple[Path, dict]:
    """Train design ``name`` unless its model exists; returns (model dir, cost)."""
    out = run_dir(cfg, name)
    cost_file = out / "cost.json"
    if (out / "model").is_dir() and cost_file.is_file():
        return out / "model", json.loads(cost_file.read_text())
    starter = cfg.data / "starter" / "speech"
    steps = design_steps(cfg, name)
    overrides = [f"train.output_dir={out}", f"train.max_steps={steps}",
                 f"data.speech={starter}/train.jsonl", f"valid.speech={starter}/test.jsonl",
                 f"train.val_every={steps}", f"train.ckpt_every={min(500, steps)}",
                 "train.threads=1",
                 *BASELINE, *DESIGNS[name]]
    log(f"[codec-sweep] {name}: {steps} steps")
    cpu, wall = time.process_time(), time.perf_counter()
    run_stage("codec-1", "tiny", overrides)
    # A resumed run counts only its last part: the cost is that of an uninterrupted run only
    # when the sweep ran it in one go, which the file says.
    cost = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
            "steps": steps, "parameters": _parameters(out / "model")}
    cost_file.write_text(json.dumps(cost))
    return out / "model", cost


def _parameters(model: Path) -> int:
    """Trainable-side size: every codec weight but the (frozen) WavLM's."""
    from safetensors.torch import load_file

    weights = load_file(str(model / "model.safetensors"))
    return sum(v.numel() for k, v in weights.items() if not k.startswith("ssl."))


def shared_sound(paths: list[Path]) -> dict[str, float]:
    """Median |Pearson r| over pairs of files (cut to the shortest), and the comb: the mean level
    in dB of the files' long-term spectrum at 25, 50, ... 1000 Hz over the median of the bins
    5-12 Hz to either side (about 0 dB for speech; a decoder that stamps the same 25 Hz pattern
    on every output raises both numbers)."""
    from scipy.signal import welch

    from data_sim.audio import load_audio

    wavs = [load_audio(p, 16000) for p in paths]
    n = min(len(w) for w in wavs)
    corr = [abs(float(np.corrcoef(a[:n], b[:n])[0, 1])) for a, b in itertools.combinations(wavs, 2)]
    levels = []
    for w in wavs:
        freqs, power = welch(w, 16000, nperseg=16000)  # 1 Hz bins
        for f0 in range(25, 1001, 25):
            side = np.r_[f0 - 12 : f0 - 4, f0 + 5 : f0 + 13]
            levels.append(10 * np.log10(power[f0] / np.median(power[side]) + 1e-12))
    return {"cross_corr": float(np.median(corr)), "comb_db": float(np.mean(levels))}


def score(cfg: SweepConfig, models: dict[str, Path]) -> dict[str, dict]:
    """design -> STOI, PESQ, WER-CV, mel distance, cross-correlation and comb of its
    resynthesis; "clean" -> the references' own (the metrics' ceilings)."""
    from l3se.evaluation import evaluate
    from l3se.evaluation.inputs import load_manifest
    from l3se.evaluation.report import summarise

    ref = eval_subset(cfg.data / "evalset", cfg.files, cfg.out)
    items = load_manifest(ref)
    systems: dict[str, str | None] = {}
    rows: dict[str, dict] = {"clean": shared_sound([Path(it.clean) for it in items])}
    for name, model in models.items():
        out = cfg.out / "resynth" / run_dir(cfg, name).name
        resynthesize(model, ref, out)
        systems[name] = str(out)
        rows[name] = {"mel": mel_distance(model, ref),
                      **shared_sound([out / it.subset / "clean" / f"{it.id}.wav" for it in items])}
    # The bars a codec must clear to be of use: the noisy input itself, and a conventional
    # denoiser's output (skipped when its package is missing).
    systems |= {"noisy": None, "clean": None}
    results = evaluate(ref, systems, metrics=cfg.metrics, out_dir=cfg.out / "report",
                       workers=cfg.workers, progress=False, baselines=cfg.baselines)
    for system, subsets in summarise(results).items():
        aggs = subsets.get("all") or next(iter(subsets.values()))
        rows.setdefault(system, {}).update({k: v["value"] for k, v in aggs.items() if "value" in v})
    return rows


COLUMNS = [("stoi", "STOI", "{:.3f}"), ("pesq", "PESQ", "{:.2f}"), ("wer_cv", "WER-CV %", "{:.1f}"),
           ("mel", "mel dist.", "{:.3f}"), ("cross_corr", "cross-corr.", "{:.2f}"),
           ("comb_db", "comb dB", "{:+.1f}")]


def format_table(rows: dict[str, dict], costs: dict[str, dict]) -> str:
    head = ["design", "overrides", "CPU min", "codec params", *(label for _, label, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cost = costs.get(name)
        cells = [name, " ".join(DESIGNS.get(name, [])) or ("-" if cost else "(reference)"),
                 f"{cost['cpu_s'] / 60:.1f}" if cost else "",
                 f"{cost['parameters'] / 1e6:.2f}M" if cost else ""]
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append(fmt.format(value) if value is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REFERENCE_LINES = {"clean": {"ls": "--", "c": "gray"}, "noisy": {"ls": ":", "c": "red"},
                   "dfn3": {"ls": "-.", "c": "green"}}


def plot(rows: dict[str, dict], costs: dict[str, dict], path: Path) -> None:
    """STOI and WER-CV of each design against its training CPU minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (key, label) in zip(axes, [("stoi", "STOI (higher is better)"),
                                        ("wer_cv", "WER-CV % (lower is better)")]):
        for name, cost in costs.items():
            value = rows[name].get(key)
            if value is None:
                continue
            ax.scatter(cost["cpu_s"] / 60, value)
            ax.annotate(name, (cost["cpu_s"] / 60, value), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        for system, style in REFERENCE_LINES.items():
            if rows.get(system, {}).get(key) is not None:
                ax.axhline(rows[system][key], lw=0.8, label=system, **style)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
        ax.set_xlabel("training CPU minutes (one thread)")
        ax.set_ylabel(label)
    fig.suptitle("codec-1 designs: resynthesis of clean eval speech")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: SweepConfig, log=print) -> str:
    unknown = sorted(set(cfg.designs) - set(DESIGNS))
    if unknown:
        raise ValueError(f"unknown design(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(DESIGNS)}")
    models, costs = {}, {}
    for name in cfg.designs:
        models[name], costs[name] = train(cfg, name, log)
    rows = score(cfg, models)
    table = format_table(rows, costs)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "table.md").write_text(table + "\n")
    (cfg.out / "results.json").write_text(json.dumps({"rows": rows, "costs": costs}, indent=1))
    plot(rows, costs, cfg.out / "plot.png")
    log(table)
    return table
