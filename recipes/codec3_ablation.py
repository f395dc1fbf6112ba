"""The codec-3 ablation at tiny scale: does a language-model objective make the codec keep the
words (seeds 000/001), or make its tokens easier for stage lm (seeds 003/004)?

    l3se recipe codec3-ablation --variants tiny,tiny_asr,tiny_ttr
    l3se recipe codec3-ablation --variants tiny,tiny_ftp,tiny_sa,tiny_llmcodec --lm

It starts from a finished quickstart (``--runs``: its codec-2, s2t and distill models). Every
variant (a ``recipes/configs/codec3`` config) fine-tunes the same codec-2 model for the same steps
with the same seed, so the objective is the only difference; the ASR judge (a CTC WavS2T) and the
TTR summariser are trained first when a variant needs them. Each codec is then scored on its resynthesis of the clean references of the
first ``--files`` eval utterances: multi-scale mel distance, STOI, DNSMOS and the closed-vocabulary
pocketsphinx WER, a judge that none of the objectives trains against. With ``--lm`` a tiny LM is
trained on each codec's tokens (same steps, the quickstart's NI-Encoder) and the table adds its
validation loss and its enhanced output scored the same way, beside the noisy input's.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from l3se.config import load_config, to_dict
from recipes.resynthesis import eval_subset, mel_distance, resynthesize
from recipes.stages import STAGES, resolve_config, run_stage
from recipes.train_codec import CodecRecipeConfig

# The word judge (closed-vocabulary pocketsphinx), intelligibility and DNSMOS: DNSMOS alone once
# preferred fluent babble.
METRICS = "stoi,dnsmos,wer_cv"


@dataclass
class AblationConfig:
    variants: list[str]
    runs: Path = Path("runs/quickstart")  # a finished quickstart
    out: Path = Path("runs/codec3-ablation")
    data: Path = Path("data")
    steps: int = 300  # codec-3 steps per variant
    ttr_steps: int = 600  # summariser pretraining, when a variant needs it
    judge_steps: int = 2400  # the CTC WavS2T judge, when a variant needs it
    lm_steps: int = 0  # 0: no LM column
    files: int = 40  # eval utterances (from the first subset)
    workers: int = 2
    metrics: str = METRICS


def _word_manifests(cfg: AblationConfig) -> dict[str, Path]:
    """The starter manifests with word timings (TTR's input), written once."""
    from data_sim.word_times import add_word_times

    out = {}
    for split in ("train", "test"):
        src = cfg.data / "starter" / "speech" / f"{split}.jsonl"
        dest = src.with_name(f"{split}_words.jsonl")
        if not dest.is_file():
            add_word_times(src, dest)
        out[split] = dest
    return out


def _eval_manifests(cfg: AblationConfig) -> tuple[Path, Path]:
    """(reference manifest, noisy-input manifest) of the first ``files`` utterances of the eval
    set's first subset."""
    ref = eval_subset(cfg.data / "evalset", cfg.files, cfg.out)
    rows = [json.loads(line) for line in ref.read_text().splitlines()]
    noisy = cfg.out / "noisy.jsonl"
    noisy.write_text("".join(json.dumps({"id": r["id"], "path": r["noisy"]}) + "\n" for r in rows))
    return ref, noisy


def settings_key(stage: str, config: str, overrides: list[str]) -> str:
    """A short hash of the stage's resolved config and of the upstream models it names (their
    weights' size and modification time): the same key means the same run."""
    from l3se.models.weights import WEIGHTS_FILE

    spec = STAGES[stage]
    cfg = load_config(spec.config_class, resolve_config(spec.folder, config), overrides)
    upstream = {}
    for key in spec.upstream:
        path = getattr(cfg, key, None)
        weights = Path(path) / WEIGHTS_FILE if path else None
        if weights is not None and weights.is_file():
            stat = weights.stat()
            upstream[key] = [str(path), stat.st_size, stat.st_mtime_ns]
        else:
            upstream[key] = path
    text = json.dumps([to_dict(cfg), upstream], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _train(stage: str, config: str, out: Path, overrides: list[str]) -> Path:
    """The model of ``stage`` trained with ``config`` and ``overrides``, in ``<out>-<key of its
    settings>``: a rerun with other steps, variant or upstream models trains anew instead of
    reporting the model it left before."""
    run = out.with_name(f"{out.name}-{settings_key(stage, config, overrides)}")
    model = run / "model"
    if not model.is_dir():
        run_stage(stage, config, [f"train.output_dir={run}", *overrides])
    return model


def train_variants(cfg: AblationConfig, log=print) -> tuple[dict[str, Path], Path | None]:
    """(variant -> its codec-3 model, the ASR judge or None), each trained unless there, the
    judge and summariser first when a variant needs them."""
    words = _word_manifests(cfg)
    data = [f"data.speech={words['train']}", f"valid.speech={words['test']}"]
    codec2 = cfg.runs / "codec-2" / "model"
    variants = {v: load_config(CodecRecipeConfig, resolve_config("codec3", v))
                for v in cfg.variants}
    upstream = [f"init_from={codec2}"]
    judge = None
    if any(v.asr is not None and v.asr.judge == "s2t" for v in variants.values()):
        # The quickstart's next-token WavS2T cannot transcribe (see s2t/tiny_ctc_judge.yaml).
        log("[ablation] ASR judge: s2t tiny_ctc_judge")
        judge = _train("s2t", "tiny_ctc_judge", cfg.out / "s2t-ctc-judge",
                       [*data, f"backbone_from={codec2}", f"train.max_steps={cfg.judge_steps}"])
        upstream.append(f"judge_from={judge}")
    if any(v.ttr is not None for v in variants.values()):
        log("[ablation] ttr summariser")
        summarizer = _train("ttr", "tiny", cfg.out / "ttr",
                            [*data, f"backbone_from={codec2}", f"train.max_steps={cfg.ttr_steps}"])
        upstream.append(f"summarizer_from={summarizer}")
    models = {}
    for name, variant in variants.items():
        extra = []
        if variant.llm_codec is not None:
            # The offline LLM reads transcripts with s2t's BPE.
            extra.append(f"llm_codec.tokenizer={cfg.runs / 's2t' / 'model' / 'tokenizer'}")
        log(f"[ablation] codec-3 {name}: {cfg.steps} steps")
        models[name] = _train("codec-3", name, cfg.out / name,
                              [*data, *upstream, *extra, f"train.max_steps={cfg.steps}"])
    return models, judge


def judge_cer(judge: Path, manifest: Path, outputs: Path | None) -> float:
    """Character error rate (%) of the ASR judge the ``*_asr`` variants train against, on the
    resynthesis in ``outputs`` (None: the clean references): what their loss optimises, shown
    beside the independent WER-CV."""
    import jiwer
    import torch

    from data_sim.audio import load_audio
    from l3se.evaluation.inputs import load_manifest
    from l3se.models.codec import WavCodec
    from l3se.models.s2t import WavS2T

    s2t = WavS2T.from_pretrained(judge).eval()
    refs, hyps = [], []
    with torch.inference_mode():
        for item in load_manifest(manifest):
            # Where resynthesize wrote it.
            path = item.clean if outputs is None else outputs / item.subset / "clean" / f"{item.id}.wav"
            wav = load_audio(path, WavCodec.sample_rate)
            refs.append(s2t.normalize(item.text))
            hyps.append(s2t.transcribe(torch.from_numpy(wav)[None])[0])
    return 100 * jiwer.cer(refs, hyps)


def lm_val_loss(run: Path) -> float:
    """The last validation loss an lm run logged (TensorBoard ``val/loss``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return events.Scalars("val/loss")[-1].value


def run(cfg: AblationConfig, log=print) -> str:
    from l3se.enhance_corpus import enhance_corpus
    from l3se.evaluation import evaluate
    from l3se.evaluation.report import summarise

    models, judge = train_variants(cfg, log)
    ref, noisy = _eval_manifests(cfg)
    codecs = {"codec-2": cfg.runs / "codec-2" / "model", **models}
    systems: dict[str, str | None] = {}
    mel, cer = {}, {}
    for name, model in codecs.items():
        out = cfg.out / "resynth" / name
        resynthesize(model, ref, out)
        systems[f"{name} resynth"] = str(out)
        mel[name] = mel_distance(model, ref)
        if judge is not None:
            cer[f"{name} resynth"] = judge_cer(judge, ref, out)
    if judge is not None:
        cer["clean"] = judge_cer(judge, ref, None)
    lm_loss = {}
    if cfg.lm_steps:
        systems["noisy"] = None
        starter = cfg.data / "starter"
        for name, model in models.items():
            log(f"[ablation] lm on {name}'s tokens: {cfg.lm_steps} steps")
            lm = _train("lm", "tiny", cfg.out / "lm" / name, [
                f"codec={model}", f"ni_encoder={cfg.runs / 'distill' / 'model'}",
                f"train.max_steps={cfg.lm_steps}", f"train.val_every={cfg.lm_steps}",
                *(f"{k}.{f}={starter}/{f}/{s}.jsonl" for k, s in (("data", "train"),
                  ("valid", "test")) for f in ("speech", "noise", "rir")),
            ])
            lm_loss[name] = lm_val_loss(lm.parent)
            enhanced = cfg.out / "enhanced" / name
            enhance_corpus(noisy, enhanced, model=lm, progress=False)
            systems[f"{name} enhanced"] = str(enhanced)
    systems["clean"] = None
    results = evaluate(ref, systems, metrics=cfg.metrics, out_dir=cfg.out / "report",
                       workers=cfg.workers, progress=False)
    table = format_table(summarise(results), mel, lm_loss, cer)
    (cfg.out / "table.md").write_text(table + "\n")
    log(table)
    return table


def format_table(summary: dict, mel: dict[str, float], lm_loss: dict[str, float],
                 cer: dict[str, float]) -> str:
    """One row per system: mel distance, STOI, DNSMOS, WER-CV (and the ASR judge's CER, the
    LM's loss and perplexity)."""
    columns = [("stoi", "STOI", "{:.3f}"), ("dnsmos_ovrl", "DNSMOS", "{:.3f}"),
               ("wer_cv", "WER-CV %", "{:.1f}")]
    head = ["system", "mel dist.", *(label for _, label, _ in columns)]
    if cer:
        head.append("judge CER %")
    if lm_loss:
        head += ["LM val loss", "LM perplexity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, subsets in summary.items():
        aggs = next(iter(v for k, v in subsets.items() if k != "all"), subsets.get("all", {}))
        name = system.rsplit(" ", 1)[0]
        cells = [system, f"{mel[name]:.3f}" if system.endswith("resynth") else ""]
        for key, _, fmt in columns:
            value = aggs.get(key, {}).get("value")
            cells.append(fmt.format(value) if value is not None else "")
        if cer:
            cells.append(f"{cer[system]:.1f}" if system in cer else "")
        if lm_loss:
            loss = lm_loss.get(name) if system.endswith("enhanced") else None
            cells += [f"{loss:.3f}", f"{math.exp(loss):.1f}"] if loss is not None else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
