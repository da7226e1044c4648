"""The buffer plan: which values get memory, for how long, and where.

Buffers are the graph's inputs (caller-owned), its constants, and every value
a kernel materializes. A kernel-written buffer lives from its kernel to the
last kernel that reads it (graph outputs to the end); the planner walks the
launch order and puts each new buffer into the best-fitting *slot* of the
arena whose previous occupant is dead (growing the largest free slot if none
fits, else opening a new slot), so the arena is smaller than the sum of its
buffers. ``peak_bytes`` is what the plan allocates: caller-owned inputs and
constants plus the arena.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.node import Node
from .dataflow import nbytes
from .kernel import Kernel

ROLES = ("parameter", "gradient", "optimizer_state", "activation", "temporary", "input", "output", "constant")


@dataclass
class Buffer:
    """One allocation: the value of ``node``, its ``role``, its lifetime in kernel launches."""

    name: str
    node: Node
    role: str
    producer: int | None  # kernel index; None for inputs and constants
    last_use: int         # last kernel that reads it; len(kernels) for graph outputs
    readers: list[int] = field(default_factory=list)
    slot: int | None = None  # arena slot (None: caller-owned or constant)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.node.shape)

    @property
    def dtype(self) -> object:
        return self.node.dtype

    @property
    def nbytes(self) -> int:
        return nbytes(self.node)

    @property
    def external(self) -> bool:
        return self.producer is None

    def __repr__(self) -> str:
        return f"<Buffer {self.name} {self.node.type_str} {self.role} {self.nbytes} B>"


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    slot_bytes: list[int]
    resident_bytes: int    # inputs, parameters, optimizer state and constants: live throughout
    peak_live_bytes: int   # most bytes live at once (a lower bound for any plan)

    @property
    def arena_bytes(self) -> int:
        return sum(self.slot_bytes)

    @property
    def peak_bytes(self) -> int:
        """Memory the plan allocates: resident buffers plus the arena."""
        return self.resident_bytes + self.arena_bytes

    @property
    def total_bytes(self) -> int:
        """The sum of every buffer, as if none were reused."""
        return sum(b.nbytes for b in self.buffers)

    def bytes_by_role(self) -> dict[str, int]:
        out = {role: 0 for role in ROLES}
        for b in self.buffers:
            out[b.role] = out.get(b.role, 0) + b.nbytes
        return out


def plan_memory(kernels: list[Kernel], buffers: list[Buffer]) -> MemoryPlan:
    """Assign arena slots to kernel-written buffers, reusing dead ones (greedy best fit)."""
    by_producer: dict[int, list[Buffer]] = {}
    dying: dict[int, list[Buffer]] = {}
    for b in buffers:
        if b.producer is not None:
            by_producer.setdefault(b.producer, []).append(b)
            dying.setdefault(b.last_use, []).append(b)
    resident = sum(b.nbytes for b in buffers if b.external)
    slot_bytes: list[int] = []
    free: list[int] = []
    live = peak = resident
    for k in range(len(kernels)):
        for b in sorted(by_producer.get(k, []), key=lambda b: -b.nbytes):
            fitting = [s for s in free if slot_bytes[s] >= b.nbytes]
            if fitting:
                slot = min(fitting, key=lambda s: slot_bytes[s])
            elif free:
                slot = max(free, key=lambda s: slot_bytes[s])
                slot_bytes[slot] = b.nbytes
            else:
                slot = len(slot_bytes)
                slot_bytes.append(b.nbytes)
            if slot in free:
                free.remove(slot)
            b.slot = slot
            live += b.nbytes
        peak = max(peak, live)
        for b in dying.get(k, []):
            if b.slot is not None:
                free.append(b.slot)
                live -= b.nbytes
    return MemoryPlan(buffers, slot_bytes, resident, peak)
