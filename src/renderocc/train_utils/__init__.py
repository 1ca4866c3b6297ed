"""Pieces of the training loop kept out of train.py: schedule, EMA, deterministic data order, RNG, DDP."""
