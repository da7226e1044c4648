"""Test-session settings: the verifier runs after every pass (and on every traced
graph), so a pass that breaks an IR invariant fails the test that exercised it.
Compiled code is cached in a directory of this session (each pytest-xdist
worker has its own), never in the user's cache. Parallel kernels use one
OpenMP thread (``OMP_NUM_THREADS=1``: the suite runs one worker per core; the
tests of parallel code set their own thread counts)."""

import os
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
_cache = tempfile.mkdtemp(prefix="tensorc-test-cache-")
os.environ["TENSORC_CACHE_DIR"] = _cache  # for subprocesses

import tensorc as tc  # noqa: E402

tc.config.set(verify=1, cache_dir=_cache)
sys.path.insert(0, os.path.dirname(__file__))  # shared strategies and helpers import by name
