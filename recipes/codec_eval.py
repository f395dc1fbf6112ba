"""Codecs side by side on clean speech: each codec's resynthesis of an eval set's clean
references, scored with ``l3se evaluate``'s metrics, and the predictability of its tokens (the
held-out perplexity of an unconditional token LM, seed 003's claim; see
``l3se.training.token_perplexity``).

    l3se recipe codec-eval --codec codec2=runs/quickstart/codec-2/model
    l3se recipe codec-eval --config paper --ref data/evalset-paper --download \\
        --codec codec2=runs/codec2-paper/model --codec asr=runs/codec3-paper-asr/model

The config (``recipes/configs/codec_eval/<name>.yaml``, ``tiny`` or ``paper``) names the
metrics, their models and the token LM's data, size and schedule. Only the eval set's first
subset is used: every subset holds the same clean utterances. The clean references are scored
too, as the floor (the metrics' own ceiling, the word metrics' recogniser errors).

Writes ``OUT/table.md`` and ``OUT/results.json``, one row per codec and the floor;
``OUT/report`` holds ``l3se evaluate``'s reports and score cache. A rerun reuses what it can: a
codec's resynthesis lives in a folder keyed by its weights' size and modification time (so a
retrained codec is resynthesised anew), the score cache is keyed by the files scored, and a
perplexity is kept in ``OUT/token_lm`` under a key of the codec's weights, the token-LM settings
and both sets of speech.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from l3se.config import load_config, to_dict
from l3se.training.token_perplexity import TokenLMConfig
from recipes.resynthesis import eval_subset, resynthesize
from recipes.stages import resolve_config

# The floor's row: the clean references themselves.
FLOOR = "clean"


@dataclass
class CodecEvalConfig:
    # ``l3se evaluate --metrics``: names or groups.
    metrics: str = "stoi,pesq,wer_cv,sim"
    # ``l3se evaluate --model KEY=NAME_OR_PATH`` (whisper, sim_wavlm, ...).
    models: dict[str, str] = field(default_factory=dict)
    # null: no token-LM columns.
    token_lm: TokenLMConfig | None = field(default_factory=TokenLMConfig)


def load(config: str | Path = "tiny", overrides: list[str] = ()) -> CodecEvalConfig:
    return load_config(CodecEvalConfig, resolve_config("codec_eval", config), overrides)


def _fingerprint(path: Path) -> list:
    """What changes when ``path`` (a file, or a folder's weights) is rewritten."""
    from l3se.models.weights import WEIGHTS_FILE

    file = path / WEIGHTS_FILE if path.is_dir() and (path / WEIGHTS_FILE).is_file() else path
    stat = file.stat()
    return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def resynthesis_dir(out: Path, name: str, model: Path) -> Path:
    return out / "resynth" / f"{name}-{_key(_fingerprint(model))}"


def perplexity(name: str, model: Path, manifest: Path, cfg: TokenLMConfig, out: Path,
               device: str) -> dict:
    """``token_perplexity`` of the codec ``model`` on the clean references of ``manifest``, as a
    dict, computed once per codec weights, settings and speech."""
    from data_sim.files import atomic_write
    from data_sim.sources import AudioItem
    from l3se.evaluation.inputs import load_manifest
    from l3se.models.codec import WavCodec
    from l3se.training.token_perplexity import token_perplexity

    key = _key(_fingerprint(model), to_dict(cfg), _fingerprint(Path(cfg.speech)),
               manifest.read_text())
    path = out / "token_lm" / f"{name}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    heldout = [AudioItem(id=it.uid, path=it.clean) for it in load_manifest(manifest)]
    codec = WavCodec.from_pretrained(model).eval().to(device)
    result = dataclasses.asdict(token_perplexity(codec, heldout, cfg))
    atomic_write(path, json.dumps(result, indent=1))
    return result


def run(codecs: dict[str, Path], evalset: Path, out: Path, cfg: CodecEvalConfig,
        files: int | None = None, workers: int | None = None, local_only: bool = True,
        device: str = "cpu", log=print) -> str:
    """Score ``codecs`` (name -> model folder) on the first ``files`` utterances (None: all) of
    the eval set in the folder ``evalset``; returns the markdown table, also written to
    ``out/table.md`` beside ``out/results.json``."""
    from l3se.evaluation import evaluate
    from l3se.evaluation.report import comparison, summarise

    manifest = eval_subset(evalset, files, out)
    systems: dict[str, str | None] = {}
    for name, model in codecs.items():
        log(f"[codec-eval] {name}: resynthesis")
        systems[name] = str(resynthesis_dir(out, name, model))
        resynthesize(model, manifest, Path(systems[name]), device)
    systems[FLOOR] = None
    log(f"[codec-eval] scoring {cfg.metrics}")
    results = evaluate(manifest, systems, metrics=cfg.metrics, out_dir=out / "report",
                       workers=workers, models=cfg.models, local_only=local_only, progress=False)
    summary = summarise(results)
    # One subset: its aggregates are the row.
    rows = {s: {c: a["value"] for c, a in next(iter(summary[s].values())).items()}
            for s in results.systems}
    header, cells = comparison(results, summary)
    if cfg.token_lm is not None:
        header += ["LM ppl", "ppl / K", "ppl per codebook"]
        for system, line in zip(results.systems, cells):
            if system not in codecs:
                line += ["", "", ""]
                continue
            log(f"[codec-eval] {system}: token LM, {cfg.token_lm.steps} steps")
            ppl = perplexity(system, codecs[system], manifest, cfg.token_lm, out, device)
            rows[system]["token_lm"] = ppl
            line += [f"{ppl['overall']:.2f}", f"{ppl['overall'] / ppl['codebook_size']:.3f}",
                     " ".join(f"{p:.1f}" for p in ppl["per_codebook"])]
    table = "\n".join("| " + " | ".join(line) + " |"
                      for line in [header, ["---"] * len(header), *cells])
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"codecs": {n: str(m) for n, m in codecs.items()}, "config": to_dict(cfg), "rows": rows},
        indent=1))
    log(table)
    return table
