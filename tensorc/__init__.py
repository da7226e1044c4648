"""tensorc: a compiler for tensor programs written in Python.

>>> import numpy as np, tensorc as tc
>>> @tc.jit
... def f(x, w):
...     return tc.tanh(x @ w).sum()
>>> round(float(f(np.ones((2, 3), np.float32), np.full((3, 4), 0.1, np.float32))), 4)
2.3305
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import ir  # noqa: F401  (registers the primitive ops)
from .config import config
from .errors import CompileError, DTypeError, ShapeError, TensorcError, TracerError
from .frontend.control import scan
from .frontend.jit import Compiled, Jitted, Lowered, jit
from .frontend.ops import (
    abs,
    add,
    arange,
    argmax,
    argmin,
    as_tensor,
    astype,
    broadcast_shapes,
    broadcast_to,
    cast,
    cat,
    chunk,
    clamp,
    clip,
    concat,
    cos,
    div,
    eq,
    erf,
    exp,
    expand,
    eye,
    flatten,
    flip,
    floor,
    floordiv,
    full,
    full_like,
    gather,
    ge,
    gt,
    iota,
    le,
    log,
    log_softmax,
    logical_and,
    logical_not,
    logical_or,
    logsumexp,
    lt,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mod,
    mul,
    ne,
    neg,
    one_hot,
    ones,
    ones_like,
    pad,
    permute,
    pow,
    reciprocal,
    relu,
    reshape,
    rsqrt,
    scatter_add,
    sigmoid,
    sign,
    sin,
    softmax,
    split,
    sqrt,
    squeeze,
    stack,
    sub,
    sum,
    take,
    tanh,
    tensor,
    transpose,
    tril,
    triu,
    unsqueeze,
    var,
    where,
    zeros,
    zeros_like,
)
from .frontend.pytree import flatten as tree_flatten
from .frontend.pytree import register_pytree_node, tree_map
from .frontend.pytree import unflatten as tree_unflatten
from .frontend.tensor import Tensor
from .ir.dtypes import (
    DType,
    bfloat16,
    float16,
    float32,
    float64,
    int32,
    int64,
    promote,
    uint32,
)
from .ir.dtypes import bool_ as bool  # noqa: A001  (tc.bool, as torch.bool)
from .ir.node import Graph, Node

__all__ = [
    "CompileError", "Compiled", "DType", "DTypeError", "Graph", "Jitted", "Lowered", "Node", "ShapeError",
    "Tensor", "TensorcError", "TracerError", "__version__", "abs", "add", "arange", "argmax", "argmin", "as_tensor",
    "astype", "bfloat16", "bool", "broadcast_shapes", "broadcast_to", "cast", "cat", "chunk", "clamp", "clip",
    "concat", "config", "cos", "div", "eq", "erf", "exp", "expand", "eye", "flatten", "flip", "float16", "float32",
    "float64", "floor", "floordiv", "full", "full_like", "gather", "ge", "gt", "int32", "int64", "iota", "jit", "le",
    "log", "log_softmax", "logical_and", "logical_not", "logical_or", "logsumexp", "lt", "matmul", "max", "maximum",
    "mean", "min", "minimum", "mod", "mul", "ne", "neg", "nn", "optim", "one_hot", "ones", "ones_like", "pad", "permute",
    "pow", "promote", "random", "sampling", "reciprocal", "register_pytree_node", "relu", "reshape", "rsqrt", "scan",
    "scatter_add", "sigmoid", "sign", "sin", "softmax", "split", "sqrt", "squeeze", "stack", "sub", "sum", "take",
    "tanh", "tensor", "transpose", "tree_flatten", "tree_map", "tree_unflatten", "tril", "triu", "uint32",
    "unsqueeze", "var", "where", "zeros", "zeros_like",
]

from . import nn, optim, random, sampling  # noqa: E402
from .autodiff import GradcheckError, grad, gradcheck, gradgradcheck, value_and_grad, vjp  # noqa: E402
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402

__all__ += ["CheckpointError", "load_checkpoint", "save_checkpoint", "GradcheckError", "grad", "gradcheck", "gradgradcheck", "value_and_grad", "vjp"]
