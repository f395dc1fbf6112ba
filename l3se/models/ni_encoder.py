"""NI-Encoder: the noise-invariant acoustic-semantic encoder of L3-SE (paper section 3.2).

    noisy wav [B, S] 16 kHz -> WavLM (fine-tuned) -> L hidden states [B, T50, H]
      -> acoustic mixture -> ConvNeXt x6 -> 2 x2 downsamplers -> acoustic [B, T12, Da] (12.5 Hz)
      -> semantic mixture -> Transformer x6                   -> semantic [B, T50, Ds] (50 Hz)

The same form as its teachers: the acoustic branch is WavCodec's encoder, the semantic branch
WavS2T's, so ``from_teachers`` copies both as they are. S is padded to a multiple of
``frame_length`` (1280 samples) like ``WavCodec.encode_latent``: T12 = ceil(S / 1280), T50 = 4 T12.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from l3se.models.codec import WavCodec
from l3se.models.heads import (
    AcousticEncoder,
    AcousticHeadConfig,
    SemanticEncoder,
    SemanticHeadConfig,
    frame_padding_mask,
)
from l3se.models.ssl import LayerMixture, SSLConfig, WavLMBackbone
from l3se.models.weights import Pretrained

if TYPE_CHECKING:
    from l3se.models.s2t import WavS2T



@dataclass
class NIEncoderConfig:
    # The backbone is fine-tuned during distillation (paper section 4.4), hence not frozen.
    ssl: SSLConfig = field(default_factory=lambda: SSLConfig(frozen=False))
    mixture_layer_norm: bool = True
    acoustic: AcousticHeadConfig = field(default_factory=AcousticHeadConfig)
    # None: acoustic-only encoder (Table 3 (a)/(b)).
    semantic: SemanticHeadConfig | None = field(default_factory=SemanticHeadConfig)
    # WavLM's SpecAugment time masking while training (WavLM-Large's own config turns it on, at
    # 7.5% of frames). Off: distillation regresses every frame onto its clean target, and a
    # masked frame's target is speech the student was not shown; the paper does not mention it.
    spec_augment: bool = False


@dataclass
class NIOutput:
    acoustic: torch.Tensor  # [B, T12, Da]
    semantic: torch.Tensor | None  # [B, T50, Ds]
    frame_lengths: torch.Tensor  # [B] valid T12 frames per item


class NIEncoder(Pretrained, nn.Module):
    """See the module docstring."""

    config_class = NIEncoderConfig

    # Distilled towards the codec's latent, frame for frame.
    sample_rate = WavCodec.sample_rate

    def __init__(self, cfg: NIEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.ssl = WavLMBackbone(cfg.ssl)
        self.ssl.model.config.apply_spec_augment = cfg.spec_augment
        num_states, hidden = self.ssl.num_hidden_states, self.ssl.hidden_size
        self.acoustic_mixture = LayerMixture(num_states, cfg.mixture_layer_norm)
        self.acoustic = AcousticEncoder(hidden, cfg.acoustic)
        self.semantic_mixture = None
        self.semantic = None
        if cfg.semantic is not None:
            self.semantic_mixture = LayerMixture(num_states, cfg.mixture_layer_norm)
            self.semantic = SemanticEncoder(hidden, cfg.semantic)
        self.frame_length = self.ssl.hop * 2**cfg.acoustic.resample_stages

    @property
    def acoustic_dim(self) -> int:
        return self.cfg.acoustic.dim

    @property
    def semantic_dim(self) -> int | None:
        return None if self.cfg.semantic is None else self.cfg.semantic.dim

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.frame_length)

    def hidden_states(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """wav [B, S], lengths [B] (default: all S) -> L x [B, T50, H], T50 = 4 ceil(S / 1280)."""
        target = self.num_frames(wav.shape[-1]) * self.frame_length
        return self.ssl(F.pad(wav, (0, target - wav.shape[-1])), _lengths(wav, lengths))

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> NIOutput:
        """wav [B, S], lengths [B] valid samples (default: all S) -> NIOutput. The padding to
        whole 1280-sample frames is no signal: masked in WavLM and the semantic head, as in
        ``WavS2T.encode`` (``WavCodec.encode_latent`` agrees whenever lengths are given)."""
        lengths = _lengths(wav, lengths)
        states = self.hidden_states(wav, lengths)
        acoustic = self.acoustic(self.acoustic_mixture(states))
        semantic = None
        if self.semantic is not None:
            mask = frame_padding_mask(lengths, states[0].shape[1], self.ssl.hop)
            semantic = self.semantic(self.semantic_mixture(states), mask)
        frame_lengths = torch.div(lengths + self.frame_length - 1, self.frame_length,
                                  rounding_mode="floor")
        return NIOutput(acoustic, semantic, frame_lengths)

    def mixture_weights(self) -> dict[str, list[float]]:
        """Branch name -> [L] layer-mixture weights."""
        out = {"acoustic": self.acoustic_mixture.weights.tolist()}
        if self.semantic_mixture is not None:
            out["semantic"] = self.semantic_mixture.weights.tolist()
        return out

    @classmethod
    def from_teachers(
        cls,
        codec: WavCodec,
        s2t: WavS2T | None = None,
        semantic: bool = True,
        cfg: NIEncoderConfig | None = None,
    ) -> NIEncoder:
        """A student initialised from its teachers: the teachers' shared WavLM, WavCodec's
        mixture + encoder as the acoustic branch, WavS2T's mixture + encoder as the semantic one.

        ``cfg`` None copies the teachers' architecture. A given ``cfg`` must keep the teachers'
        WavLM; a head whose architecture differs from its teacher's keeps its random init.
        """
        if semantic and s2t is None and (cfg is None or cfg.semantic is None):
            raise ValueError("a semantic branch needs the WavS2T teacher (or a cfg.semantic)")
        if s2t is not None:
            _check_same_backbone(codec, s2t)
        if cfg is None:
            ssl = SSLConfig(
                pretrained=None,
                arch=codec.ssl.arch(),
                frozen=False,
                normalize_input=codec.cfg.ssl.normalize_input,
                frontend=codec.cfg.ssl.frontend,
            )
            cfg = NIEncoderConfig(
                ssl=ssl,
                mixture_layer_norm=codec.cfg.mixture_layer_norm,
                acoustic=codec.cfg.encoder_head(),
                semantic=s2t.cfg.encoder if semantic else None,
            )
        if s2t is not None and semantic and s2t.cfg.mixture_layer_norm != cfg.mixture_layer_norm:
            raise ValueError(
                "WavCodec and WavS2T differ in mixture_layer_norm; one NI-Encoder cannot copy both"
            )
        model = cls(cfg)
        if not _same_arch(model.ssl, codec.ssl):
            raise ValueError("the student's WavLM architecture differs from the teachers'")
        model.ssl.model.load_state_dict(codec.ssl.model.state_dict())
        if cfg.acoustic == codec.cfg.encoder_head():
            model.acoustic_mixture.load_state_dict(codec.mixture.state_dict())
            model.acoustic.load_state_dict(codec.encoder.state_dict())
        if model.semantic is not None and s2t is not None and cfg.semantic == s2t.cfg.encoder:
            model.semantic_mixture.load_state_dict(s2t.mixture.state_dict())
            model.semantic.load_state_dict(s2t.encoder.state_dict())
        return model

    def portable_config(self) -> NIEncoderConfig:
        ssl = dataclasses.replace(self.cfg.ssl, pretrained=None, arch=self.ssl.arch())
        return dataclasses.replace(self.cfg, ssl=ssl)


def _lengths(wav: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is not None:
        return lengths
    return torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)


# WavLMConfig fields that record where a model came from or how it was trained, not what it is.
_NOT_ARCH = (
    "_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version", "layerdrop",
    "apply_spec_augment",
)


def _same_arch(a: WavLMBackbone, b: WavLMBackbone) -> bool:
    def strip(arch: dict) -> dict:
        return {k: v for k, v in arch.items() if k not in _NOT_ARCH}

    return a.cfg.frontend == b.cfg.frontend and strip(a.arch()) == strip(b.arch())


def _check_same_backbone(codec: WavCodec, s2t: WavS2T) -> None:
    """The paper's teachers share one pretrained WavLM; distilling from two different ones
    would give the student no single backbone to start from."""
    problem = None
    if not _same_arch(codec.ssl, s2t.ssl):
        problem = "different architectures"
    elif codec.cfg.ssl.normalize_input != s2t.cfg.ssl.normalize_input:
        problem = "different input normalisation"
    else:
        theirs = s2t.ssl.model.state_dict()
        for name, tensor in codec.ssl.model.state_dict().items():
            # Meta tensors (a launch check's models) hold no values to compare.
            if not tensor.is_meta and not torch.equal(tensor, theirs[name]):
                problem = f"different weights ({name})"
                break
    if problem is not None:
        raise ValueError(
            f"WavCodec and WavS2T were built on different WavLM backbones ({problem}); train "
            "both teachers from the same pretrained WavLM (same ssl config and seed)"
        )
