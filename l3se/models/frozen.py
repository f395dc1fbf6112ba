"""The one owner of "this part is frozen".

A frozen module trains no parameter and never leaves eval mode, whatever its parents' ``train()``
asks: dropout, layerdrop or SpecAugment in a judge or a teacher would only add noise, and a
module that updates itself in train mode (WavCodec's dead-code restart) would drift from the
weights that later stages read. Checkpoints leave frozen parts out and fingerprint them
(``l3se.training.checkpoint``), so a frozen part must stay exactly as it was built.
"""

from __future__ import annotations

import types

from torch import nn

_FLAG = "_l3se_frozen"


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place (and return it): no gradients, eval mode from now on."""
    module.requires_grad_(False)
    # An instance attribute, so that every caller of train() (a parent's recursion, a Task, a
    # test calling it directly) meets it; deepcopy rebinds it to the copy.
    module.train = types.MethodType(_stay_in_eval, module)
    setattr(module, _FLAG, True)
    return module.train(False)


def is_frozen(module: nn.Module) -> bool:
    return getattr(module, _FLAG, False)
