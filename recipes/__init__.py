"""Staged training recipes: thin scripts over l3se's building blocks, one per stage, listed in
``recipes/stages.py``. Their YAML configs live in ``recipes/configs/<stage>/<scale>.yaml``."""
