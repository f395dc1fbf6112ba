"""A codec's resynthesis of clean eval speech: the ceiling of everything decoded through it.
Shared by the quickstart, the codec-3 ablation and the codec sweep."""

from __future__ import annotations

import json
from pathlib import Path


def resynthesize(codec_dir: Path, manifest: Path, out: Path, device: str = "cpu") -> None:
    """The codec's reconstruction of every clean reference of an eval-set ``manifest``: the
    ceiling any enhancer that decodes through this codec can reach. Written as
    ``out/<subset>/clean/<id>.wav``; files already there are kept."""
    import torch

    from data_sim.audio import load_audio, write_audio
    from l3se.evaluation.inputs import load_manifest
    from l3se.models.codec import WavCodec

    codec = WavCodec.from_pretrained(codec_dir).eval().to(device)
    for item in load_manifest(manifest):
        dest = out / item.subset / "clean" / f"{item.id}.wav"
        if dest.is_file():
            continue
        wav = torch.from_numpy(load_audio(item.clean, codec.sample_rate))[None].to(device)
        with torch.inference_mode():
            audio = codec.decode(codec.encode(wav), wav.shape[-1])[0]
        write_audio(dest, audio.cpu().numpy(), codec.sample_rate)


def eval_subset(evalset: Path, files: int | None, out: Path) -> Path:
    """Manifest of the first ``files`` (None: all) utterances of the eval set's first subset,
    with absolute paths so it can live in ``out``."""
    rows = [json.loads(line) for line in (evalset / "evalset.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["subset"] == rows[0]["subset"]][:files]
    for r in rows:
        r["noisy"] = str((evalset / r["noisy"]).resolve())
        r["clean"] = str((evalset / r["clean"]).resolve())
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "evalset.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def mel_distance(model: Path, manifest: Path) -> float:
    """Mean multi-scale mel distance (DAC's, as the codec's training loss) between each clean
    reference and its resynthesis through the codec ``model``."""
    import torch

    from data_sim.audio import load_audio
    from l3se.evaluation.inputs import load_manifest
    from l3se.models.codec import WavCodec
    from l3se.models.losses import CodecLossConfig, MultiScaleMelLoss

    codec = WavCodec.from_pretrained(model).eval()
    loss_cfg = CodecLossConfig()
    mel = MultiScaleMelLoss(loss_cfg.mel_n_mels, loss_cfg.mel_windows, codec.sample_rate)
    values = []
    with torch.inference_mode():
        for item in load_manifest(manifest):
            wav = torch.from_numpy(load_audio(item.clean, codec.sample_rate))[None]
            values.append(float(mel(codec.decode(codec.encode(wav), wav.shape[-1]), wav)))
    return sum(values) / len(values)
