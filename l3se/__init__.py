"""l3se: LM-based speech enhancement with noise-invariant acoustic-semantic distillation (L3-SE)."""

__version__ = "0.1.0"
