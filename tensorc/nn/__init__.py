"""Neural-network building blocks written in the DSL: functional ops and modules."""

from . import functional
from .modules import (
    Dropout,
    Embedding,
    FeedForward,
    LayerNorm,
    LearnedPositions,
    Linear,
    Module,
    MultiHeadAttention,
    TransformerBlock,
    count_parameters,
    named_parameters,
    sinusoidal_positions,
    unflatten_parameters,
)

__all__ = [
    "Dropout", "Embedding", "FeedForward", "LayerNorm", "LearnedPositions", "Linear", "Module", "MultiHeadAttention",
    "TransformerBlock", "count_parameters", "functional", "named_parameters", "sinusoidal_positions", "unflatten_parameters",
]
