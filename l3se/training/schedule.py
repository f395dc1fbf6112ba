"""Learning-rate schedule of every l3se stage."""

from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, minimum: float, warmup: int, total: int) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to ``minimum``
    at ``total`` steps (and ``minimum`` after). ``step`` counts optimizer steps from 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return minimum
    progress = (step - warmup) / max(1, total - warmup)
    return minimum + 0.5 * (peak - minimum) * (1.0 + math.cos(math.pi * progress))
