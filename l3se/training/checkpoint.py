"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``step_XXXXXXXX`` holding
    model.safetensors      every tensor of the task (frozen parts too)
    optimizer.safetensors  optimizer state tensors, keyed "<optimizer>.<param index>.<name>"
    rng_<rank>.json        each process's Python / NumPy / torch RNG states
    state.json             step, optimizer hyper-parameters, the engine's state and the size of
                           every other file; written last.
It is written under a temporary name and renamed into place, so a crash mid-write never leaves
a folder that looks complete; file sizes are checked on load so a truncated copy is reported
as such instead of failing deep inside a loader.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from l3se.models.weights import state_tensors

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_NAME = re.compile(r"^step_(\d{8})$")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says which and why."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def temporary_dir(root: Path, step: int) -> Path:
    tmp = root / f"{checkpoint_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(folder: Path, rank: int) -> None:
    state = {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }
    (folder / f"rng_{rank}.json").write_text(json.dumps(state))


def write_checkpoint(
    folder: Path, task: nn.Module, optimizers: dict[str, torch.optim.Optimizer], state: dict
) -> None:
    """Rank 0's part: weights, optimizers, then ``state.json`` with the manifest."""
    from safetensors.torch import save_file

    save_file(state_tensors(task), str(folder / MODEL_FILE))
    tensors: dict[str, torch.Tensor] = {}
    optim_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars = {}
        for pid, pstate in sd["state"].items():
            for key, value in pstate.items():
                if torch.is_tensor(value):
                    tensors[f"{name}.{pid}.{key}"] = value.detach().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    payload = {"state": state, "optimizers": optim_meta, "files": files}
    (folder / STATE_FILE).write_text(json.dumps(payload, indent=1))


def finalize(tmp: Path, root: Path, step: int, keep: int) -> Path:
    """Rename the finished folder into place and drop all but the newest ``keep``."""
    final = root / checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(
    folder: Path,
    task: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    rank: int,
    device: torch.device,
) -> dict:
    """Load weights, optimizer states and this rank's RNG; return the engine's state."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = _read_manifest(folder)
    try:
        weights = load_file(str(folder / MODEL_FILE), device=str(device))
        # Optimizers move state to their parameters' device themselves, except Adam's step
        # counters, which must stay on the CPU.
        opt_tensors = load_file(str(folder / OPTIMIZER_FILE), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {folder} is damaged ({e}); delete it") from None
    try:
        task.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {folder} does not fit this model (was the config changed?): "
            f"{str(e).splitlines()[0]}"
        ) from None
    for name, opt in optimizers.items():
        if name not in meta["optimizers"]:
            raise CheckpointError(f"checkpoint {folder} has no state for optimizer {name!r}")
        opt.load_state_dict(_optimizer_state(name, meta["optimizers"][name], opt_tensors))
    rng = folder / f"rng_{rank}.json"
    if rng.is_file():
        _restore_rng(json.loads(rng.read_text()))
    return meta["state"]


def _read_manifest(folder: Path) -> dict:
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete: {STATE_FILE} is missing")
    try:
        meta = json.loads(path.read_text())
        files = meta["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {folder} is damaged: {STATE_FILE} is unreadable") from None
    for name, size in files.items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {name} is missing")
        if f.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {folder} is truncated or damaged: {name} has {f.stat().st_size} "
                f"bytes, expected {size}; delete this checkpoint to resume from an earlier one"
            )
    return meta


def _optimizer_state(name: str, meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[field] = value
    for key, value in meta["scalars"].items():
        pid, field = key.split(".", 1)
        state.setdefault(int(pid), {})[field] = value
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
