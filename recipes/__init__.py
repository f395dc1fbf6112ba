"""Staged training recipes: thin scripts over l3se's building blocks, one per stage.
Their YAML configs live in ``recipes/configs/<stage>/<scale>.yaml``."""
