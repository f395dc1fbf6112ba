"""The WavLM backbone shared by every l3se encoder, and the learnable mixture over its layers.

At paper scale the backbone is ``microsoft/wavlm-large`` from the Hugging Face hub. Tests and the
offline quickstart build the same ``transformers.WavLMModel`` from config numbers with random
weights (``pretrained: null``), so no download is ever needed to construct a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from l3se.config import ConfigError
from l3se.models.llm import check_transformers

PAPER_WAVLM = "microsoft/wavlm-large"

# microsoft/wavlm-large's architecture, so that the paper model builds without the hub.
WAVLM_LARGE: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "num_buckets": 320,
    "max_bucket_distance": 800,
    "layerdrop": 0.1,
    "mask_time_prob": 0.075,
}

# A few-hundred-kilobyte WavLM with the real 320-sample hop, for tests and CPU recipes. Random and
# frozen, its features are all the codec hears, so its front end follows WavLM-Base rather than
# Large: a per-frame LayerNorm with no conv bias makes each 5-sample frame scale-invariant, and
# the tiny codec could not follow the loudness of speech. Measured on the starter corpus (tiny
# codec-1 with dead-code restarts, 16 test utterances): LayerNorm front end, 32 channels, 2000
# steps: STOI 0.455, envelope correlation 0.60; GroupNorm + bias, 64 channels, 1000 steps: 0.590,
# 0.84.
WAVLM_TINY: dict[str, Any] = {
    **WAVLM_LARGE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "conv_dim": [64] * 7,
    "conv_bias": True,
    "feat_extract_norm": "group",
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}

PRESETS = {"large": WAVLM_LARGE, "tiny": WAVLM_TINY}
FRONTENDS = ("conv", "mel")


@dataclass
class SSLConfig:
    # Hub name or local folder to load weights from; null builds ``arch`` with random weights.
    pretrained: str | None = PAPER_WAVLM
    # "large", "tiny", or WavLMConfig fields (with "preset": a preset's fields changed); only
    # used when ``pretrained`` is null.
    arch: str | dict = "large"
    frozen: bool = True
    # WavLM-Large was pre-trained on utterance-normalised waveforms (its feature extractor's
    # do_normalize); feeding raw levels shifts every layer's statistics.
    normalize_input: bool = True
    # "conv": WavLM's own CNN feature encoder. "mel": a fixed log-mel filterbank with as many
    # bands as the CNN's last layer has channels, for random-init backbones only. A random
    # frozen CNN is the laptop codec's information bottleneck: on the same budget the tiny codec
    # resynthesised clean speech at STOI 0.610 / WER-CV 87% from it and 0.657 / 62% from 64
    # log-mel bands (docs/codec.md).
    frontend: str = "conv"


def build_wavlm_config(arch: str | dict):
    from transformers import WavLMConfig

    if isinstance(arch, dict) and "preset" in arch:
        arch = {**_preset(arch["preset"]), **{k: v for k, v in arch.items() if k != "preset"}}
    elif isinstance(arch, str):
        arch = _preset(arch)
    return WavLMConfig.from_dict(arch)


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown WavLM preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


def valid_frames(lengths: torch.Tensor, hop: int) -> torch.Tensor:
    """Sample lengths [B] -> frames of ``hop`` samples that hold any of the item: a partly filled
    last hop is signal, as a partly filled last codec frame is (T12 = ceil(S / 1280))."""
    return torch.div(lengths + hop - 1, hop, rounding_mode="floor")


class LogMelFrontEnd(nn.Module):
    """Stand-in for WavLM's CNN feature encoder: waveform [B, S'] -> [B, n_mels, T] with one
    frame per ``hop`` samples over a ``window``-sample Hann window (the CNN's receptive field, so
    the frame count equals the CNN's). No parameters: a fixed front end stays shared by every
    model that copies the backbone."""

    def __init__(self, n_mels: int, window: int, hop: int, sample_rate: int):
        super().__init__()
        import torchaudio

        self.window_length, self.hop = window, hop
        # Computed values even inside a meta-device build (`l3se train --check`).
        with torch.device("cpu"):
            self.register_buffer("window", torch.hann_window(window), persistent=False)
            fbank = torchaudio.functional.melscale_fbanks(
                window // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney",
                mel_scale="slaney",
            )
        self.register_buffer("fbank", fbank, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wav.device.type, enabled=False):
            spec = torch.stft(wav.float(), self.window_length, self.hop, window=self.window,
                              center=False, return_complex=True).abs()
            mel = torch.einsum("bft,fm->bmt", spec, self.fbank)
            # Natural-log magnitudes of unit-variance speech span about -12..2; the affine map
            # puts them near unit scale for the random projection that follows.
            return (torch.log(mel + 1e-5) + 5.0) / 4.0


class WavLMBackbone(nn.Module):
    """16 kHz waveform [B, S] -> ``num_hidden_states`` tensors [B, S/320, H] (S a multiple of 320).

    Hidden state 0 is the input of the first transformer layer (the CNN features, projected,
    plus the convolutional position embedding); state i is the output of layer i, the last one
    taken before the encoder's final LayerNorm (WavLM-Large's ``do_stable_layer_norm``).

    A frozen backbone stays in eval mode whatever its parent does: in train mode WavLM applies
    layerdrop and SpecAugment-style time masking, which would corrupt the features it serves.
    """

    sample_rate = 16000

    def __init__(self, cfg: SSLConfig):
        super().__init__()
        from transformers import WavLMModel

        check_transformers()
        self.cfg = cfg
        if cfg.frontend not in FRONTENDS:
            raise ConfigError(f"unknown ssl.frontend {cfg.frontend!r}; choose from {FRONTENDS}")
        if cfg.pretrained and cfg.frontend != "conv":
            raise ConfigError("a pretrained WavLM keeps its own CNN front end: set ssl.frontend "
                             "to conv")
        if cfg.pretrained:
            # Explicitly fp32, whatever the checkpoint stores: the backbone is fine-tuned in
            # distill, and AdamW on bf16 weights loses most updates (see ``build_qwen3``).
            self.model = WavLMModel.from_pretrained(cfg.pretrained, dtype=torch.float32)
        else:
            self.model = WavLMModel(build_wavlm_config(cfg.arch))
        conf = self.model.config
        # A layer skipped by LayerDrop while fine-tuning records no hidden state and would leave
        # every layer mixture a state short.
        conf.layerdrop = 0.0
        self.hop = math.prod(conf.conv_stride)
        receptive_field = 1
        for k, s in zip(reversed(conf.conv_kernel), reversed(conf.conv_stride)):
            receptive_field = (receptive_field - 1) * s + k
        # Padding (receptive field - hop) samples in total makes S samples give exactly S/hop
        # frames, each centred on its hop, so downstream frame rates divide evenly.
        self.pad = receptive_field - self.hop
        if cfg.frontend == "mel":
            self.model.feature_extractor = LogMelFrontEnd(
                conf.conv_dim[-1], receptive_field, self.hop, self.sample_rate
            )
            # A per-frame LayerNorm over log-mel bands would subtract each frame's loudness; the
            # front end's fixed scaling already gives the projection unit-scale input.
            self.model.feature_projection.layer_norm = nn.Identity()
        if cfg.frozen:
            self.model.requires_grad_(False)
        self.train(False)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_hidden_states(self) -> int:
        return self.model.config.num_hidden_layers + 1

    def arch(self) -> dict:
        """Full WavLMConfig as plain data: rebuilds this architecture without the hub."""
        return json.loads(self.model.config.to_json_string(use_diff=False))

    def train(self, mode: bool = True) -> WavLMBackbone:
        return super().train(mode and not self.cfg.frozen)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """wav [B, S] (S % hop == 0), lengths [B] valid samples -> tuple of [B, S/hop, H]."""
        if wav.shape[-1] % self.hop:
            raise ValueError(f"waveform length {wav.shape[-1]} is not a multiple of {self.hop}")
        mask = None
        if lengths is not None:
            valid = torch.arange(wav.shape[-1], device=wav.device)[None] < lengths[:, None]
            if not bool(valid.all()):
                mask = valid
        if self.cfg.normalize_input:
            wav = _normalize(wav, mask)
        left = self.pad // 2
        wav = F.pad(wav, (left, self.pad - left))
        attention_mask = None
        if mask is not None:
            # WavLM keeps the frames whose receptive field ends inside the mask. Counting the
            # symmetric padding and the rest of a partly filled last hop as (silent) signal keeps
            # the ``valid_frames`` the heads mask by.
            positions = torch.arange(wav.shape[-1], device=wav.device)[None]
            end = valid_frames(lengths, self.hop) * self.hop + self.pad
            attention_mask = (positions < end[:, None]).long()
        # Recorded here rather than read from ``output_hidden_states``, whose last entry is the
        # final LayerNorm's output in transformers 4.x to 5.12 and the last layer's in 5.24:
        # trained mixtures and the fixed-layer targets must not change meaning with the version.
        states = []
        layers = self.model.encoder.layers
        hooks = [layers[0].register_forward_pre_hook(lambda _, args: states.append(args[0]))]
        for layer in layers:
            hooks.append(layer.register_forward_hook(lambda _, a, out: states.append(out[0])))
        try:
            # A frozen backbone builds a graph only for an input that needs a gradient: audio
            # judged by a frozen model (codec-3's objectives) must get one back through it.
            grad = not self.cfg.frozen or wav.requires_grad
            with torch.set_grad_enabled(torch.is_grad_enabled() and grad):
                self.model(wav, attention_mask=attention_mask)
        finally:
            for hook in hooks:
                hook.remove()
        return tuple(states)


def _normalize(wav: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples (padding stays zero)."""
    if mask is None:
        mask = torch.ones_like(wav, dtype=torch.bool)
    m = mask.to(wav.dtype)
    n = m.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (wav * m).sum(-1, keepdim=True) / n
    var = ((wav - mean).square() * m).sum(-1, keepdim=True) / n
    return (wav - mean) / torch.sqrt(var + 1e-7) * m


class LayerMixture(nn.Module):
    """Learnable softmax-weighted sum of L hidden states: L x [B, T, H] -> [B, T, H]."""

    def __init__(self, num_states: int, layer_norm: bool = True):
        super().__init__()
        # Per-layer LayerNorm (no affine) before mixing: WavLM's layers differ in scale by orders
        # of magnitude, and without it the softmax weights mostly learn to undo those scales.
        self.layer_norm = layer_norm
        self.logits = nn.Parameter(torch.zeros(num_states))

    @property
    def weights(self) -> torch.Tensor:
        """[L] softmax weights, for logging and plots."""
        return self.logits.detach().softmax(-1)

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(hidden_states) != self.logits.numel():
            raise ValueError(
                f"got {len(hidden_states)} hidden states, mixture has {self.logits.numel()}"
            )
        stacked = torch.stack(list(hidden_states))
        if self.layer_norm:
            stacked = F.layer_norm(stacked, stacked.shape[-1:])
        w = self.logits.softmax(-1).to(stacked.dtype)
        return torch.einsum("l,lbth->bth", w, stacked)
