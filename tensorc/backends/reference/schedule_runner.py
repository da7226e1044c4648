"""Run a schedule kernel by kernel with the reference semantics.

Each kernel evaluates its own nodes (and the views it reads through) with
:func:`~tensorc.backends.reference.interpreter.evaluate_node`; between
kernels only the buffers of the memory plan survive, and each is dropped
after its last reader. A kernel that reads a value no earlier kernel stored
is a scheduler bug, and raises. So a schedule is tested for correctness
before any native backend runs it.

>>> import numpy as np, tensorc as tc
>>> lowered = tc.jit(lambda x: tc.softmax(x, -1)).lower(np.zeros((2, 3), np.float32))
>>> [float(v) for v in run_schedule(lowered.schedule, [np.zeros((2, 3), np.float32)])[0][0]]
[0.3333333432674408, 0.3333333432674408, 0.3333333432674408]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import TensorcError
from .interpreter import bind_inputs, evaluate_node

if TYPE_CHECKING:
    from ...schedule import Schedule
    from ...schedule.kernel import Kernel


def run_kernel(schedule: Schedule, kernel: Kernel, stored: dict[int, Any]) -> None:
    """Evaluate one kernel with the reference semantics, reading and filling ``stored``."""
    local: dict[int, Any] = {}
    for node in kernel.exec_nodes:
        operands = []
        for inp in node.inputs:
            if id(inp) in local:
                operands.append(local[id(inp)])
            elif id(inp) in stored:
                operands.append(stored[id(inp)])
            elif inp.op == "const":  # an immediate of index math
                operands.append(inp.attrs["value"].array)
            else:
                raise TensorcError(f"kernel {kernel.index} ({kernel.pattern}) reads {schedule.name(inp)}, which is neither "
                                   "computed in it nor stored by an earlier kernel (scheduler bug)")
        local[id(node)] = evaluate_node(node, operands)
    for out in kernel.outputs:
        stored[id(out)] = local[id(out)]


def run_schedule(schedule: Schedule, args: Sequence[Any],
                 kernel_runner: Callable[[Schedule, Kernel, dict[int, Any]], None] = run_kernel) -> list[np.ndarray]:
    """Run ``schedule`` on ``args`` (one array per graph input); return the graph's outputs.

    ``kernel_runner`` runs one kernel (a native backend passes its own, falling back to :func:`run_kernel`)."""
    graph = schedule.graph
    stored = bind_inputs(graph, args)
    for b in schedule.buffers:
        if b.node.op == "const":
            stored[id(b.node)] = b.node.attrs["value"].array
    dying: dict[int, list[int]] = {}
    for b in schedule.buffers:
        if b.producer is not None and b.last_use < len(schedule.kernels):
            dying.setdefault(b.last_use, []).append(id(b.node))
    for kernel in schedule.kernels:
        kernel_runner(schedule, kernel, stored)
        for key in dying.get(kernel.index, ()):
            stored.pop(key, None)
    return collect_outputs(schedule, stored)


def collect_outputs(schedule: Schedule, stored: dict[int, Any]) -> list[np.ndarray]:
    """The graph's outputs from the stored buffers, through the free views between (C-contiguous arrays)."""
    results = []
    for out in schedule.graph.outputs:
        src, chain = schedule.output_source(out)
        if id(src) not in stored:
            raise TensorcError(f"output {schedule.name(out)} was not stored by any kernel (scheduler bug)")
        value = stored[id(src)]
        for node, _ in chain:
            value = evaluate_node(node, [value])
        results.append(np.asarray(value, order="C"))  # not ascontiguousarray: it turns a 0-d result into shape (1,)
    return results


class ScheduledExecutable:
    """A schedule bound to the reference backend: call it with numpy arrays."""

    target = "reference"

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.graph = schedule.graph

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        return run_schedule(self.schedule, args)
