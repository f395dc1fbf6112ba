"""A JSONL manifest of a folder of one's own recordings (``l3se data manifest``): every audio
file under it with its duration and sample rate from the header, its transcript from a sidecar
``.txt`` or ``.lab`` file of the same stem, and optionally its speaker from the folder it is in.

Files that cannot be read are left out with a warning each; the manifest is written atomically,
with paths relative to its own folder where the recordings lie under it (absolute elsewhere).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from data_sim.audio import AUDIO_EXTENSIONS, AudioError
from data_sim.sources import AudioItem, SourceError, scan_folder, write_jsonl

log = logging.getLogger(__name__)

# Sidecar transcript suffixes, in the order they are looked for (.lab: HTK/MFA's label files).
TRANSCRIPT_SUFFIXES = (".txt", ".lab")


@dataclass
class FolderManifest:
    items: list[AudioItem]
    # 'PATH: reason' for each file left out (audio) or not used (transcript), each also warned
    # about as it happened.
    skipped: list[str] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return sum(item.duration or 0.0 for item in self.items) / 3600

    def summary(self) -> str:
        texts = sum(item.text is not None for item in self.items)
        speakers = len({item.speaker for item in self.items} - {None})
        who = f", {speakers} speakers" if speakers else ""
        length = f"{self.hours:.1f} h" if self.hours >= 1 else f"{self.hours * 60:.1f} min"
        skipped = f"{len(self.skipped)} skipped (warned above)" if self.skipped else "none skipped"
        return f"{len(self.items)} recordings ({length}, {texts} with transcripts{who}); {skipped}"


def scan_recordings(folder: str | Path, speaker_from_folder: bool = False) -> FolderManifest:
    """The recordings under ``folder`` (recursive, sorted). ``speaker_from_folder``: a file's
    speaker is the first folder below ``folder`` on its path (``SPEAKER/x.wav``,
    ``SPEAKER/CHAPTER/x.wav``); files directly in ``folder`` have none. A missing folder, one
    without audio or one whose audio is all unreadable is a ``SourceError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"folder not found: {folder}")
    errors: list[AudioError] = []
    items = scan_folder(folder, skipped=errors)
    skipped = [str(e) for e in errors]
    if not items:
        if errors:
            raise SourceError(f"{folder}: none of its {len(errors)} audio files can be read "
                              f"(first: {errors[0]})")
        raise SourceError(f"{folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    for item in items:
        path = Path(item.path).resolve()
        # Absolute, so that write_jsonl can make it relative to wherever the manifest goes.
        item.path = str(path)
        item.text = _transcript(path, skipped)
        parts = Path(item.id).parts
        if speaker_from_folder and len(parts) > 1:
            item.speaker = parts[0]
    return FolderManifest(items, skipped)


def write_manifest(folder: str | Path, out: str | Path,
                   speaker_from_folder: bool = False) -> FolderManifest:
    """Scan ``folder`` (``scan_recordings``) and write its manifest to ``out`` atomically."""
    manifest = scan_recordings(folder, speaker_from_folder)
    write_jsonl(manifest.items, out)
    return manifest


def _transcript(audio: Path, skipped: list[str]) -> str | None:
    """The first sidecar transcript's text on one line; None when there is none or it is empty.
    One that cannot be read as UTF-8 is not used: a warning, and a line in ``skipped``."""
    for suffix in TRANSCRIPT_SUFFIXES:
        sidecar = audio.with_suffix(suffix)
        if not sidecar.is_file():
            continue
        try:
            text = " ".join(sidecar.read_text(encoding="utf-8").split())
        except (UnicodeDecodeError, OSError) as e:
            skipped.append(f"{sidecar}: transcript not used ({type(e).__name__})")
            log.warning("skipping %s", skipped[-1])
            return None
        return text or None
    return None
