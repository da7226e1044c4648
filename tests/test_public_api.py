"""The public API resolves: every exported name exists."""

import tensorc as tc


def test_every_exported_name_exists():
    missing = [name for name in tc.__all__ if not hasattr(tc, name)]
    assert missing == []
    assert len(set(tc.__all__)) == len(tc.__all__)
