"""The offline quickstart: starter corpus -> the five stages at tiny scale -> enhanced eval set ->
evaluation table (noisy vs enhanced vs the codec's resynthesis of the clean reference vs the clean
reference itself).

    l3se recipe quickstart                    # the whole run at tiny scale, under an hour
    l3se recipe quickstart --scale small      # the bundled default's scale: hours on 2 cores
    l3se recipe quickstart --steps 0.01       # a smoke run: every stage, a few steps each

Every stage is ``l3se train <stage> --config <scale>`` with its inputs and outputs redirected
under ``--runs``; a stage whose ``model/`` exists is reused and an interrupted one resumes from its
last checkpoint, so running the command again continues where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from data_sim.files import atomic_dir
from recipes.resynthesis import resynthesize
from recipes.stages import STAGES, resolve_config, schedule_overrides, train_or_reuse

# Optimizer steps per pipeline stage (in order) for each scale's full run: tiny fits in an hour on
# 2 CPU cores (measured seconds per step in each tiny config's comments); small is the bundled
# default's, a background run of hours. The optional stages (ttr, codec-3) run from a finished
# quickstart: `l3se recipe codec3-ablation`.
# codec-2 gets 0 steps at both (its model is codec-1's): a few hundred GAN steps beside a fresh
# discriminator cost the tiny codec STOI, PESQ, DNSMOS and words (docs/codec.md).
STEPS = {
    "tiny": {"codec-1": 6000, "codec-2": 0, "s2t": 800, "distill": 6000, "lm": 5000},
    "small": {"codec-1": 12000, "codec-2": 0, "s2t": 3000, "distill": 10000, "lm": 15000},
}


@dataclass
class QuickstartConfig:
    data: Path = Path("data")
    runs: Path = Path("runs/quickstart")
    scale: str = "tiny"  # a key of STEPS: the configs (recipes/configs/<stage>/<scale>.yaml)
    # Multiplies every stage's STEPS (at least 2 steps each): 0.01 is a smoke run.
    steps_scale: float = 1.0
    starter: list[str] = field(default_factory=list)  # StarterConfig overrides
    evalset: list[str] = field(default_factory=list)  # EvalSetConfig overrides
    # The offline metrics but pocketsphinx's open-vocabulary WER/dWER: at 64 CPU s per minute of
    # audio over 8 systems they alone would take the run past an hour, and the closed-vocabulary
    # judge (WER-CV, PER-CV) resolves the systems better. `l3se evaluate` still has them.
    metrics: str = "dnsmos,pesq,stoi,sisdr,wer_cv,per_cv,sim"
    # Reference denoisers in the table (l3se.evaluation.baselines); a missing package is skipped.
    baselines: list[str] = field(default_factory=lambda: ["dfn3", "rnnoise"])
    workers: int = 2
    # Copy the model to the bundled default when it is no worse than the noisy input and the
    # current default on every PROMOTION metric in every subset.
    promote: bool = False
    # A TTS engine of the starter corpus (espeak-ng, flite, festival) whose voices no stage trains
    # on; the eval table is then given for its voices and for the others' apart, so that
    # generalisation to unheard voices is measured. None: every voice trains.
    hold_out: str | None = None


# metric columns -> +1 when higher is better, -1 when lower is; the first column measured counts.
# Intelligibility, words and voice: DNSMOS alone promoted a model that said the same fluent babble
# whatever it heard. Words by the closed-vocabulary judge when measured: open-vocabulary
# pocketsphinx misses 45% of clean words, too coarse to rank models.
PROMOTION = {("stoi",): +1, ("wer_cv", "wer"): -1, ("sim",): +1}


def stage_steps(stage: str, cfg: QuickstartConfig) -> int:
    steps = STEPS[cfg.scale][stage]
    return 0 if steps == 0 else max(2, math.ceil(steps * cfg.steps_scale))


def stage_overrides(stage: str, cfg: QuickstartConfig) -> list[str]:
    """``key=value`` overrides that point a stage's config at the quickstart's data and runs."""
    starter = cfg.data / "starter"
    train = f"train_without_{cfg.hold_out}" if cfg.hold_out else "train"
    out = [
        *schedule_overrides(stage_steps(stage, cfg)),
        f"data.speech={starter}/speech/{train}.jsonl",
        f"valid.speech={starter}/speech/test.jsonl",
    ]
    if stage in ("distill", "lm"):
        out += [
            f"data.noise={starter}/noise/train.jsonl",
            f"data.rir={starter}/rir/train.jsonl",
            f"valid.noise={starter}/noise/test.jsonl",
            f"valid.rir={starter}/rir/test.jsonl",
        ]
    out += [f"{key}={cfg.runs / source / 'model'}" for key, source in STAGES[stage].upstream.items()]
    return out


def train_stages(cfg: QuickstartConfig, log=print) -> dict[str, float]:
    """Run (or reuse) the five stages in order; returns seconds spent per stage."""
    seconds = {}
    for stage in STEPS[cfg.scale]:
        if stage_steps(stage, cfg) == 0:
            pass_through(stage, cfg, log)
            continue
        took = train_or_reuse(stage, cfg.scale, stage_overrides(stage, cfg), cfg.runs / stage,
                              log, "quickstart")
        if took is not None:
            seconds[stage] = took
    return seconds


def pass_through(stage: str, cfg: QuickstartConfig, log=print) -> None:
    """A stage given 0 steps exports the model it starts from (its ``init_from``) unchanged."""
    source = STAGES[stage].upstream["init_from"]
    model = cfg.runs / stage / "model"
    if model.is_dir():
        log(f"[quickstart] {stage}: reusing {model}")
        return
    with atomic_dir(model) as staged:
        shutil.copytree(cfg.runs / source / "model", staged, dirs_exist_ok=True)
    log(f"[quickstart] {stage}: 0 steps at {cfg.scale} scale, {source}'s model as it is")


def held_out_views(cfg: QuickstartConfig, evalset: Path) -> list[tuple[str, Path, Path]]:
    """Write the training speech without ``cfg.hold_out``'s voices, and the eval set's views of
    its voices and of the others': [(title, eval set, report folder)], the held-out one first."""
    from data_sim.evalset import evalset_view
    from data_sim.starter.corpus import engine_speakers, train_without_engine

    speech = cfg.data / "starter" / "speech"
    engine = cfg.hold_out
    train_without_engine(speech, engine)
    held_out = engine_speakers(speech, engine)
    rows = (evalset / "evalset.jsonl").read_text().splitlines()
    voices = {str(json.loads(row)["speaker"]) for row in rows}
    return [
        (f"{engine}'s voices, held out from training",
         evalset_view(evalset, cfg.runs / f"evalset-{engine}", held_out),
         cfg.runs / f"report-{engine}"),
        ("the other voices", evalset_view(evalset, cfg.runs / "evalset-others", voices - held_out),
         cfg.runs / "report-others"),
    ]


def enhance_evalset(model_dir: Path, evalset: Path, out: Path, mode: str = "lm") -> None:
    """Enhance every noisy eval file into ``out/<subset>/noisy/<id>.wav`` (resumable); ``mode``
    "direct" decodes the NI-Encoder's quantized acoustic output without the LM."""
    from l3se.enhance_corpus import enhance_corpus

    for subset in sorted(p for p in evalset.iterdir() if (p / "noisy").is_dir()):
        enhance_corpus(subset / "noisy", out / subset.name / "noisy", model=model_dir, mode=mode)


def promotion_failures(summary: dict, candidate: str, rivals: list[str]) -> list[str]:
    """Where ``candidate`` scores worse than a rival on a PROMOTION metric, per subset ('all'
    aside); a metric the candidate lacks is a failure, one a rival lacks is not compared."""
    from l3se.evaluation.report import LABELS

    failures = []
    for subset, aggs in summary[candidate].items():
        if subset == "all":
            continue
        for columns, sign in PROMOTION.items():
            metric = next((c for c in columns if c in aggs), columns[-1])
            mine = aggs.get(metric, {}).get("value")
            if mine is None or not math.isfinite(mine):
                failures.append(f"{subset} {LABELS[metric]}: not measured")
                continue
            for rival in rivals:
                theirs = summary.get(rival, {}).get(subset, {}).get(metric, {}).get("value")
                if theirs is not None and math.isfinite(theirs) and sign * (mine - theirs) < 0:
                    failures.append(
                        f"{subset} {LABELS[metric]}: {mine:.3f} vs {rival} {theirs:.3f}"
                    )
    return failures


def trained_steps(cfg: QuickstartConfig) -> dict[str, int]:
    """Steps each stage's run was configured for, which for a reused stage may not be this run's
    STEPS; 0 for a stage that passed its starting model on (no run config)."""
    stages = {(cfg.runs / stage).resolve() for stage in STEPS[cfg.scale]}
    return {stage: run_steps(cfg.runs / stage / "config.yaml", stages)
            for stage in STEPS[cfg.scale]}


def run_steps(run_config: Path, stages: set[Path]) -> int:
    """A run's steps, plus those of the run it continued: the one whose ``<run>/model`` is its
    ``init_from``, unless that run is one of ``stages`` (codec-2 starts from codec-1's model,
    whose steps count on codec-1's line)."""
    import yaml

    if not run_config.is_file():
        return 0
    run = yaml.safe_load(run_config.read_text())
    steps = run["train"]["max_steps"]
    source = Path(run["init_from"]) if run.get("init_from") else None
    if source is not None and source.name == "model" and source.parent.resolve() not in stages:
        steps += run_steps(source.parent / "config.yaml", stages)
    return steps


def model_card(cfg: QuickstartConfig, table: str, failures: list[str]):
    """The card of a quickstart model: its training material, steps and measured table."""
    from l3se.card import ModelCard

    corpus = json.loads((cfg.data / "starter" / "starter.json").read_text())
    hours = corpus.get("config", {}).get("speech_hours")
    speech = f"{hours:g} h of" if isinstance(hours, (int, float)) else "the offline starter corpus:"
    warning = "trained only on synthetic voices and generated noise; may degrade real recordings."
    if failures:
        warning += " Scores below the noisy input: " + "; ".join(failures) + "."
    # What `l3se enhance` shows of the warning on its one line.
    if any(not f.endswith("not measured") for f in failures):
        headline = "below the noisy input on its eval set"
    elif failures:
        headline = "not measured against the noisy input"
    else:
        headline = "may degrade real recordings"
    voices = ", ".join(e for e in corpus.get("engines", []) if e != cfg.hold_out)
    if cfg.hold_out:
        voices += f"; {cfg.hold_out}'s held out"
        table = f"On {cfg.hold_out}'s voices, which it never heard:\n\n{table}"
    return ModelCard(
        name=f"l3se {cfg.scale} quickstart",
        trained_on=f"{speech} synthetic TTS speech ({voices} voices), generated noise and "
        "simulated rooms; tiny models trained from scratch on a CPU (l3se recipe quickstart)",
        steps=trained_steps(cfg),
        measured=table,
        warning=warning,
        domain="synthetic voices and generated noise",
        headline=headline,
    )


def run(cfg: QuickstartConfig, log=print) -> dict:
    from data_sim.evalset import EvalSetConfig, build_evalset_from_config
    from data_sim.starter import StarterConfig, build_starter_corpus
    from l3se.card import write_card
    from l3se.config import load_config
    from l3se.console import UserError
    from l3se.enhancer import DEFAULT_MODEL_DIR, check_model_dir
    from l3se.evaluation import evaluate
    from l3se.evaluation.report import format_comparison, markdown_comparison, summarise

    timings: dict[str, float] = {}
    start = time.perf_counter()
    starter = cfg.data / "starter"
    if (starter / "starter.json").is_file() and not cfg.starter:
        log(f"[quickstart] starter corpus complete: {starter}")
    else:
        log(f"[quickstart] building the starter corpus in {starter}")
        build_starter_corpus(starter, load_config(StarterConfig, None, cfg.starter))
    evalset = cfg.data / "evalset"
    if (evalset / "evalset.jsonl").is_file():
        log(f"[quickstart] eval set complete: {evalset}")
    else:
        log(f"[quickstart] building the eval set in {evalset}")
        sources = [f"{k}={starter}/{k}/test.jsonl" for k in ("speech", "noise", "rir")]
        eval_cfg = load_config(EvalSetConfig, resolve_config("evalset", "tiny"), sources + cfg.evalset)
        try:
            build_evalset_from_config(evalset, eval_cfg)
        except ValueError as e:  # the sources, or no utterance in the duration window
            raise UserError(str(e)) from None
    # (title, eval set, report folder): the table's, or with a held-out engine its voices' first.
    views = [("", evalset, cfg.runs / "report")]
    if cfg.hold_out:
        try:
            views = held_out_views(cfg, evalset)
        except ValueError as e:  # an engine the corpus does not have
            raise UserError(str(e)) from None
    timings["material"] = time.perf_counter() - start

    timings.update(train_stages(cfg, log))
    model = cfg.runs / "lm" / "model"
    t = time.perf_counter()
    log("[quickstart] enhancing the eval set")
    # "direct" (the NI-Encoder's codes, no LM) tells encoder/codec failures from LM failures;
    # "codec" is the codec's resynthesis of the clean reference, the ceiling of both.
    systems = {"noisy": None, "enhanced": cfg.runs / "enhanced", "direct": cfg.runs / "direct",
               "codec": cfg.runs / "codec"}
    enhance_evalset(model, evalset, systems["enhanced"])
    enhance_evalset(model, evalset, systems["direct"], mode="direct")
    resynthesize(cfg.runs / "codec-2" / "model", evalset / "evalset.jsonl", systems["codec"])
    if cfg.promote:
        try:
            check_model_dir(DEFAULT_MODEL_DIR)
        except FileNotFoundError as e:
            log(f"[quickstart] the current default is not compared: {e}")
        else:
            systems["default"] = cfg.runs / "default"
            enhance_evalset(DEFAULT_MODEL_DIR, evalset, systems["default"])
    timings["enhance"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[quickstart] evaluating")
    # "clean" is the metrics' own ceiling: pocketsphinx's WER on the TTS voices, DNSMOS of clean speech.
    systems = {k: None if v is None else str(v) for k, v in systems.items()} | {"clean": None}
    tables = [evaluate(view, systems, metrics=cfg.metrics, out_dir=report, workers=cfg.workers,
                       baselines=cfg.baselines) for _, view, report in views]
    for (title, _, _), table in zip(views, tables):
        if title:
            log(f"[quickstart] {title}:")
        log(format_comparison(table))
    results = tables[0]
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = summarise(results)
    below_noisy = promotion_failures(summary, "enhanced", ["noisy"])
    write_card(model_card(cfg, markdown_comparison(results), below_noisy), model)
    for line in below_noisy:
        log(f"[quickstart] worse than noisy: {line}")
    if cfg.promote:
        failures = promotion_failures(summary, "enhanced", ["noisy", "default"])
        if not failures:
            # Copied beside it first, so an interrupted copy never leaves a broken default.
            with atomic_dir(DEFAULT_MODEL_DIR) as staged:
                shutil.copytree(model, staged, dirs_exist_ok=True)
            log(f"[quickstart] default model updated: {DEFAULT_MODEL_DIR}")
        else:
            log("[quickstart] default model left as it was: " + "; ".join(failures))
    log(f"[quickstart] done in {timings['total'] / 60:.1f} min; report: {cfg.runs / 'report'}")
    return {"timings": timings, "results": results, "below_noisy": below_noisy}
