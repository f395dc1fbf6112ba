import pytest

from l3se.evaluation.asr import PocketSphinxASR
from l3se.evaluation.text import corpus_wer, word_errors


@pytest.fixture(scope="module")
def asr():
    return PocketSphinxASR()


def test_pocketsphinx_transcribes_clear_speech(asr, speech):
    counts = [word_errors(text, asr.transcribe(wav)) for text, wav in speech]
    # Measured 0% on these sentences with pocketsphinx 5.1.1; harder ones reach 20-70%.
    assert corpus_wer(counts) < 15.0


def test_identical_signal_has_zero_dwer(asr, speech):
    wav = speech[2][1]
    assert word_errors(asr.transcribe(wav), asr.transcribe(wav.copy())).errors == 0
