"""The enhancer: noisy waveform -> NI-Encoder -> SpeechLM -> WavCodec decoder -> enhanced waveform.

A model directory holds ``enhancer.yaml`` (an ``EnhancerConfig``) and three ``from_pretrained``
directories: ``ni_encoder/``, ``lm/`` and ``codec/``.

    enhance_batch([(wav, sr), ...])
      -> mono [S_i] at the codec's rate -> chunks of <= chunk_seconds, frame-aligned, overlapping
      -> batches of <= chunks_per_batch chunks, longest first
         -> per equal frame count: pad [b, S] + lengths [b] -> NI-Encoder -> prefix [b, T12, H]
         -> all together: generate codes [B, Q, T12] (shorter prefixes padded, and masked)
         -> per equal frame count: decode [b, S']
      -> each chunk trimmed to its length, chunks cross-faded back to [S_i]

The model directory's ``EnhancerConfig`` holds the defaults; each call may pass its own
``decode``, ``mode`` and ``chunks_per_batch`` instead, so one loaded Enhancer serves callers with
different settings (the app's requests) without being changed. The sample rate and the frame
length come from the loaded codec.

Mode "direct" replaces the LM by the codec's own quantizer: codes = RVQ(NI-Encoder acoustic
output). It needs no LM, so comparing it with mode "lm" tells NI-Encoder or codec failures from
LM failures: an acoustic head distilled to the codec's latent (distill targets "teachers" or
"acoustic") decodes to speech that follows the input whatever the LM does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from l3se.config import ConfigError, from_dict, save_config
from l3se.decoding import DecodeConfig, DecodeEngine

if TYPE_CHECKING:
    from l3se.card import ModelCard

CONFIG_FILE = "enhancer.yaml"
PARTS = ("ni_encoder", "lm", "codec")
MODES = ("lm", "direct")
# The bundled model that `l3se enhance` and the app use when no model is named; the quickstart
# recipe writes it.
DEFAULT_MODEL_DIR = Path(__file__).parent / "pretrained" / "default"
# The shortest input `l3se enhance` and the app take: one 12.5 Hz codec frame, about a phone;
# anything shorter holds no speech to restore.
MIN_SECONDS = 0.08
# The chunk length of a model that records neither chunk_seconds nor trained_seconds.
FALLBACK_CHUNK_SECONDS = 20.0

# progress(done, total): chunks decoded so far out of all chunks of the call.
Progress = Callable[[int, int], None]


@dataclass
class EnhancerConfig:
    # "lm": the SpeechLM generates the codes; "direct": the codec quantizes the NI-Encoder's
    # acoustic output (see the module docstring).
    mode: Literal["lm", "direct"] = "lm"
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    # Inputs longer than this are enhanced in chunks of this length, cross-faded over
    # ``overlap_seconds``, so memory stays bounded for any length. None: ``trained_seconds``, so
    # that the LM never decodes a sequence longer than any it was trained on (or
    # FALLBACK_CHUNK_SECONDS when that length is not known).
    chunk_seconds: float | None = None
    overlap_seconds: float = 1.0
    # Chunks (whole utterances or pieces of long ones) decoded together.
    chunks_per_batch: int = 8
    # The longest input the LM was trained on: the lm stage writes its crop length
    # (data.mix.segment_seconds) here; None when training used whole utterances or the model
    # predates it.
    trained_seconds: float | None = None


def plan_chunks(num_samples: int, chunk: int, overlap: int, frame: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges covering ``num_samples``: at most ``chunk`` samples each, starts
    on multiples of ``frame``, consecutive chunks sharing ``overlap`` samples (the last may share
    fewer when the signal ends inside the overlap) and no sample in more than two chunks.

    The hop is spread evenly over the chunks so that they have (nearly) equal lengths: they batch
    without padding, and the last chunk is not a sliver with too little context to enhance.
    """
    if chunk <= 0 or chunk % frame or overlap % frame:
        raise ValueError(f"chunk {chunk} and overlap {overlap} must be multiples of {frame}")
    if not 0 <= 2 * overlap <= chunk:
        raise ValueError(f"overlap {overlap} must be in [0, chunk / 2 = {chunk // 2}]")
    if num_samples <= chunk:
        return [(0, num_samples)]
    n = math.ceil((num_samples - overlap) / (chunk - overlap))
    # hop >= overlap keeps chunk i + 2 clear of chunk i's fade-out.
    hop = max(overlap, frame * math.ceil((num_samples - overlap) / n / frame))
    return [(i * hop, min(i * hop + hop + overlap, num_samples)) for i in range(n)]


def crossfade(
    pieces: Sequence[torch.Tensor], spans: Sequence[tuple[int, int]], overlap: int
) -> torch.Tensor:
    """Chunks [S_i] at ``spans`` (from ``plan_chunks``) -> one signal [S].

    Raised-cosine ramps over each overlap: fade-out sin^2 and fade-in cos^2 sum to exactly 1, so a
    signal the chunks agree on comes back unchanged, and the ramps have zero slope at both ends,
    so the seam adds no click. Amplitude (not power) complementary because neighbouring chunks
    enhance the same audio and are strongly correlated.
    """
    length = spans[-1][1]
    out = torch.zeros(length, dtype=pieces[0].dtype, device=pieces[0].device)
    weight = torch.zeros_like(out)
    t = (torch.arange(overlap, dtype=out.dtype, device=out.device) + 0.5) / max(overlap, 1)
    fade_in = torch.sin(0.5 * math.pi * t).square()
    for i, (piece, (start, end)) in enumerate(zip(pieces, spans)):
        w = torch.ones(end - start, dtype=out.dtype, device=out.device)
        if i > 0:
            n = min(overlap, end - start)
            w[:n] = fade_in[:n]
        if i + 1 < len(spans):
            # Only the part of the next chunk's fade-in that lies inside this chunk.
            n = end - spans[i + 1][0]
            w[end - start - n :] = 1 - fade_in[:n]
        out[start:end] += w * piece
        weight[start:end] += w
    # The weights already sum to 1; dividing keeps that exact where a last chunk is cut short.
    return out / weight


def to_mono(wav: np.ndarray | torch.Tensor, sr: int, rate: int) -> np.ndarray:
    """[S] or [C, S] at ``sr`` -> float32 mono [S'] at ``rate`` (channels averaged, soxr
    resampled)."""
    from data_sim.audio import resample

    x = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"expected audio [S] or [C, S], got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError("empty audio")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(resample(x, int(sr), rate), dtype=np.float32)


def item_seed(seed: int, wav: torch.Tensor) -> int:
    """The sampling seed of one signal [S]: ``seed`` and its samples hashed together, so
    that its output depends on its own audio and ``seed`` only (not on its batch or its place in
    a corpus), and different inputs draw differently."""
    data = wav.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    digest = hashlib.blake2b(data, digest_size=8, key=str(seed).encode()).digest()
    # 63 bits: every torch generator accepts it.
    return int.from_bytes(digest, "little") >> 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto": CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto": bf16 on CUDA, fp32 elsewhere; else "fp32"/"bf16"/"fp16" or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
    return names[dtype]


def save_enhancer(
    path: str | Path, ni_encoder, lm, codec, cfg: EnhancerConfig | None = None,
    card: ModelCard | None = None,
) -> Path:
    """Write a model directory: ``enhancer.yaml``, each part's ``save_pretrained`` folder and,
    when given, the model card (``l3se.card``)."""
    from l3se.card import write_card

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, part in zip(PARTS, (ni_encoder, lm, codec)):
        part.save_pretrained(path / name)
    save_config(cfg or EnhancerConfig(), path / CONFIG_FILE)
    if card is not None:
        write_card(card, path)
    return path


def read_config(model_dir: str | Path) -> EnhancerConfig:
    """The settings saved in a model directory (a ConfigError when they do not parse)."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and "batch_size" in data:
            # Written before the two batch sizes had their own names; it counted chunks.
            data["chunks_per_batch"] = data.pop("batch_size")
        return from_dict(EnhancerConfig, data)
    except (OSError, yaml.YAMLError, ConfigError) as e:
        raise ConfigError(f"{path}: {e}") from None


def check_model_dir(path: str | Path) -> Path:
    """``path`` if it is a model directory, else a FileNotFoundError saying what is missing."""
    path = Path(path)
    if not path.exists():
        if path == DEFAULT_MODEL_DIR:
            raise FileNotFoundError(
                "no default model: run `l3se recipe quickstart` or pass --model DIR"
            )
        raise FileNotFoundError(f"model directory not found: {path}")
    missing = [n for n in (CONFIG_FILE, *PARTS) if not (path / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not an enhancer model directory: missing {', '.join(missing)}"
        )
    return path


class Enhancer:
    """See the module docstring. Outputs are mono at ``sample_rate``."""

    def __init__(
        self, ni_encoder, lm, codec, cfg: EnhancerConfig | None = None,
        device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
        cuda_graphs: bool | None = None, decode_threads: int | None = 1,
    ):
        """``cuda_graphs`` and ``decode_threads``: the decoding engine's (``DecodeEngine``:
        None follows L3SE_CUDA_GRAPHS; CPU threads of the token loop, None: the process's)."""
        self.cfg = cfg or EnhancerConfig()
        # The decoding state (CUDA graphs and their buffers) of this enhancer's calls.
        self.decoding = DecodeEngine(cuda_graphs, decode_threads)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.ni_encoder = ni_encoder.to(self.device).eval()
        self.lm = lm.to(self.device).eval()
        self.codec = codec.to(self.device).eval()
        self.sample_rate = codec.sample_rate
        # Samples per codec token frame: chunk boundaries fall on frame boundaries.
        self.frame_length = codec.frame_length
        self.check_mode(self.cfg.mode)

    @classmethod
    def from_pretrained(
        cls, path: str | Path = DEFAULT_MODEL_DIR, device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto", **engine,
    ) -> Enhancer:
        """Load a model directory; its saved settings become the defaults of every call.
        ``engine``: ``cuda_graphs`` and ``decode_threads`` (see ``__init__``)."""
        from l3se.models.codec import WavCodec
        from l3se.models.lm import SpeechLM
        from l3se.models.ni_encoder import NIEncoder

        path = check_model_dir(path)
        cfg = read_config(path)
        codec = WavCodec.from_pretrained(path / "codec")
        # Only the quantizer's codebooks and the decoder are used: dropping the codec's own WavLM
        # and encoder saves a second WavLM-Large (over 1 GB in fp32) per process.
        for name in ("ssl", "mixture", "encoder"):
            delattr(codec, name)
        return cls(
            NIEncoder.from_pretrained(path / "ni_encoder"), SpeechLM.from_pretrained(path / "lm"),
            codec, cfg, device=device, dtype=dtype, **engine,
        )

    def free(self) -> None:
        """Release the decoding state's memory (CUDA graphs and their K/V buffers); the next
        call sets it up again."""
        self.decoding.free()

    def check_mode(self, mode: str) -> None:
        """A ValueError unless ``mode`` can run with these parts."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use {' or '.join(MODES)}")
        acoustic, latent = self.ni_encoder.acoustic_dim, self.codec.cfg.dim
        if mode == "direct" and acoustic != latent:
            raise ValueError(
                f"mode direct quantizes the NI-Encoder's acoustic output ({acoustic} dims) with "
                f"the codec, whose latent has {latent}: this model has no such path"
            )

    def _frame_aligned_samples(self, seconds: float) -> int:
        """``seconds`` rounded to whole codec frames, in samples."""
        return round(seconds * self.sample_rate / self.frame_length) * self.frame_length

    @property
    def chunk_samples(self) -> int:
        seconds = self.cfg.chunk_seconds
        if seconds is None:
            seconds = self.cfg.trained_seconds or FALLBACK_CHUNK_SECONDS
        return max(self.frame_length, self._frame_aligned_samples(seconds))

    @property
    def overlap_samples(self) -> int:
        return self._frame_aligned_samples(self.cfg.overlap_seconds)

    def enhance(
        self, wav: np.ndarray | torch.Tensor, sr: int, progress: Progress | None = None,
        **settings,
    ) -> np.ndarray | torch.Tensor:
        """wav [S] or [C, S] at ``sr`` -> enhanced mono [S * sample_rate / sr], of the input's
        type (a CPU float tensor for a tensor). ``settings``: as ``enhance_batch``'s."""
        return self.enhance_batch([(wav, sr)], progress, **settings)[0]

    def enhance_batch(
        self, items: Sequence[tuple[np.ndarray | torch.Tensor, int]],
        progress: Progress | None = None, *, decode: DecodeConfig | None = None,
        mode: str | None = None, chunks_per_batch: int | None = None,
    ) -> list[np.ndarray | torch.Tensor]:
        """Enhance several inputs together; each output has its own input's length. ``decode``,
        ``mode`` and ``chunks_per_batch`` replace the model's saved settings for this call."""
        size = self.cfg.chunks_per_batch if chunks_per_batch is None else chunks_per_batch
        if size < 1:
            raise ValueError(f"chunks_per_batch must be at least 1, got {size}")
        signals = [torch.from_numpy(to_mono(wav, sr, self.sample_rate)) for wav, sr in items]
        plans = [plan_chunks(len(s), self.chunk_samples, self.overlap_samples, self.frame_length)
                 for s in signals]
        pieces = [(i, j, signals[i][a:b]) for i, plan in enumerate(plans)
                  for j, (a, b) in enumerate(plan)]
        results: list[list[torch.Tensor | None]] = [[None] * len(p) for p in plans]
        done = 0
        for batch in self._batches(pieces, size):
            outs = self.enhance_tensor([p[2] for p in batch], decode=decode, mode=mode)
            for (i, j, _), out in zip(batch, outs):
                results[i][j] = out
            done += len(batch)
            if progress is not None:
                progress(done, len(pieces))
        outputs = []
        for (wav, _), plan, res in zip(items, plans, results):
            y = res[0] if len(res) == 1 else crossfade(res, plan, self.overlap_samples)
            outputs.append(y if isinstance(wav, torch.Tensor) else y.numpy())
        return outputs

    def _batches(self, pieces: list, size: int) -> list[list]:
        """Batches of at most ``size`` pieces, longest first, so that a batch's pieces are of
        similar lengths: the LM decodes them together (its steps are set by the longest), and a
        batch costs the LM little more than one piece (benchmarks/bench_decode.py measures it)."""
        pieces = sorted(pieces, key=lambda p: -len(p[2]))
        return [pieces[k : k + size] for k in range(0, len(pieces), size)]

    @torch.inference_mode()
    def enhance_tensor(
        self, wavs: Sequence[torch.Tensor], *, decode: DecodeConfig | None = None,
        mode: str | None = None,
    ) -> list[torch.Tensor]:
        """Mono signals [S_i] at ``sample_rate`` -> enhanced [S_i] (CPU float32): one batched
        generate (or, in mode direct, quantization), and an NI-Encoder pass and a codec decode
        per group of signals with the same number of codec frames. Padded frames would reach
        into the convolutions of the encoder and the codec and make an output depend on its
        batch; the LM masks them, so a batch's pieces of any lengths decode together."""
        mode = self.cfg.mode if mode is None else mode
        decode = self.cfg.decode if decode is None else decode
        self.check_mode(mode)
        groups = self._frame_groups(wavs)
        with torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32):
            feats = [self._encode([wavs[i] for i in rows]) for rows in groups]
            if mode == "direct":
                codes = [self.codec.quantize(f.acoustic)[1] for f in feats]
            else:
                seeds = self._seeds([wavs[i] for rows in groups for i in rows], decode)
                codes = self._generate(feats, decode, seeds)
            out: list[torch.Tensor] = [None] * len(wavs)
            for rows, c in zip(groups, codes):
                for i, audio in zip(rows, self._decode_audio(c, [len(wavs[i]) for i in rows])):
                    out[i] = audio
        return out

    def _frame_groups(self, wavs: Sequence[torch.Tensor]) -> list[list[int]]:
        """Indices of ``wavs`` grouped by their number of codec frames."""
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(wavs):
            groups.setdefault(math.ceil(len(w) / self.frame_length), []).append(i)
        return list(groups.values())

    def _encode(self, wavs: Sequence[torch.Tensor]):
        """Signals [S_i] of one frame count -> the NI-Encoder's output for [b, S] (zero-padded
        to whole frames) and their lengths [b]."""
        frames = math.ceil(len(wavs[0]) / self.frame_length)
        batch = torch.stack([F.pad(w, (0, frames * self.frame_length - len(w))) for w in wavs])
        lengths = torch.tensor([len(w) for w in wavs], device=self.device)
        return self.ni_encoder(batch.to(self.device), lengths)

    @staticmethod
    def _seeds(wavs: Sequence[torch.Tensor], decode: DecodeConfig) -> list[int] | None:
        """One sampling seed per signal (``item_seed``); None when the draws are not seeded."""
        if decode.strategy != "sample" or decode.seed is None:
            return None
        return [item_seed(decode.seed, w) for w in wavs]

    def _generate(self, feats: Sequence, decode: DecodeConfig,
                  seeds: list[int] | None) -> list[torch.Tensor]:
        """The NI-Encoder outputs of each frame group -> its codes [b, Q, T12_g], all groups
        decoded in one ``generate`` call (shorter prefixes right-padded, and masked)."""
        from l3se import decoding

        prefixes = [self.lm.prefix(f.acoustic, f.semantic) for f in feats]
        longest = max(p.shape[1] for p in prefixes)
        prefix = torch.cat([F.pad(p, (0, 0, 0, longest - p.shape[1])) for p in prefixes])
        frame_lengths = torch.cat([f.frame_lengths for f in feats])
        entries = self.codec.entry_vectors() if decode.strategy == "mbr" else None
        codes = decoding.generate(self.lm, prefix, frame_lengths, decode, seeds,
                                  engine=self.decoding, entries=entries)
        groups = codes.split([len(p) for p in prefixes])
        return [c[..., : p.shape[1]] for c, p in zip(groups, prefixes)]

    def _decode_audio(self, codes: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
        """Codes [b, Q, T12] -> each signal's waveform [lengths[i]] (CPU float32)."""
        audio = self.codec.decode(codes).float().cpu()
        return [audio[b, :n] for b, n in enumerate(lengths)]
