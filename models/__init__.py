"""The models of language modelling, written in tensorc's DSL (public API only)."""
