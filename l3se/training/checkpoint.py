"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``step_XXXXXXXX`` holding
    model.safetensors      what trains: every parameter and buffer outside the frozen parts,
                           buffers that exports leave out (codebook restart counters) included
    optimizer.safetensors  optimizer state tensors, keyed "<optimizer>.<param index>.<name>"
    rng_<rank>.json        each process's Python / NumPy / torch RNG states
    config.yaml            the recipe config, when the run has one: it names the frozen parts'
                           sources (upstream model directories, hub names)
    state.json             step, optimizer hyper-parameters, the engine's state, a fingerprint of
                           each frozen part and the size of every other file; written last.
A frozen part is a largest submodule with parameters, none of them trainable (the upstream
stages' models, a frozen WavLM or LLM). Resuming rebuilds the task from its config, which loads
them from their sources again, so a checkpoint holds their SHA-256 instead of gigabytes of
copies, and resuming refuses parts that have changed since.

A checkpoint is written under a temporary name and renamed into place, so a crash mid-write
never leaves a folder that looks complete; file sizes are checked on load so a truncated copy is
reported as such instead of failing deep inside a loader.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from l3se.config import save_config
from l3se.models.frozen import is_frozen
from l3se.models.weights import storable

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.yaml"
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


def frozen_parts(module: nn.Module) -> list[str]:
    """Names of the largest submodules that are frozen (``l3se.models.frozen``) or have
    parameters and train none of them."""
    parts = []

    def visit(prefix: str, parent: nn.Module) -> None:
        for name, child in parent.named_children():
            params = list(child.parameters())
            if is_frozen(child) or (params and not any(p.requires_grad for p in params)):
                parts.append(prefix + name)
            else:
                visit(f"{prefix}{name}.", child)

    visit("", module)
    return parts


def split_tensors(
    task: nn.Module,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """(trained tensors, frozen part -> its tensors), each shared tensor once. Buffers count
    whether persistent or not: a training counter that exports leave out must survive a resume."""
    parts = frozen_parts(task)
    trained: dict[str, torch.Tensor] = {}
    frozen: dict[str, dict[str, torch.Tensor]] = {p: {} for p in parts}
    for name, t in [*task.named_parameters(), *task.named_buffers()]:
        part = next((p for p in parts if name.startswith(f"{p}.")), None)
        if part is None:
            trained[name] = t
        else:
            frozen[part][name[len(part) + 1 :]] = t
    return trained, frozen


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return h.hexdigest()


def frozen_fingerprints(task: nn.Module) -> dict[str, str]:
    """Frozen part -> its fingerprint."""
    return {part: fingerprint(t) for part, t in split_tensors(task)[1].items()}


def write_checkpoint(
    folder: Path, task: nn.Module, optimizers: dict[str, torch.optim.Optimizer], state: dict,
    config: Any = None, fingerprints: dict[str, str] | None = None,
) -> None:
    """Rank 0's part: weights, optimizers, ``config`` (a recipe config), then ``state.json``
    with the manifest. ``fingerprints``: ``frozen_fingerprints(task)`` when already known."""
    from safetensors.torch import save_file

    trained, _ = split_tensors(task)
    save_file(storable(trained), str(folder / MODEL_FILE))
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
    if config is not None:
        save_config(config, folder / CONFIG_FILE)
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    payload = {
        "state": state,
        "frozen": fingerprints if fingerprints is not None else frozen_fingerprints(task),
        "optimizers": optim_meta,
        "files": files,
    }
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
    fingerprints: dict[str, str] | None = None,
) -> dict:
    """Check the frozen parts (``fingerprints``: ``frozen_fingerprints(task)`` when already
    known), load weights, optimizer states and this rank's RNG; return the engine's state."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = _read_manifest(folder)
    trained, _ = split_tensors(task)
    if fingerprints is None:
        fingerprints = frozen_fingerprints(task)
    _check_frozen(folder, meta.get("frozen", {}), fingerprints)
    try:
        weights = load_file(str(folder / MODEL_FILE), device=str(device))
        # Optimizers move state to their parameters' device themselves, except Adam's step
        # counters, which must stay on the CPU.
        opt_tensors = load_file(str(folder / OPTIMIZER_FILE), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {folder} is damaged ({e}); delete it") from None
    _load_trained(folder, trained, weights)
    for name, opt in optimizers.items():
        if name not in meta["optimizers"]:
            raise CheckpointError(f"checkpoint {folder} has no state for optimizer {name!r}")
        try:
            opt.load_state_dict(_optimizer_state(name, meta["optimizers"][name], opt_tensors))
        except ValueError as e:
            raise CheckpointError(
                f"checkpoint {folder}: its {name} optimizer state does not fit this one ({e}; "
                "was the config changed?)"
            ) from None
    rng = folder / f"rng_{rank}.json"
    if rng.is_file():
        _restore_rng(json.loads(rng.read_text()))
    return meta["state"]


def _check_frozen(folder: Path, recorded: dict[str, str], frozen: dict[str, str]) -> None:
    if set(recorded) != set(frozen):
        raise CheckpointError(
            f"checkpoint {folder} was written with frozen parts {sorted(recorded)}, but this task "
            f"freezes {sorted(frozen)} (was the config changed, or an older l3se used?)"
        )
    for part, digest in frozen.items():
        if digest != recorded[part]:
            names = folder / CONFIG_FILE
            hint = f"; {names} names the models it was trained with" if names.is_file() else ""
            raise CheckpointError(
                f"checkpoint {folder} was trained with another frozen {part!r} than the one this "
                f"config builds: an upstream model or hub weights changed since, or the config "
                f"names other ones{hint}. Checkpoints do not copy frozen parts: restore those "
                "models, or train into a new output_dir"
            )


def _load_trained(
    folder: Path, trained: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> None:
    problems = [f"missing {k}" for k in trained if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in trained]
    problems += [
        f"{k} has shape {tuple(v.shape)}, the model {tuple(trained[k].shape)}"
        for k, v in weights.items()
        if k in trained and v.shape != trained[k].shape
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {folder} does not fit this model (was the config changed?): "
            f"{'; '.join(problems[:3])}"
        )
    with torch.no_grad():
        for k, v in weights.items():
            trained[k].copy_(v)


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
