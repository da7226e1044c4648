"""What runs a compiled program: the on-disk compile cache (:mod:`tensorc.runtime.cache`)."""
