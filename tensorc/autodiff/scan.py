"""Backpropagation through time: the VJP of ``scan`` as one reverse scan.

The forward scan stacks what its backward needs (see ``_scan_with_residuals``
in :mod:`tensorc.autodiff.transform`): each step's incoming carry, and the
result of each matmul and transcendental of the body that depends on the
carry or the scanned inputs (:func:`saved_values`), so the backward step
reads them instead of recomputing them (in an LSTM: the ``h @ W_hh`` of every
step and the five sigmoids and tanhs of its cell; recomputing those took the
backward's cell kernel 57 us per step, reading them 5 us).

The reverse scan computes, per step, the cotangents of the carries and of the
scanned inputs. Gradients of the scan's constants (the weights) are taken out
of the loop: the body's loop-invariant values that feed the per-step
computation (the *frontier*: a weight, a broadcast bias) get their cotangents
summed over the steps, and the invariant part of the body is differentiated
once, after the loop. A frontier value used only as the right operand of 2-D
matmuls (``h @ W``) does not even sum per step: the reverse scan stacks both
factors, ``h_t`` and the product's cotangent ``g_t``, and one GEMM over all
steps gives ``Σ_t h_tᵀ g_t``: a (T·B)-row GEMM instead of T small ones and
a T-step accumulator carry.
"""

from __future__ import annotations

from typing import Any

from ..frontend import ops as F
from ..frontend.tensor import Tensor
from ..ir.node import Graph, Node


def varying(body: Graph, n_consts: int) -> set[int]:
    """Ids of the body's nodes that depend on the carry or the scanned inputs (all else is loop-invariant)."""
    var = {id(p) for p in body.inputs[n_consts:]}
    for n in body.nodes:
        if n.op != "param" and any(id(i) in var for i in n.inputs):
            var.add(id(n))
    return var


#: Per-step values the forward scan saves for the backward instead of letting it recompute them:
#: products (a GEMM per step) and transcendentals (an LSTM cell's five sigmoids and tanhs, whose
#: derivatives read them back).
SAVED_OPS = frozenset({"matmul", "exp", "tanh", "sigmoid", "log", "erf"})


def saved_values(body: Graph, n_consts: int) -> list[Node]:
    """The body's float values of ``SAVED_OPS`` that vary per step: the forward scan stacks them for the backward."""
    var = varying(body, n_consts)
    return [n for n in body.nodes if n.op in SAVED_OPS and id(n) in var and n.dtype.is_float]


def _frontier(body: Graph, n_consts: int, var: set[int], seeded: list[Node]) -> list[Node]:
    """Loop-invariant float values that depend on a float constant and reach the per-step work:
    consumed by a varying node, or a seeded body output themselves."""
    from_consts = {id(p) for p in body.inputs[:n_consts] if p.dtype.is_float}
    for n in body.nodes:
        if n.op != "param" and id(n) not in var and any(id(i) in from_consts for i in n.inputs):
            from_consts.add(id(n))
    wanted = {id(n) for n in seeded}
    for n in body.nodes:
        if id(n) in var:
            wanted.update(id(i) for i in n.inputs)
    return [n for n in body.nodes if id(n) in wanted and id(n) in from_consts and not n.is_tuple and n.dtype.is_float]


def _gemm_consumers(body: Graph, v: Node, var: set[int], seeded: list[Node]) -> list[Node] | None:
    """The varying matmuls ``L @ v`` (2-D) if they are ``v``'s only varying consumers, else None."""
    if len(v.shape) != 2 or any(n is v for n in seeded):
        return None
    users = [n for n in body.nodes if id(n) in var and any(i is v for i in n.inputs)]
    ok = all(n.op == "matmul" and n.inputs[1] is v and n.inputs[0] is not v and len(n.inputs[0].shape) == 2 for n in users)
    return users if users and ok else None


def scan_vjp(c: Any, g: list[Any]) -> tuple[Any, ...]:
    """The VJP rule of ``scan`` (see the module docstring)."""
    from ..frontend.control import scan
    from ..frontend.tracing import call_graph
    from .transform import vjp_graph

    a = c.attrs
    body, n_consts, n_carry, length, reverse = a["body"], a["n_consts"], a["n_carry"], a["length"], a["reverse"]
    consts, xs = list(c.inputs[:n_consts]), list(c.inputs[n_consts + n_carry:])
    carries_in: list[Tensor] = c.residuals[:n_carry]
    saved_stacks: list[Tensor] = c.residuals[n_carry:]  # the saved values, stacked
    saved = saved_values(body, n_consts)
    outs = list(c.out)
    is_f = [o.dtype.is_float for o in body.outputs]
    float_carry = [i for i in range(n_carry) if is_f[i]]
    float_ys = [j for j in range(len(body.outputs) - n_carry) if is_f[n_carry + j]]
    ct_outputs = float_carry + [n_carry + j for j in float_ys]
    wrt = [i for i, p in enumerate(body.inputs) if i >= n_consts and p.dtype.is_float]

    var = varying(body, n_consts)
    front = _frontier(body, n_consts, var, [body.outputs[i] for i in ct_outputs])
    summed: list[Node] = []  # frontier values whose cotangent is summed in the reverse scan's carry
    gemms: list[tuple[Node, list[Node]]] = []  # frontier values whose cotangent is one GEMM after it
    for v in front:
        users = _gemm_consumers(body, v, var, [body.outputs[i] for i in ct_outputs])
        if users is None:
            summed.append(v)
        else:
            gemms.append((v, users))
    extras: list[tuple[str, Node]] = [("ct", v) for v in summed]
    # per GEMM consumer: (index of its cotangent among the extras, its stacked left operand or that index)
    factors: list[tuple[int, Any]] = []
    for _, users in gemms:
        for u in users:
            extras.append(("ct", u))
            ct_at, left = len(extras) - 1, u.inputs[0]
            root = left.inputs[0] if left.op == "reshape" else left  # a vector h enters a matmul as (1, H)
            k = next((i for i, p in enumerate(body.inputs) if p is root), None)
            if k is not None and k >= n_consts:
                stack = carries_in[k - n_consts] if k < n_consts + n_carry else xs[k - n_consts - n_carry]
                factors.append((ct_at, stack if root is left else F.reshape(stack, (length, *left.shape))))
            else:
                factors.append((ct_at, len(extras)))
                extras.append(("value", left))
    body_vjp = vjp_graph(body, wrt=wrt, ct_outputs=ct_outputs, given=saved, extras=extras)

    def slot(i: int) -> Tensor:
        return g[i] if g[i] is not None else F.zeros_like(outs[i])

    ct_carry0 = [slot(i) for i in float_carry]
    acc0 = [F.zeros(v.shape, dtype=v.dtype) for v in summed]
    ct_ys = [slot(n_carry + j) for j in float_ys]
    n_out, n_sum = len(body.outputs), len(summed)
    g_x_slots = [k for k in range(len(xs)) if (n_consts + n_carry + k) in set(wrt)]

    def step(carry: Any, x: Any) -> Any:
        ct_carry, acc = carry
        x_t, c_t, ct_y, p_t = x
        outputs = call_graph(body_vjp, consts + list(c_t) + list(x_t) + list(ct_carry) + list(ct_y) + list(p_t))
        grads = dict(zip(wrt, outputs[n_out:n_out + len(wrt)]))
        more = outputs[n_out + len(wrt):]
        new_acc = [F.add(s, e) for s, e in zip(acc, more[:n_sum])]
        new_ct = [grads[n_consts + i] for i in float_carry]
        g_x = [grads[n_consts + n_carry + k] for k in g_x_slots]
        ys: list[Tensor] = []
        for t in g_x + list(more[n_sum:]):  # stack each value once (a gate's cotangent is often two of them)
            where.append(next((i for i, u in enumerate(ys) if u is t), len(ys)))
            if where[-1] == len(ys):
                ys.append(t)
        return (new_ct, new_acc), ys

    where: list[int] = []  # for each per-step output: its index among the stacked ys (set while tracing `step`)
    (ct_init, acc), ys = scan(step, (ct_carry0, acc0), (xs, carries_in, ct_ys, saved_stacks), length=length,
                              reverse=not reverse)
    ys = [ys[i] for i in where]
    g_xs, per_step = ys[:len(g_x_slots)], ys[len(g_x_slots):]
    result: list[Any] = [None] * len(c.inputs)
    float_consts = [i for i in range(n_consts) if consts[i].dtype.is_float]
    if float_consts and front:
        seeds = list(acc)
        pairs = iter(factors)
        for v, users in gemms:
            total = None
            for u in users:
                ct_at, left = next(pairs)
                gs = per_step[ct_at - n_sum]  # (T, M, N): the product's cotangent at each step
                ls = per_step[left - n_sum] if isinstance(left, int) else left  # (T, M, K): its left operand
                rows = length * u.inputs[0].shape[0]
                part = F.matmul(F.transpose(F.reshape(ls, (rows, v.shape[0])), 0, 1), F.reshape(gs, (rows, v.shape[1])))
                total = part if total is None else F.add(total, part)
            seeds.append(total)
        invariant = Graph(body.inputs[:n_consts], summed + [v for v, _ in gemms], name=f"{body.name}_invariant")
        back = vjp_graph(invariant, wrt=float_consts)
        grads_c = call_graph(back, consts + seeds)[len(invariant.outputs):]
        for i, gi in zip(float_consts, grads_c):
            result[i] = gi
    else:
        for i in float_consts:
            result[i] = F.zeros_like(consts[i])
    for slot_i, i in enumerate(float_carry):
        result[n_consts + i] = ct_init[slot_i]
    for slot_i, k in enumerate(g_x_slots):
        result[n_consts + n_carry + k] = g_xs[slot_i]
    return tuple(result)
