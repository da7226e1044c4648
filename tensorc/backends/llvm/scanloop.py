"""A ``scan`` whose steps run in one native loop (:mod:`.kernels.scanloop`'s ``scan_run``).

The Python loop of the reference ``scan`` costs, per step, a call of the body's executable:
binding its inputs, allocating its outputs, and about 5 us per kernel. For an LSTM (a 0.2 ms
step of three kernels) that was a tenth of the time. :class:`NativeScan` runs the loop natively
when every kernel of the body is a loop nest or a GEMM (with or without an elementwise epilogue):

- Once per call it binds every value of the body to memory. The carries live in buffers of
  their own, the scanned inputs and the stacked outputs are read and written in place (step 0's
  slice, moved to step ``s`` by a PATCH record), intermediates live in the body executable's
  arena (or in buffers of this call). Every loop nest gets its table of buffer addresses and
  every GEMM its argument block, once.
- It writes the step as records for ``scan_run``: the PATCHes of the slots that point into a
  stacked array, the calls in schedule order, then the COPYs that hand each new carry to the
  next step (and an output that is both a carry and a stacked value to its second place).

A body it cannot bind (a library op other than matmul, a kernel that runs with the reference
semantics, an output that is a view or an input) runs the Python loop, as does a scan of
length 0.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np

from ...ir.node import Node
from ...kernel.lower import LoweredKernel
from ..reference.interpreter import evaluate_node
from . import library
from .kernels import matmul as gemm_op
from .kernels.scanloop import CALL1, CALL2, COPY, PATCH, WORDS

if TYPE_CHECKING:
    from .executable import LLVMExecutable


class _Unbindable(Exception):
    """This call's layout cannot run natively (the Python loop runs it)."""


class NativeScan:
    """Run scan ``node`` over its compiled ``body``: ``NativeScan.build(node, body)``, None when the body does not qualify."""

    def __init__(self, node: Node, body: LLVMExecutable) -> None:
        self.node, self.body = node, body
        self.schedule = body.schedule
        self.calls = 0  # native runs, for tests and the profile

    @classmethod
    def build(cls, node: Node, body: LLVMExecutable) -> NativeScan | None:
        """A native runner for ``node``, or None when some kernel of the body cannot be called natively."""
        sched = body.schedule
        for k in sched.kernels:
            if k.index in body.native:
                continue
            step = body.library.get(k.index)
            if step is None or step.node.op != "matmul" or step.body is not None or step.node.dtype.np not in gemm_op._NAMES:
                return None
            views = [n for n in k.exec_nodes if n is not step.node and n is not step.result]
            if step.bias is None:
                views = k.exec_nodes[:k.exec_nodes.index(step.node)]
            if any(n.op not in _VIEWS for n in views):
                return None
            if step.epilogue is None and step.bias is None and any(o is not step.node for o in k.outputs):
                return None
        graph, n_carry = body.graph, node.attrs["n_carry"]
        for i, out in enumerate(graph.outputs):
            src, chain = sched.output_source(out)
            if chain or src.op == "const" or (src.op == "param" and src is not out):
                return None
            if i < n_carry and out.op == "param" and out is not graph.inputs[node.attrs["n_consts"] + i]:
                return None  # carries trading places would need copies in a careful order
        return cls(node, body)

    # ------------------------------------------------------------------ one call

    def __call__(self, args: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...] | None:
        """The scan's outputs (final carries, then stacked ys), or None to have the Python loop run it."""
        a = self.node.attrs
        length, n_consts, n_carry = a["length"], a["n_consts"], a["n_carry"]
        if length == 0:
            return None
        try:
            prog, keep, carries, ys = self._bind(args, length, n_consts, n_carry)
        except _Unbindable:
            return None
        run = library.function("scan_run")
        run(prog.ctypes.data, len(prog) // WORDS, length, int(bool(a["reverse"])))
        del keep
        self.calls += 1
        return tuple(carries) + tuple(ys)

    def _bind(self, args: tuple[np.ndarray, ...], length: int, n_consts: int,
              n_carry: int) -> tuple[np.ndarray, list[Any], list[np.ndarray], list[np.ndarray]]:
        body, graph = self.body, self.body.graph
        consts, init, xs = args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]
        carries = [np.array(c, dtype=p.dtype.np, order="C") for c, p in zip(init, graph.inputs[n_consts:])]
        xs = [np.ascontiguousarray(x) for x in xs]
        ys = [np.empty((length, *o.shape), o.dtype.np) for o in graph.outputs[n_carry:]]
        # stacked arrays: (step-0 address, bytes of one step, stride between steps)
        stacked = [(x.ctypes.data, x[0, ...].nbytes, x.strides[0]) for x in xs if x[0, ...].nbytes]
        stacked += [(y.ctypes.data, y[0, ...].nbytes, y.strides[0]) for y in ys if y[0, ...].nbytes]
        ys0 = [y[0, ...] for y in ys]  # step 0 of each output: where a kernel writes it

        def step_stride(addr: int) -> int | None:
            for start, size, stride in stacked:
                if start <= addr < start + size:
                    return stride
            return None

        stored: dict[int, np.ndarray] = {}
        for p, v in zip(graph.inputs, [*consts, *carries, *(x[0, ...] for x in xs)]):
            stored[id(p)] = v
        # values that stay the same through the call (a copy of one made now stays valid)
        invariant = {id(p) for p in graph.inputs[:n_consts]}
        # where each output is written: its first stacked place, else a buffer of its own
        # (an input returned as it is, a saved carry say, is copied from where it is)
        target: dict[int, np.ndarray] = {id(p): stored[id(p)] for p in graph.inputs}
        for j, o in enumerate(graph.outputs[n_carry:]):
            target.setdefault(id(o), ys0[j])
        for o in graph.outputs[:n_carry]:
            if id(o) not in target:
                target[id(o)] = np.empty(o.shape, o.dtype.np)
        written: set[int] = {id(p) for p in graph.inputs}
        keep: list[Any] = []
        patches: list[list[int]] = []
        calls: list[list[int]] = []

        def slot(addr_of_slot: int, value: int) -> None:
            stride = step_stride(value)
            if stride is not None:
                patches.append([PATCH, addr_of_slot, value, stride, 0, 0])

        def value_of(node: Node) -> np.ndarray:
            arr = stored.get(id(node))
            if arr is None:
                arr = body._resident.get(id(node))
            if arr is None and node.op == "const":
                arr = node.attrs["value"].array
            if arr is None:
                raise _Unbindable(f"{node.op} is read before any kernel writes it")
            if node.op == "const":
                invariant.add(id(node))
            return arr

        def view_of(node: Node, src: np.ndarray) -> np.ndarray:
            """A view op of the body on ``src``, evaluated now: it must not copy a value that changes."""
            view = stored[id(node)] = evaluate_node(node, [src])
            if id(node.inputs[0]) in invariant:
                invariant.add(id(node))
            elif not np.may_share_memory(view, src):
                raise _Unbindable(f"{node.op} copies a value that changes every step")
            return view

        def bias_view(node: Node) -> np.ndarray:
            """A bias operand, through the views between it and a value of the body."""
            if id(node) in stored or id(node) in body._resident or node.op in ("const", "param"):
                return value_of(node)
            return view_of(node, bias_view(node.inputs[0]))

        def array_for(node: Node, output: bool) -> np.ndarray:
            if output and id(node) in target and node.op != "param":
                written.add(id(node))
                stored[id(node)] = target[id(node)]
            arr = stored.get(id(node))
            if arr is None:
                arr = body._resident.get(id(node))
            if arr is None:
                if not output:
                    raise _Unbindable(f"{node.op} is read before any kernel writes it")
                arr = np.empty(node.shape, node.dtype.np)
            if not arr.flags.c_contiguous:
                if output or id(node) not in invariant:
                    raise _Unbindable("a loop nest reads a strided view of a value that changes every step")
                arr = np.ascontiguousarray(arr)
            stored[id(node)] = arr
            return arr

        def loop_nest(lk: LoweredKernel) -> None:
            fn = body.module.address(lk.func.name)  # type: ignore[union-attr]
            table = (ctypes.c_void_p * max(len(lk.args), 1))()
            outputs = {id(o) for o in lk.outputs} | {id(o) for o in lk.scratch}
            for i, node in enumerate(lk.args):
                arr = array_for(node, id(node) in outputs)
                keep.append(arr)
                table[i] = arr.ctypes.data
                slot(ctypes.addressof(table) + 8 * i, arr.ctypes.data)
            keep.append(table)
            calls.append([CALL1, fn, ctypes.addressof(table), 0, 0, 0])

        for k in self.schedule.kernels:
            if k.index in body.native:
                loop_nest(body.native[k.index])
                continue
            step = body.library[k.index]
            for node in k.exec_nodes:
                if node is step.node:
                    break
                view_of(node, value_of(node.inputs[0]))
            lhs, rhs = (value_of(i) for i in step.node.inputs)
            out = array_for(step.node if step.result is None else step.result, True).reshape(step.node.shape)
            # a weight is the same at every step: packed once here, not by every step's GEMM
            packed = gemm_op.prepack(rhs) if id(step.node.inputs[1]) in invariant and rhs.ndim == 2 else None
            row = None
            if step.bias is not None:
                bias = bias_view(step.bias)
                if bias.ndim == 0 or any(s for s in bias.strides[:-1]) or bias.strides[-1] != bias.itemsize:
                    raise _Unbindable("a bias that is not one contiguous row, broadcast")
                row = bias[(0,) * (bias.ndim - 1)]  # a view: re-pointed per step if it is a step's value
            keep += [packed, row]
            bound = gemm_op.bound_calls(lhs, rhs, out, packed, row)
            if bound is None:
                raise _Unbindable("a GEMM layout without a native call")
            for fn, block, shape in bound:
                keep += [block, shape]
                for w in (0, 1, 2, 10):
                    slot(ctypes.addressof(block) + 8 * w, block[w])
                calls.append([CALL2, fn, ctypes.addressof(block), ctypes.addressof(shape), 0, 0])
            if step.epilogue is not None and step.bias is None:
                loop_nest(step.epilogue)
        if not all(id(o) in written for o in graph.outputs):
            raise _Unbindable("an output no kernel writes")

        copies: list[list[int]] = []

        def place(arr: np.ndarray) -> tuple[int, int]:
            return arr.ctypes.data, step_stride(arr.ctypes.data) or 0

        for j, o in enumerate(graph.outputs[n_carry:]):  # first: they may read this step's carries
            if target[id(o)] is not ys0[j] and ys0[j].nbytes:
                src, s_stride = place(target[id(o)])
                copies.append([COPY, ys[j].ctypes.data, ys[j].strides[0], src, s_stride, ys0[j].nbytes])
        for i, o in enumerate(graph.outputs[:n_carry]):
            if target[id(o)] is not carries[i] and carries[i].nbytes:
                src, s_stride = place(target[id(o)])
                copies.append([COPY, carries[i].ctypes.data, 0, src, s_stride, carries[i].nbytes])
        prog = np.array(patches + calls + copies, dtype=np.int64).reshape(-1)
        keep += [xs, stored, target]
        return prog, keep, carries, ys


_VIEWS = frozenset({"reshape", "permute", "expand", "slice", "squeeze", "unsqueeze"})
