"""Lists of audio files with their metadata, from the layouts speech corpora come in.

Every reader returns ``list[AudioItem]``, except an index folder (``data_sim.index``), which
``load_source`` opens as a ``CorpusIndex``: a memory-mapped sequence of the same items. Durations
come from file headers (or the manifest), never from decoding whole files. Files whose header
cannot be read are skipped with one warning each; a manifest that names missing files fails up
front, listing them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from data_sim.audio import AUDIO_EXTENSIONS, AudioError, audio_info, location
from data_sim.files import atomic_write

log = logging.getLogger(__name__)


@dataclass
class AudioItem:
    id: str
    path: str
    duration: float | None = None  # seconds
    sample_rate: int | None = None
    text: str | None = None
    speaker: str | None = None
    kind: str | None = None  # e.g. noise type, or "rir"
    # [(word, start s, end s), ...] in time order, from a forced aligner or an estimate.
    words: list[tuple[str, float, float]] | None = None
    # Spoken language as the corpus labels it (Emilia: "en", "zh", ...), when known.
    language: str | None = None
    # Quality score (DNSMOS OVRL, 1..5) as the corpus gives it, when known.
    dnsmos: float | None = None
    # When set, the audio is these bytes of ``path`` (an uncompressed tar member's data).
    byte_offset: int | None = None
    byte_size: int | None = None

    @property
    def byte_range(self) -> tuple[int, int] | None:
        """(offset, size) for ``data_sim.audio``'s readers, or None for a whole file."""
        return None if self.byte_offset is None else (self.byte_offset, self.byte_size)

    @property
    def location(self) -> str:
        """Names this audio uniquely (a shard member: ``PATH@OFFSET``), in errors and caches."""
        return location(self.path, self.byte_range)


class SourceError(ValueError):
    """A source that cannot be used as a whole (missing files, unknown layout)."""


def load_source(spec: str | Path, skipped: list[AudioError] | None = None
                ) -> Sequence[AudioItem]:
    """Read an index folder (``data_sim.index``), a folder (LibriSpeech tree if it holds
    ``*.trans.txt``), a ``.jsonl`` manifest or a Kaldi ``wav.scp``. Files whose header cannot be
    read are skipped, each with a warning and, when given, added to ``skipped``."""
    from data_sim.index import CorpusIndex, is_index

    path = Path(spec)
    if not path.exists():
        raise SourceError(f"data source not found: {path}")
    if is_index(path):
        return CorpusIndex(path)
    if path.is_dir():
        if next(path.rglob("*.trans.txt"), None) is not None:
            return read_librispeech(path, skipped)
        return scan_folder(path, skipped=skipped)
    if path.suffix == ".jsonl":
        return read_jsonl(path, skipped)
    if path.suffix == ".scp":
        return read_wav_scp(path, skipped)
    raise SourceError(f"{path}: expected a folder, an index folder, a .jsonl manifest or a "
                      "wav.scp")


def scan_folder(root: str | Path, exclude: tuple[str, ...] = (),
                skipped: list[AudioError] | None = None) -> list[AudioItem]:
    """All audio files under ``root`` (recursive, sorted); ids are relative paths without suffix.
    Files whose name contains any of ``exclude`` are left out; those whose header cannot be read
    are skipped, each with a warning and, when given, added to ``skipped``."""
    root = Path(root)
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS
        and p.is_file()
        and not any(x in p.name for x in exclude)
    )
    items = []
    for p in paths:
        rel = p.relative_to(root).with_suffix("").as_posix()
        item = _with_header(AudioItem(id=rel, path=str(p)), skipped)
        if item is not None:
            items.append(item)
    return items


def read_rir_folder(root: str | Path, skipped: list[AudioError] | None = None
                    ) -> list[AudioItem]:
    """RIRs from a folder, OpenSLR26/28 layouts included: their isotropic noise recordings
    (``*noise*``) live next to the RIRs and are not impulse responses."""
    items = scan_folder(root, exclude=("noise",), skipped=skipped)
    for item in items:
        item.kind = "rir"
    return items


def load_rirs(source: str | Path | None, p_reverb: float) -> Sequence[AudioItem]:
    """The RIRs a config names (a folder, an index or a manifest); none when reverberation is
    off."""
    from data_sim.index import is_index

    if not source or p_reverb <= 0:
        return []
    if Path(source).is_dir() and not is_index(source):
        return read_rir_folder(source)
    return load_source(source)

def read_librispeech(root: str | Path, skipped: list[AudioError] | None = None
                     ) -> list[AudioItem]:
    """``SPK/CHAPTER/SPK-CHAPTER-UTT.flac`` with transcripts from ``SPK-CHAPTER.trans.txt``."""
    root = Path(root)
    items = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt_id, _, text = line.strip().partition(" ")
            if not utt_id:
                continue
            audio = next(
                (trans.parent / f"{utt_id}{ext}" for ext in AUDIO_EXTENSIONS
                 if (trans.parent / f"{utt_id}{ext}").exists()),
                None,
            )
            if audio is None:
                log.warning("skipping %s: no audio file next to %s", utt_id, trans)
                continue
            item = _with_header(
                AudioItem(id=utt_id, path=str(audio), text=text, speaker=utt_id.split("-")[0]),
                skipped,
            )
            if item is not None:
                items.append(item)
    return items


def read_jsonl(manifest: str | Path, skipped: list[AudioError] | None = None
               ) -> list[AudioItem]:
    """One JSON object a line: ``path`` (absolute or relative to the manifest), optional ``id``,
    ``duration``, ``text``, ``speaker``, ``kind``, ``words`` (``[[word, start, end], ...]`` in
    seconds), ``language``, ``dnsmos``. Missing files fail up front, all listed."""
    manifest = Path(manifest)
    rows = []
    for n, row in jsonl_rows(manifest):
        if "path" not in row:
            raise SourceError(f"{manifest}:{n}: each line needs a 'path'")
        rows.append(row)
    base = manifest.parent
    fields = set(AudioItem.__dataclass_fields__)
    items = []
    for row in rows:
        p = Path(row["path"])
        kwargs = {k: v for k, v in row.items() if k in fields}
        kwargs["path"] = str(p if p.is_absolute() else base / p)
        kwargs.setdefault("id", Path(row["path"]).with_suffix("").as_posix())
        if kwargs.get("words") is not None:
            kwargs["words"] = _word_times(manifest, row["words"])
        items.append(AudioItem(**kwargs))
    _require_existing(manifest, items)
    return _fill_durations(items, skipped)


def _word_times(manifest: Path, words) -> list[tuple[str, float, float]]:
    try:
        return [(str(w), float(start), float(end)) for w, start, end in words]
    except (TypeError, ValueError):
        raise SourceError(f"{manifest}: 'words' must be [[word, start, end], ...], got "
                          f"{str(words)[:80]}") from None


def jsonl_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line; a line that is not a JSON object is a
    ``SourceError`` naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise SourceError(f"{path}:{n}: expected a JSON object")
            rows.append((n, row))
    return rows


def read_wav_scp(scp: str | Path, skipped: list[AudioError] | None = None
                 ) -> list[AudioItem]:
    """Kaldi ``wav.scp`` (``UTT PATH`` lines), with ``text`` and ``utt2spk`` beside it if present.
    Missing files fail up front, all listed."""
    scp = Path(scp)
    items = parse_wav_scp(scp)
    _require_existing(scp, items)
    return _fill_durations(items, skipped)


def parse_wav_scp(scp: str | Path) -> list[AudioItem]:
    """The entries of a ``wav.scp`` as they are written, files not checked. Piped commands
    (``... |``) are not supported: they name no file."""
    scp = Path(scp)
    texts = _kaldi_table(scp.parent / "text")
    speakers = _kaldi_table(scp.parent / "utt2spk")
    items = []
    for n, line in enumerate(scp.read_text().splitlines(), 1):
        utt, _, path = line.strip().partition(" ")
        if not utt:
            continue
        path = path.strip()
        if not path or path.endswith("|"):
            raise SourceError(
                f"{scp}:{n}: expected 'UTT PATH' (piped commands are not supported; list files)"
            )
        p = Path(path)
        items.append(
            AudioItem(
                id=utt,
                path=str(p if p.is_absolute() else scp.parent / p),
                text=texts.get(utt),
                speaker=speakers.get(utt),
            )
        )
    return items


def write_jsonl(items: list[AudioItem], manifest: str | Path) -> None:
    """Write items as a manifest with paths relative to its folder where possible."""
    manifest = Path(manifest)
    lines = []
    for item in items:
        row = {k: v for k, v in asdict(item).items() if v is not None}
        p = Path(item.path)
        if p.is_absolute() and p.is_relative_to(manifest.parent.resolve()):
            row["path"] = p.relative_to(manifest.parent.resolve()).as_posix()
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write(manifest, "\n".join(lines) + "\n")


def _require_existing(where: Path, items: list[AudioItem]) -> None:
    missing = [it.path for it in items if not Path(it.path).is_file()]
    if missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise SourceError(f"{where} names {len(missing)} missing file(s):\n  {shown}{more}")


def _fill_durations(items: list[AudioItem], skipped: list[AudioError] | None = None
                    ) -> list[AudioItem]:
    out = []
    for item in items:
        if item.duration is not None:
            out.append(item)
        else:
            filled = _with_header(item, skipped)
            if filled is not None:
                out.append(filled)
    return out


def _with_header(item: AudioItem, skipped: list[AudioError] | None = None) -> AudioItem | None:
    try:
        info = audio_info(item.path, item.byte_range)
    except AudioError as e:
        log.warning("skipping %s", e)
        if skipped is not None:
            skipped.append(e)
        return None
    item.duration = info.duration
    item.sample_rate = info.sample_rate
    return item


def _kaldi_table(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    table = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            table[key] = value.strip()
    return table
