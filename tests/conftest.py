"""Test-session settings: the verifier runs after every pass (and on every traced
graph), so a pass that breaks an IR invariant fails the test that exercised it."""

import os
import sys

import tensorc as tc

tc.config.set(verify=1)
sys.path.insert(0, os.path.dirname(__file__))  # shared strategies and helpers import by name
