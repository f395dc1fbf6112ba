"""Tiny fake corpora in the layouts the real ones are published in: Emilia's WebDataset tar
shards (``{id}.mp3`` + ``{id}.json``) and its older ``.tar.gz`` batches with a JSONL, a
LibriSpeech tree, OpenSLR's RIR download, a folder of noises and a user's folder of recordings
with ``.txt`` transcripts."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from data_sim.audio import write_audio
from tests.conftest import SR, speech_like, synthetic_rir

EMILIA_SR = 24000


def mp3_bytes(x: np.ndarray, sr: int = EMILIA_SR) -> bytes:
    """libsndfile (>= 1.1) writes MPEG layer III itself: real MP3 members, no other tool."""
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="MP3", subtype="MPEG_LAYER_III")
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def emilia_rows(lang: str, batch: int, n: int, seed: int) -> list[tuple[dict, np.ndarray]]:
    """(json row, 24 kHz signal [S]) per utterance, 1.0, 1.5, 2.0 ... s long."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n):
        uid = f"{lang}_B{batch:05d}_S00000_W{u:06d}"
        x = speech_like(rng, 1.0 + 0.5 * u, EMILIA_SR)
        rows.append(({"id": uid, "text": f"words of {uid}", "duration": len(x) / EMILIA_SR,
                      "speaker": f"{lang}_B{batch:05d}_S00000", "language": lang.lower(),
                      "dnsmos": round(2.8 + 0.3 * u, 2)}, x))
    return rows


def emilia_shards(root: Path, langs=("EN", "ZH"), shards: int = 2, per_shard: int = 3
                  ) -> dict[str, tuple[dict, np.ndarray]]:
    """``root/Emilia/{LANG}/{LANG}-B00000k.tar`` as the current release lays them out; returns
    {id: (json row, signal)}."""
    written = {}
    for lang in langs:
        folder = root / "Emilia" / lang
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(shards):
            rows = emilia_rows(lang, s, per_shard, seed=10 * sum(map(ord, lang)) + s)
            with tarfile.open(folder / f"{lang}-B{s:06d}.tar", "w") as tar:
                for row, x in rows:
                    add_member(tar, f"{row['id']}.mp3", mp3_bytes(x))
                    add_member(tar, f"{row['id']}.json", json.dumps(row).encode())
                    written[row["id"]] = (row, x)
    return written


def emilia_gz_batch(root: Path, name: str = "EN_B00000", n: int = 3
                    ) -> tuple[Path, dict[str, tuple[dict, np.ndarray]]]:
    """The older release's ``{name}.tar.gz``: ``{name}.jsonl`` (rows naming their mp3 by a
    ``wav`` path relative to the batch folder) after the mp3s under ``{name}/``."""
    rows = emilia_rows(name[:2], int(name[-5:]), n, seed=7)
    path = root / f"{name}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for row, x in rows:
            rel = f"{name}_S00000/mp3/{row['id']}.mp3"
            add_member(tar, f"{name}/{rel}", mp3_bytes(x))
            lines.append(json.dumps({**row, "wav": rel}))
        add_member(tar, f"{name}/{name}.jsonl", ("\n".join(lines) + "\n").encode())
    return path, {row["id"]: (row, x) for row, x in rows}


def librispeech_tree(root: Path, speakers=(100, 101), per_speaker: int = 2) -> dict[str, str]:
    """``root/SPK/CHAPTER/SPK-CHAPTER-UTT.flac`` + ``SPK-CHAPTER.trans.txt``; returns
    {id: transcript}."""
    rng = np.random.default_rng(1)
    texts = {}
    for spk in speakers:
        folder = root / str(spk) / "7"
        lines = []
        for u in range(per_speaker):
            uid = f"{spk}-7-{u:04d}"
            write_audio(folder / f"{uid}.flac", speech_like(rng, 1.0 + 0.5 * u))
            texts[uid] = f"UTTERANCE {u} OF SPEAKER {spk}"
            lines.append(f"{uid} {texts[uid]}\n")
        (folder / f"{spk}-7.trans.txt").write_text("".join(lines))
    return texts


def user_folder(root: Path, n: int = 4) -> dict[str, str]:
    """A user's recordings as they keep them: ``root/take{i}.wav`` with ``take{i}.txt`` beside
    it; returns {id: transcript}."""
    rng = np.random.default_rng(2)
    texts = {}
    for i in range(n):
        write_audio(root / f"take{i}.wav", speech_like(rng, 1.0 + 0.25 * i))
        texts[f"take{i}"] = f"my own recording number {i}"
        (root / f"take{i}.txt").write_text(texts[f"take{i}"] + "\n")
    return texts


def noise_folder(root: Path, n: int = 3) -> None:
    """``root/noise_{i}.wav``, 2 s of white noise each."""
    rng = np.random.default_rng(3)
    for i in range(n):
        write_audio(root / f"noise_{i}.wav", (0.1 * rng.standard_normal(2 * SR)).astype(np.float32))


def openslr_rirs(root: Path, n: int = 2) -> Path:
    """OpenSLR28's download, ``root/RIRS_NOISES``: RIRs under ``simulated_rirs/smallroom/Room001``
    and, as in the real one, an isotropic noise recording beside real RIRs that an RIR reader
    must leave out. Returns the ``RIRS_NOISES`` folder."""
    rng = np.random.default_rng(4)
    top = root / "RIRS_NOISES"
    for i in range(n):
        write_audio(top / "simulated_rirs" / "smallroom" / "Room001" / f"Room001-{i + 1:05d}.wav",
                    synthetic_rir(rng, 0.2 + 0.1 * i))
    real = top / "real_rirs_isotropic_noises"
    write_audio(real / "RVB2014_type1_rir_largeroom1_near_angla.wav", synthetic_rir(rng, 0.3))
    write_audio(real / "RVB2014_type1_noise_largeroom1_1.wav",
                (0.1 * rng.standard_normal(SR)).astype(np.float32))
    return top
