"""Training data: the default corpus (Python's own docs, no download), splits and batches of windows.

>>> import numpy as np
>>> import tensorc.data as data
>>> tokens = np.frombuffer(data.default_corpus().encode(), np.uint8)   # bytes as tokens
>>> train, val = data.train_val_split(tokens)
>>> x, y = data.random_windows(train, batch_size=2, block_size=16, rng=0)
>>> x.shape, y.shape
((2, 16), (2, 16))
"""

from __future__ import annotations

from .corpus import DataError, default_corpus, load_text
from .windows import random_windows, sequential_windows, train_val_split

__all__ = ["DataError", "default_corpus", "load_text", "random_windows", "sequential_windows", "train_val_split"]
