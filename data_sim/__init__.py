"""On-the-fly simulation of noisy, reverberant training mixtures, and offline starter material."""
