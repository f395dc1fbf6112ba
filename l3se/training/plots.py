"""Figures written by the training stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_layer_weights(weights: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Layer-mixture weights over WavLM layer index, one grouped bar series per mixture (the
    paper's Figure 4: acoustic/semantic teacher and student). Writes a PNG; returns its path."""
    import numpy as np

    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    if not weights:
        raise ValueError("no layer weights to plot")
    sizes = {len(w) for w in weights.values()}
    if len(sizes) != 1:
        raise ValueError(f"mixtures differ in their number of layers: {sorted(sizes)}")
    num_layers = sizes.pop()
    layers = np.arange(num_layers)
    width = 0.8 / len(weights)
    fig = Figure(figsize=(max(6.0, 0.35 * num_layers), 3.5))
    ax = fig.subplots()
    for i, (name, w) in enumerate(weights.items()):
        ax.bar(layers + (i - (len(weights) - 1) / 2) * width, list(w), width, label=name)
    ax.set_xticks(layers)
    ax.set_xlabel("WavLM layer")
    ax.set_ylabel("mixture weight")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
