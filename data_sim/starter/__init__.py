"""Offline starter corpus for ``l3se data starter``: TTS speech, procedural noise, simulated RIRs."""

from data_sim.starter.corpus import StarterConfig, build_starter_corpus

__all__ = ["StarterConfig", "build_starter_corpus"]
