import json

import numpy as np
import pytest

from data_sim.audio import load_audio
from data_sim.evalset import EvalSetConfig, EvalSubset, build_evalset, evalset_view
from data_sim.mixer import MixConfig, active_power
from data_sim.sources import load_source, read_rir_folder


def test_evalset_jsonl_matches_files(corpus, tmp_path):
    cfg = EvalSetConfig(
        n_utterances=4, min_seconds=3.0, max_seconds=5.0,
        subsets=[EvalSubset("general", (-5, 20)), EvalSubset("low", (-10, 0))],
        mix=MixConfig(segment_seconds=None),
    )
    out = tmp_path / "eval"
    rows = build_evalset(out, load_source(corpus / "speech"), load_source(corpus / "noise"),
                         read_rir_folder(corpus / "rir"), cfg)
    lines = [json.loads(x) for x in (out / "evalset.jsonl").read_text().splitlines()]
    assert lines == rows and len(rows) == 8
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.wav")}
    assert written == {r["noisy"] for r in rows} | {r["clean"] for r in rows}
    for r in rows:
        assert 3.0 <= r["duration"] <= 5.0 and r["text"].startswith("HELLO WORLD")
        lo, hi = (-5, 20) if r["subset"] == "general" else (-10, 0)
        assert lo <= r["snr_db"] <= hi
        noisy, clean = load_audio(out / r["noisy"]), load_audio(out / r["clean"])
        assert len(noisy) == len(clean) == round(r["duration"] * 16000)
        if not r["reverb"]:  # clean is the speech component: the residual is the noise
            snr = 10 * np.log10(active_power(clean) / active_power(noisy - clean))
            assert snr == pytest.approx(r["snr_db"], abs=0.6)  # 16-bit rounding included
    # Same utterances in both regimes, and a fixed seed gives the same set again.
    assert {r["id"] for r in rows if r["subset"] == "low"} == {
        r["id"] for r in rows if r["subset"] == "general"}
    again = build_evalset(tmp_path / "again", load_source(corpus / "speech"),
                          load_source(corpus / "noise"), read_rir_folder(corpus / "rir"), cfg)
    assert again == rows


def test_a_view_keeps_some_speakers_and_the_relative_paths(tmp_path):
    evalset = tmp_path / "eval"
    rows = []
    for subset in ("general", "low"):
        for speaker in (1, 2):
            rel = f"{subset}/noisy/{speaker}-0.wav"
            (evalset / rel).parent.mkdir(parents=True, exist_ok=True)
            (evalset / rel).write_bytes(f"{subset}{speaker}".encode())
            rows.append({"id": f"{speaker}-0", "subset": subset, "noisy": rel, "speaker": speaker})
    (evalset / "evalset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    view = evalset_view(evalset, tmp_path / "view", {"2"})
    kept = [json.loads(x) for x in (view / "evalset.jsonl").read_text().splitlines()]
    assert kept == [r for r in rows if r["speaker"] == 2]
    # Paths stay relative (outputs are matched by them) and reach the eval set's files.
    assert [(view / r["noisy"]).read_bytes() for r in kept] == [b"general2", b"low2"]
    assert evalset_view(evalset, tmp_path / "view", {"1"}) == view  # rewritten in place
    assert len((view / "evalset.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="no utterance"):
        evalset_view(evalset, tmp_path / "none", {"3"})
