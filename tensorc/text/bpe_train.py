"""Learning BPE merges: the most frequent adjacent pair, merged, repeatedly.

The corpus is first reduced to its distinct pre-tokenized chunks with their
counts, so a merge only visits the chunks that contain its pair (an inverted
index from pair to chunk), and pair counts are updated by the difference a merge
makes rather than recounted. A heap with lazy deletion finds the next pair.
Training a 2,000-token vocabulary on Python's own docs (about 0.47 MB) takes
about a second.

Ties between equally frequent pairs go to the smaller pair of ids (compared as
tuples), so the merges depend only on the corpus, never on dict or set order.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping

N_BYTES = 256
"""Ids ``0..255`` are the single bytes; merge ``k`` makes token ``256 + k``."""


def merge_pair(ids: list[int], a: int, b: int, new: int) -> list[int]:
    """``ids`` with every occurrence of the adjacent pair ``(a, b)`` replaced by ``new``, left to right.

    >>> merge_pair([97, 97, 97, 98], 97, 97, 256)
    [256, 97, 98]
    """
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(chunk_counts: Mapping[bytes, int], n_merges: int, *, min_frequency: int = 2,
                 verbose: bool = False) -> list[tuple[int, int]]:
    """Up to ``n_merges`` BPE merges learned from byte chunks and how often each occurs.

    Stops early when no pair occurs at least ``min_frequency`` times (counting
    every adjacent position, so ``b"aaa"`` holds the pair ``(97, 97)`` twice).

    >>> learn_merges({b"aaabdaaabac": 1}, 10)   # aa -> 256, ab -> 257, (256, 257) -> 258
    [(97, 97), (97, 98), (256, 257)]
    """
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    words: list[list[int]] = [list(chunk) for chunk in chunk_counts]
    freqs: list[int] = list(chunk_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks that held it (may be stale)
    for wi, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            where[pair].add(wi)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    names: list[bytes] = [bytes([i]) for i in range(N_BYTES)]  # only for verbose output

    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:  # a stale heap entry: the pair's count changed since it was pushed
            continue
        if count < min_frequency:
            break
        new = N_BYTES + len(merges)
        merges.append(pair)
        a, b = pair
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop(pair):
            word = words[wi]
            merged = merge_pair(word, a, b, new)
            if len(merged) == len(word):  # the index was stale: an earlier merge took the pair away
                continue
            freq = freqs[wi]
            for p in zip(word, word[1:]):
                delta[p] -= freq
            for p in zip(merged, merged[1:]):
                delta[p] += freq
                where[p].add(wi)
            words[wi] = merged
        for p, d in delta.items():
            if d:
                c = pair_counts[p] + d
                if c > 0:
                    pair_counts[p] = c
                    heapq.heappush(heap, (-c, p))
                else:
                    del pair_counts[p]
        if verbose:
            names.append(names[a] + names[b])
            if len(merges) % 100 == 0 or len(merges) == n_merges or len(merges) <= 10:
                print(f"merge {len(merges)}/{n_merges}: {names[a]!r} + {names[b]!r} -> {new} {names[new]!r} (count {count})")
    return merges
