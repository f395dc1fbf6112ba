"""Does a trained model listen? Measurements that tell a model that follows its input from one that
produces the same plausible speech whatever it hears (l3se's first shipped model did).

    l3se diagnose MODEL_DIR --ref EVALSET

- codec: codebook usage, envelope correlation and STOI of its resynthesis of clean speech;
- NI-Encoder: how far its acoustic output (noisy input) is from the codec latent of the clean
  input, how often quantizing it gives the clean codes, and how much it varies across inputs;
- LM: teacher-forced loss and accuracy with the true prefix, another utterance's, and zeros;
- enhancer: envelope correlation of each output with its clean reference (LM and direct path),
  and how alike the outputs of different inputs are;
- exposure: the audio of the LM's teacher-forced choices (argmax with the true history of clean
  codes). Far above the enhanced row, the LM predicts well but derails on its own history; near
  it, the predictions themselves are the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# 20 ms frames at 16 kHz for the amplitude envelope.
ENVELOPE_FRAME = 320


def envelope(x: np.ndarray, frame: int = ENVELOPE_FRAME) -> np.ndarray:
    """[S] -> RMS per non-overlapping frame [S // frame]."""
    n = len(x) // frame
    return np.sqrt(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64).mean(1))


def envelope_correlation(x: np.ndarray, ref: np.ndarray, frame: int = ENVELOPE_FRAME) -> float:
    """Pearson correlation of the RMS envelopes of ``x`` and ``ref`` (same rate, aligned), over
    their common length: 1 when the loudness follows the reference word by word, near 0 for
    speech that ignores it."""
    n = min(len(x), len(ref))
    a, b = envelope(np.asarray(x)[:n], frame), envelope(np.asarray(ref)[:n], frame)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """codes [B, Q, T] -> share of each codebook's entries that occur at least once."""
    return [len(torch.unique(codes[:, q])) / codebook_size for q in range(codes.shape[1])]


def mean_pairwise_correlation(signals: Sequence[np.ndarray]) -> float:
    """Mean Pearson correlation between every pair of signals (cropped to a common length): near 0
    for outputs of different utterances, near 1 for a model that says the same thing to all."""
    n = min(len(s) for s in signals)
    x = np.stack([np.asarray(s[:n], dtype=np.float64) for s in signals])
    c = np.corrcoef(x)
    return float(c[np.triu_indices(len(signals), 1)].mean())


@torch.no_grad()
def prefix_reliance(
    lm, prefix: torch.Tensor, frame_lengths: torch.Tensor, codes: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Teacher-forced loss (nats) and accuracy of ``lm`` on ``codes`` [B, Q, T12] given the true
    ``prefix`` [B, T12, H], another item's (rolled by one, B >= 2) and zeros. All items are cut to
    the shortest, so a borrowed prefix has no padding. An LM that uses its prefix scores clearly
    worse without it; one that predicts from the token history alone scores the same."""
    if prefix.shape[0] < 2:
        raise ValueError("prefix_reliance needs at least 2 items to borrow another's prefix")
    t = int(frame_lengths.min())
    prefix, codes = prefix[:, :t], codes[..., :t]
    lengths = torch.full_like(frame_lengths, t)
    out = {}
    for name, p in (("true", prefix), ("shuffled", prefix.roll(1, 0)),
                    ("zeros", torch.zeros_like(prefix))):
        r = lm(p, lengths, codes)
        out[name] = {"loss": float(r.loss), "accuracy": float(r.accuracy)}
    return out


def _crop_pairs(
    evalset, n: int, sr: int, frame: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first ``n`` (noisy, clean) pairs of an eval set at ``sr``, cut to the shortest whole
    number of ``frame``-sample codec frames: [n, S] each, and their ids."""
    from pathlib import Path

    from data_sim.audio import load_audio
    from l3se.evaluation.inputs import load_manifest

    items = load_manifest(Path(evalset) / "evalset.jsonl")[:n]
    if len(items) < 2:
        raise ValueError(f"{evalset}: need at least 2 utterances, found {len(items)}")
    noisy = [load_audio(i.noisy, sr) for i in items]
    clean = [load_audio(i.clean, sr) for i in items]
    length = min(map(len, noisy + clean)) // frame * frame
    if length == 0:
        raise ValueError(f"{evalset}: an utterance is shorter than one codec frame")
    noisy, clean = (torch.from_numpy(np.stack([x[:length] for x in xs])) for xs in (noisy, clean))
    return noisy, clean, [f"{i.subset}/{i.id}" for i in items]


def _spread(x: torch.Tensor) -> float:
    """[B, T, D] -> std across items at the same frame over the overall std: 0 when every input
    gives the same features."""
    return float(x.std(0).mean() / x.std().clamp_min(1e-12))


@torch.no_grad()
def diagnose(model_dir, evalset, n: int = 8) -> dict:
    """The report described in the module docstring, on the first ``n`` utterances of an eval
    set (``l3se data evalset``), all cut to the shortest."""
    from pystoi import stoi

    from l3se.decoding import generate
    from l3se.enhancer import check_model_dir, read_config
    from l3se.models.codec import WavCodec
    from l3se.models.lm import SpeechLM
    from l3se.models.ni_encoder import NIEncoder

    model_dir = check_model_dir(model_dir)
    codec = WavCodec.from_pretrained(model_dir / "codec").eval()
    ni = NIEncoder.from_pretrained(model_dir / "ni_encoder").eval()
    lm = SpeechLM.from_pretrained(model_dir / "lm").eval()
    decode = read_config(model_dir).decode
    sr = codec.sample_rate
    noisy, clean, ids = _crop_pairs(evalset, n, sr, codec.frame_length)
    length = noisy.shape[-1]
    def audio_report(wavs: torch.Tensor) -> dict:
        out, ref = list(wavs.float().numpy()), list(clean.float().numpy())
        return {
            "envelope_correlation": float(np.mean([envelope_correlation(o, r)
                                                   for o, r in zip(out, ref)])),
            "stoi": float(np.mean([stoi(r, o, sr) for o, r in zip(out, ref)])),
            "pairwise_correlation": mean_pairwise_correlation(out),
        }

    latent = codec.encode_latent(clean)
    clean_codes = codec.quantize(latent)[1]
    k = codec.cfg.codebook_size
    feats = ni(noisy)
    direct_codes = codec.quantize(feats.acoustic)[1]
    prefix = lm.prefix(feats.acoustic, feats.semantic)
    entries = codec.entry_vectors()
    lm_codes = generate(lm, prefix, feats.frame_lengths, decode, entries=entries)
    zero_codes = generate(lm, torch.zeros_like(prefix), feats.frame_lengths, decode,
                          entries=entries)
    forced = lm(prefix, feats.frame_lengths, clean_codes).logits.argmax(-1).transpose(1, 2)
    return {
        "utterances": ids,
        "seconds": length / sr,
        "noisy": audio_report(noisy),
        "codec": {
            **audio_report(codec.decode(clean_codes, length)),
            "codebook_usage": codebook_usage(clean_codes, k),
        },
        "ni_encoder": {
            "relative_mse": float((feats.acoustic - latent).square().mean()
                                  / latent.square().mean()),
            "code_agreement": float((direct_codes == clean_codes).float().mean()),
            "first_codebook_agreement": float((direct_codes[:, 0] == clean_codes[:, 0])
                                              .float().mean()),
            "spread": _spread(feats.acoustic),
            "target_spread": _spread(latent),
        },
        "lm": {
            **prefix_reliance(lm, prefix, feats.frame_lengths, clean_codes),
            "uniform_loss": float(np.log(k)),
            "codes_equal_to_zero_prefix": float((lm_codes == zero_codes).float().mean()),
            "codebook_usage": codebook_usage(lm_codes, k),
        },
        "direct": audio_report(codec.decode(direct_codes, length)),
        "enhanced": audio_report(codec.decode(lm_codes, length)),
        "teacher_forced": audio_report(codec.decode(forced, length)),
    }


def _span(shares: list[float]) -> str:
    return f"{min(shares):.0%}..{max(shares):.0%}"


def format_report(report: dict) -> str:
    """The report as aligned text lines."""
    lines = [f"{len(report['utterances'])} utterances cut to {report['seconds']:.2f} s"]
    lines.append(f"{'audio':<14} {'env.corr':>9} {'STOI':>6} {'pairwise':>9}")
    for name in ("noisy", "codec", "direct", "enhanced", "teacher_forced"):
        r = report[name]
        lines.append(f"{name:<14} {r['envelope_correlation']:>9.3f} {r['stoi']:>6.3f} "
                     f"{r['pairwise_correlation']:>9.3f}")
    lines.append(f"codec codebook usage per codebook: {_span(report['codec']['codebook_usage'])}")
    e = report["ni_encoder"]
    lines.append(
        f"NI-Encoder vs codec latent: relative MSE {e['relative_mse']:.3f}, codes equal "
        f"{e['code_agreement']:.1%} (first codebook {e['first_codebook_agreement']:.1%}), "
        f"spread across inputs {e['spread']:.3f} (target {e['target_spread']:.3f})"
    )
    m = report["lm"]
    lines.append(
        "LM teacher-forced loss / accuracy: "
        + ", ".join(f"{p} {m[p]['loss']:.3f} / {m[p]['accuracy']:.1%}"
                    for p in ("true", "shuffled", "zeros"))
        + f" (uniform {m['uniform_loss']:.2f})"
    )
    lines.append(f"LM codes equal to an all-zero prefix's: {m['codes_equal_to_zero_prefix']:.1%}; "
                 f"codebook usage {_span(m['codebook_usage'])}")
    return "\n".join(lines)
