"""What gets evaluated: reference items (an eval-set manifest or a folder) and, for each system,
the output file matched to each item.

A manifest is the JSONL written by ``l3se data evalset``: one object per line with ``id``,
``subset``, ``noisy``, ``clean`` (paths relative to the manifest's folder), ``snr_db``,
``reverb``, ``text``. A folder with an ``evalset.jsonl`` is read as that manifest; any other reference folder
holds clean files; a ``.txt`` beside a file is its
transcript. Outputs are matched by relative path (extension ignored), then by file stem when
the stem is unambiguous on both sides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data_sim.audio import AUDIO_EXTENSIONS
from data_sim.sources import SourceError, jsonl_rows

# Systems read from the manifest itself rather than from a folder of outputs.
MANIFEST_SYSTEMS = ("noisy", "clean")
# What `l3se data evalset` names its manifest.
MANIFEST_NAME = "evalset.jsonl"


class InputError(ValueError):
    """A reference or system input that cannot be used (the CLI shows it as one line)."""


@dataclass(frozen=True)
class Item:
    """One reference utterance. ``uid`` is unique in the evaluation (``subset/id``)."""

    uid: str
    id: str
    subset: str
    clean: str | None = None
    noisy: str | None = None
    text: str | None = None
    snr_db: float | None = None
    reverb: bool | None = None
    keys: tuple[str, ...] = ()


@dataclass
class Matching:
    """Per system: uid -> output path, plus what did not pair up."""

    outputs: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # uids with no output
    unmatched: list[str] = field(default_factory=list)  # output files with no reference


def _no_ext(rel: str) -> str:
    return os.path.splitext(rel.replace(os.sep, "/"))[0]


def _stem(rel: str) -> str:
    return os.path.basename(_no_ext(rel))


def load_manifest(path: str | Path) -> list[Item]:
    path = Path(path)
    root = path.parent
    items: list[Item] = []
    seen: set[str] = set()
    try:
        rows = jsonl_rows(path)
    except SourceError as e:
        raise InputError(str(e)) from None
    for n, row in rows:
        if "id" not in row:
            raise InputError(f"{path}:{n}: expected an object with an 'id'")
        subset = str(row.get("subset") or "all")
        uid = f"{subset}/{row['id']}"
        if uid in seen:
            raise InputError(f"{path}:{n}: duplicate id {row['id']!r} in subset {subset!r}")
        seen.add(uid)
        rels = [row[k] for k in ("noisy", "clean") if row.get(k)]
        keys = [_no_ext(r) for r in rels] + [uid, str(row["id"])]
        items.append(Item(
            uid=uid,
            id=str(row["id"]),
            subset=subset,
            clean=str(root / row["clean"]) if row.get("clean") else None,
            noisy=str(root / row["noisy"]) if row.get("noisy") else None,
            text=row.get("text"),
            snr_db=None if row.get("snr_db") is None else float(row["snr_db"]),
            reverb=row.get("reverb"),
            keys=tuple(dict.fromkeys(keys)),
        ))
    if not items:
        raise InputError(f"{path}: manifest has no rows")
    return items


def audio_files(folder: str | Path) -> dict[str, str]:
    """Relative path without extension -> path, for every audio file under ``folder``."""
    folder = Path(folder)
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            found[_no_ext(str(p.relative_to(folder)))] = str(p)
    return found


def load_folder(folder: str | Path) -> list[Item]:
    files = audio_files(folder)
    if not files:
        raise InputError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    items = []
    for rel, path in files.items():
        txt = Path(path).with_suffix(".txt")
        text = txt.read_text(encoding="utf-8").strip() if txt.is_file() else None
        items.append(Item(uid=rel, id=rel, subset="all", clean=path, text=text, keys=(rel,)))
    return items


def load_reference(ref: str | Path) -> list[Item]:
    """Items from a manifest file (JSONL), an eval-set folder holding ``evalset.jsonl``, or a
    folder of clean references."""
    ref = Path(ref)
    if ref.is_dir():
        manifest = ref / MANIFEST_NAME
        return load_manifest(manifest) if manifest.is_file() else load_folder(ref)
    if ref.is_file():
        return load_manifest(ref)
    raise InputError(f"reference not found: {ref}")


def items_from_outputs(systems: dict[str, str | None]) -> list[Item]:
    """Without references: one item per distinct output file name over all systems."""
    keys: dict[str, None] = {}
    for folder in systems.values():
        keys.update(dict.fromkeys(audio_files(folder)))
    return [Item(uid=k, id=k, subset="all", keys=(k,)) for k in keys]


def match_outputs(items: list[Item], folder: str | Path) -> Matching:
    files = audio_files(folder)
    by_stem: dict[str, list[str]] = {}
    for rel in files:
        by_stem.setdefault(_stem(rel), []).append(rel)
    item_stems: dict[str, int] = {}
    for it in items:
        for s in {_stem(k) for k in it.keys}:
            item_stems[s] = item_stems.get(s, 0) + 1
    out = Matching()
    used: set[str] = set()
    for it in items:
        rel = next((k for k in it.keys if k in files and k not in used), None)
        if rel is None:
            # By stem only where neither side is ambiguous.
            stems = [_stem(k) for k in it.keys]
            rel = next(
                (by_stem[s][0] for s in stems
                 if len(by_stem.get(s, ())) == 1 and item_stems.get(s) == 1 and by_stem[s][0] not in used),
                None,
            )
        if rel is None:
            out.missing.append(it.uid)
        else:
            used.add(rel)
            out.outputs[it.uid] = files[rel]
    out.unmatched = [files[r] for r in files if r not in used]
    return out


def match_systems(items: list[Item], systems: dict[str, str | None]) -> dict[str, Matching]:
    """``systems`` maps a name to its output folder; ``noisy``/``clean`` with None use the manifest."""
    result = {}
    for name, folder in systems.items():
        if folder is None:
            if name not in MANIFEST_SYSTEMS:
                raise InputError(f"system {name!r} needs a folder (NAME=DIR)")
            m = Matching()
            for it in items:
                path = getattr(it, name)
                if path:
                    m.outputs[it.uid] = path
                else:
                    m.missing.append(it.uid)
            if not m.outputs:
                raise InputError(f"system {name!r}: the reference has no {name} files (needs a manifest)")
        else:
            if not Path(folder).is_dir():
                raise InputError(f"system {name!r}: folder not found: {folder}")
            m = match_outputs(items, folder)
        result[name] = m
    return result
