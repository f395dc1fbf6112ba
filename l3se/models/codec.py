"""WavCodec: the acoustic teacher and the speech tokenizer/detokenizer of L3-SE.

    wav [B, S] 16 kHz -> WavLM (frozen) -> L hidden states [B, T50, H]
      -> LayerMixture -> ConvNeXt x6 -> 2 x2 downsamplers   -> latent [B, T12, D]   (12.5 Hz)
      -> RVQ 8 x 1024 (DAC's quantizer)                      -> codes  [B, 8, T12]
      -> 2 x2 upsamplers -> PosNet (ResNet/attention) -> ConvNeXt x12 -> iSTFT head -> [B, S]

S is padded to a multiple of ``frame_length`` (1280 samples) and trimmed back, so
T12 = ceil(S / 1280) and T50 = 4 * T12. The latent before quantization is the acoustic target
that the NI-Encoder is distilled towards.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from l3se.config import ConfigError
from l3se.models.heads import AcousticEncoder, AcousticHeadConfig
from l3se.models.modules import UPSAMPLERS, PosNet
from l3se.models.ssl import LayerMixture, SSLConfig, WavLMBackbone
from l3se.models.weights import CONFIG_FILE, WEIGHTS_FILE, Pretrained


@dataclass
class WavCodecConfig:
    ssl: SSLConfig = field(default_factory=SSLConfig)
    mixture_layer_norm: bool = True
    dim: int = 1024
    intermediate_dim: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 12
    # Each stage halves (encoder) or doubles (decoder) the frame rate: 2 stages, 50 -> 12.5 Hz.
    resample_stages: int = 2
    n_codebooks: int = 8
    codebook_size: int = 1024
    # DAC's factorised codes: nearest-neighbour search in a low-dimensional, l2-normalised
    # projection keeps codebook usage high without k-means init or dead-entry restarts.
    codebook_dim: int = 8
    # Share of a batch trained with a random number of codebooks (DAC's quantizer dropout);
    # 0 because the LM always predicts all 8.
    quantizer_dropout: float = 0.0
    # Dropout inside the decoder's ResNet blocks (WavTokenizer uses 0.1).
    dropout: float = 0.1
    # iSTFT window: 4 x the head's hop, as in WavTokenizer.
    n_fft: int = 1280
    # The decoder's upsampler: "transposed" (strided transposed convs, the paper-scale default)
    # or "interp" (interpolation + conv: no comb shared by every output; see modules.Upsample).
    upsampler: str = "transposed"
    # Samples per frame of the decoder's ConvNeXt stack and iSTFT head; null: WavLM's hop (320,
    # 50 Hz). A power-of-two fraction of it adds x2 upsamplers, so the backbone places
    # waveform detail and phase on a finer grid.
    head_hop: int | None = None

    def encoder_head(self) -> AcousticHeadConfig:
        """The encoder's architecture, which the NI-Encoder's acoustic head copies."""
        return AcousticHeadConfig(
            self.dim, self.intermediate_dim, self.encoder_layers, self.resample_stages
        )


class AcousticDecoder(nn.Module):
    """Quantized latent [B, D, T12] -> waveform [B, T12 * frame_length] (1280 samples a frame)."""

    def __init__(self, cfg: WavCodecConfig, hop: int):
        super().__init__()
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        head_hop = cfg.head_hop or hop
        extra = math.log2(hop / head_hop)
        if head_hop > hop or extra != int(extra):
            raise ConfigError(f"head_hop {head_hop} must be {hop} divided by a power of two")
        if cfg.upsampler not in UPSAMPLERS:
            raise ConfigError(f"unknown upsampler {cfg.upsampler!r}; choose from "
                             f"{', '.join(UPSAMPLERS)}")
        self.upsample = UPSAMPLERS[cfg.upsampler](cfg.dim, cfg.resample_stages + int(extra))
        self.posnet = PosNet(cfg.dim, cfg.dropout)
        self.backbone = VocosBackbone(
            input_channels=cfg.dim,
            dim=cfg.dim,
            intermediate_dim=cfg.intermediate_dim,
            num_layers=cfg.decoder_layers,
        )
        self.head = ISTFTHead(cfg.dim, n_fft=cfg.n_fft, hop_length=head_hop, padding="same")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.backbone(self.posnet(self.upsample(z)))
        # exp() of predicted log-magnitudes and the overlap-add normalisation lose too much in
        # bf16, so the head always runs in fp32.
        with torch.autocast(x.device.type, enabled=False):
            return self.head(x.float())


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, S] reconstruction, trimmed to the input length
    codes: torch.Tensor  # [B, Q, T12]
    latent: torch.Tensor  # [B, T12, D] encoder output before quantization
    # [B, D, T12] what the decoder reads (straight-through: its gradient reaches the encoder)
    quantized: torch.Tensor
    commitment_loss: torch.Tensor  # scalar
    codebook_loss: torch.Tensor  # scalar


class WavCodec(Pretrained, nn.Module):
    """See the module docstring. ``frame_length`` samples per token frame (1280 at 16 kHz)."""

    config_class = WavCodecConfig

    # WavLM's rate, and so that of every l3se model's input and output.
    sample_rate = 16000

    def __init__(self, cfg: WavCodecConfig):
        super().__init__()
        from dac.nn.quantize import ResidualVectorQuantize

        self.cfg = cfg
        self.ssl = WavLMBackbone(cfg.ssl)
        self.mixture = LayerMixture(self.ssl.num_hidden_states, cfg.mixture_layer_norm)
        self.encoder = AcousticEncoder(self.ssl.hidden_size, cfg.encoder_head())
        self.quantizer = ResidualVectorQuantize(
            input_dim=cfg.dim,
            n_codebooks=cfg.n_codebooks,
            codebook_size=cfg.codebook_size,
            codebook_dim=cfg.codebook_dim,
            quantizer_dropout=cfg.quantizer_dropout,
        )
        self.decoder = AcousticDecoder(cfg, hop=self.ssl.hop)
        self.frame_length = self.ssl.hop * 2**cfg.resample_stages
        # While training, an entry that none of this many consecutive frames picked is moved onto
        # a frame of the batch (0: never). A training setting, not architecture: CodecTask sets it.
        self.dead_code_frames = 0
        # Frames quantized since each entry was last picked: training state, which checkpoints
        # keep and exports leave out.
        self.register_buffer(
            "idle_frames", torch.zeros(cfg.n_codebooks, cfg.codebook_size, dtype=torch.long),
            persistent=False,
        )

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.frame_length)

    def encode_latent(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wav [B, S], lengths [B] -> pre-quantization latent [B, ceil(S/1280), D]."""
        padded = F.pad(wav, (0, self.num_frames(wav.shape[-1]) * self.frame_length - wav.shape[-1]))
        return self.encoder(self.mixture(self.ssl(padded, lengths)))

    def quantize(
        self, latent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """latent [B, T12, D] -> (quantized [B, D, T12], codes [B, Q, T12], commitment loss,
        codebook loss)."""
        # Nearest-neighbour search on bf16 values flips codes between near-equal entries.
        with torch.autocast(latent.device.type, enabled=False):
            z, codes, projected, commitment, codebook = self.quantizer(
                latent.float().transpose(1, 2)
            )
        # A frozen quantizer (codec-3's train_parts) stays in eval mode and keeps its entries.
        if self.quantizer.training and self.dead_code_frames > 0:
            self._restart_dead_codes(projected.detach(), codes)
        return z, codes, commitment, codebook

    @torch.no_grad()
    def _restart_dead_codes(self, projected: torch.Tensor, codes: torch.Tensor) -> None:
        """projected [B, Q*d, T] (each stage's input in its own d-dim code space), codes
        [B, Q, T]. Under DDP every rank must restart the same entries with the same vectors, so
        idle counts are reduced with MIN and the new vectors come from rank 0."""
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if distributed else 1
        self.idle_frames += codes.shape[0] * codes.shape[2] * world
        self.idle_frames.scatter_(1, codes.transpose(0, 1).reshape(codes.shape[1], -1), 0)
        if distributed:
            dist.all_reduce(self.idle_frames, op=dist.ReduceOp.MIN)
        dead = self.idle_frames > self.dead_code_frames
        if not bool(dead.any()):
            return
        stages = projected.split(self.quantizer.codebook_dim, dim=1)
        for q, (vq, z) in enumerate(zip(self.quantizer.quantizers, stages)):
            rows = dead[q].nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            frames = z.transpose(1, 2).reshape(-1, z.shape[1])
            pick = torch.randint(len(frames), (len(rows),), device=frames.device)
            new = frames[pick].to(vq.codebook.weight.dtype)
            if distributed:
                dist.broadcast(new, src=0)
            vq.codebook.weight[rows] = new
        self.idle_frames[dead] = 0

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wav [B, S] -> codes [B, Q, ceil(S/1280)] (int64)."""
        return self.quantize(self.encode_latent(wav, lengths))[1]

    @torch.no_grad()
    def entry_vectors(self) -> torch.Tensor:
        """[Q, K, D] float32: what each codebook entry adds to the latent that ``decode`` turns
        into sound (the latent is the sum of one entry's vector per codebook)."""
        quantizers = self.quantizer.quantizers
        with torch.autocast(quantizers[0].codebook.weight.device.type, enabled=False):
            return torch.stack([vq.out_proj(vq.codebook.weight.T[None])[0].T.float()
                                for vq in quantizers])

    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """codes [B, Q, T12] -> wav [B, T12 * 1280], or [B, length] when given."""
        with torch.autocast(codes.device.type, enabled=False):
            z = self.quantizer.from_codes(codes)[0]
        wav = self.decoder(z)
        return wav if length is None else wav[..., :length]

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> CodecOutput:
        latent = self.encode_latent(wav, lengths)
        z, codes, commitment, codebook = self.quantize(latent)
        return CodecOutput(
            audio=self.decoder(z)[..., : wav.shape[-1]],
            codes=codes,
            latent=latent,
            quantized=z,
            commitment_loss=commitment,
            codebook_loss=codebook,
        )

    def portable_config(self) -> WavCodecConfig:
        ssl = dataclasses.replace(self.cfg.ssl, pretrained=None, arch=self.ssl.arch())
        return dataclasses.replace(self.cfg, ssl=ssl)


def copy_wavlm(codec: WavCodec | str | Path, backbone: WavLMBackbone) -> None:
    """Copy a WavCodec's WavLM (the module or a saved ``from_pretrained`` folder) into
    ``backbone``: the semantic teacher and the TTR summariser read the codec's own. Layers the
    backbone does not have (a summariser that stops at the layer it reads) are left out."""
    if isinstance(codec, (str, Path)):
        from safetensors.torch import load_file

        from l3se.config import load_config

        path = Path(codec)
        if not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved WavCodec: {WEIGHTS_FILE} missing")
        ssl_cfg = load_config(WavCodecConfig, path / CONFIG_FILE).ssl
        weights = load_file(str(path / WEIGHTS_FILE))
        state = {k[len("ssl.") :]: v for k, v in weights.items() if k.startswith("ssl.")}
    else:
        ssl_cfg, state = codec.ssl.cfg, codec.ssl.state_dict()
    if ssl_cfg.normalize_input != backbone.cfg.normalize_input:
        raise ValueError(
            "the codec's WavLM sees "
            f"{'normalised' if ssl_cfg.normalize_input else 'raw'} input and this model's "
            "does not: set ssl.normalize_input to match"
        )
    if ssl_cfg.frontend != backbone.cfg.frontend:
        raise ValueError(f"the codec's WavLM has the {ssl_cfg.frontend} front end and this "
                         f"model's the {backbone.cfg.frontend} one: set ssl.frontend to match")
    kept = len(backbone.model.encoder.layers)
    layer = "model.encoder.layers."
    state = {k: v for k, v in state.items()
             if not (k.startswith(layer) and int(k[len(layer):].split(".")[0]) >= kept)}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"the codec's WavLM does not fit this model's ssl.arch: {e}") from None
