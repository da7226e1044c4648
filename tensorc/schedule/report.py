"""The printable forms of a schedule: the compile report, and TENSORC_DEBUG logging.

``report(schedule)`` has five sections: the kernels in launch order (ops,
fused pattern, FLOPs, bytes, arithmetic intensity, iteration space, what each
loads and stores), totals, the buffers and the memory plan (bytes by role,
and bytes per parameter), the views the scheduler had to materialize, and the
fusions it refused with their reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .memory import ROLES
from .scheduler import Schedule

log = logging.getLogger("tensorc")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_count(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.2f}{unit}"
        n /= 1000
    return f"{n:.2f}T"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _kernel_section(s: Schedule, indent: str = "") -> list[str]:
    rows = [["#", "pattern", "FLOPs", "bytes", "FLOP/B", "iteration space"]]
    for k in s.kernels:
        rows.append([str(k.index), k.pattern, human_count(k.flops), human_bytes(k.bytes), f"{k.intensity:.2f}",
                     k.domain.describe() if k.domain is not None else "-"])
    lines = _table(rows, {0, 2, 3, 4})
    out = [indent + lines[0]]
    for k, line in zip(s.kernels, lines[1:]):
        out.append(indent + line)
        ops = " ".join(f"{s.name(n)}={n.op}" for n in k.nodes)
        out.append(f"{indent}      ops:   {ops}")
        loads = []
        for load in k.loads:
            if load.inline:
                continue
            via = "" if not load.chain else f" via {load.ops_text()}"
            loads.append(f"{s.name(load.src)}{via}")
        out.append(f"{indent}      loads: {', '.join(dict.fromkeys(loads)) or '-'}")
        out.append(f"{indent}      store: {', '.join(s.name(n) for n in k.outputs) or '-'}")
        if k.body is not None:
            out.append(f"{indent}      body ({k.nodes[0].attrs['length']} steps, {len(k.body.kernels)} kernels per step):")
            out += _kernel_section(k.body, indent + "        ")
    return out


def _memory_section(s: Schedule) -> list[str]:
    plan = s.plan
    rows = [["buffer", "type", "bytes", "role", "written", "last read", "slot"]]
    end = len(s.kernels)
    for b in plan.buffers:
        rows.append([b.name, b.node.type_str, human_bytes(b.nbytes), b.role,
                     "-" if b.producer is None else f"k{b.producer}",
                     "end" if b.last_use >= end else ("-" if b.last_use < 0 else f"k{b.last_use}"),
                     "-" if b.slot is None else str(b.slot)])
    lines = _table(rows, {2})
    lines.append("")
    lines.append(f"  peak memory {human_bytes(plan.peak_bytes)} = resident {human_bytes(plan.resident_bytes)} "
                 f"(inputs, parameters, state, constants) + arena {human_bytes(plan.arena_bytes)} in {_count(len(plan.slot_bytes), 'slot')}; "
                 f"most live at once {human_bytes(plan.peak_live_bytes)}; without reuse {human_bytes(plan.total_bytes)}")
    return lines


def role_lines(by_role: Mapping[str, int], n_params: int) -> list[str]:
    """Bytes by role, and per parameter (the "4 bytes + 20 extra per parameter" accounting)."""
    lines = []
    for role in ROLES:
        if by_role.get(role):
            per = f"  {by_role[role] / n_params:7.2f} B/param" if n_params else ""
            lines.append(f"  {role:<16} {human_bytes(by_role[role]):>10}{per}")
    total = sum(by_role.values())
    if n_params:
        extra = total - by_role.get("parameter", 0)
        lines.append(f"  {'total':<16} {human_bytes(total):>10}  {total / n_params:7.2f} B/param "
                     f"= {by_role.get('parameter', 0) / n_params:.2f} for the parameters + {extra / n_params:.2f} extra "
                     f"({n_params} parameters; the rule of thumb for fp32 Adam training is 4 + 20)")
    else:
        lines.append(f"  {'total':<16} {human_bytes(total):>10}  (no parameters)")
    return lines


def report(s: Schedule) -> str:
    """The compile report of a schedule (see the module docstring)."""
    n_params = sum(b.node.size for b in s.buffers if b.role == "parameter")
    out = [f"schedule {s.graph.name}: {_count(len(s.kernels), 'kernel')}, {_count(len(s.buffers), 'buffer')}", "",
           "kernels (launch order)"]
    out += _kernel_section(s)
    total_flops, total_bytes = s.flops, s.bytes
    out += ["", "totals",
            f"  {_count(len(s.kernels), 'kernel')}, {human_count(total_flops)} FLOPs, {human_bytes(total_bytes)} moved, "
            f"{total_flops / total_bytes if total_bytes else 0.0:.2f} FLOP/B; peak memory {human_bytes(s.plan.peak_bytes)}",
            "", "buffers"]
    out += _memory_section(s)
    out += ["", "memory by role"] + role_lines(s.plan.bytes_by_role(), n_params)
    out += ["", "forced materializations"]
    out += [f"  {s.name(m.node)} ({m.node.op} {m.node.type_str}): {m.reason}" for m in s.materializations] or ["  (none)"]
    out += ["", "refused fusions"]
    out += [f"  {r}" for r in s.refusals] or ["  (none)"]
    return "\n".join(out)


def kernel_line(s: Schedule, k_index: int) -> str:
    k = s.kernels[k_index]
    return (f"kernel {k.index:3d} {k.pattern:<24} {len(k.nodes):3d} ops {human_count(k.flops):>9} FLOPs "
            f"{human_bytes(k.bytes):>10} {k.intensity:6.2f} FLOP/B")


def log_schedule(s: Schedule, name: str, target: str, seconds: Mapping[str, float], level: int) -> None:
    """TENSORC_DEBUG logging: 1 kernel count and compile times, 2 one line per kernel, 3 the whole report."""
    if level < 1:
        return
    times = ", ".join(f"{stage} {1e3 * t:.1f} ms" for stage, t in seconds.items())
    log.warning("tensorc: %s for %s: %s (%s)", name, target, _count(len(s.kernels), "kernel"), times)
    if level >= 3:
        log.warning("tensorc: schedule of %s:\n%s", name, report(s))
    elif level >= 2:
        for k in range(len(s.kernels)):
            log.warning("tensorc: %s", kernel_line(s, k))
