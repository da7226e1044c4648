"""The user docs run: every example in docs/*.md is executed, and its shown output checked.

Conventions the markdown follows (see the comment at the top of each page):

- A fenced python block is executed. The blocks of one page share one namespace,
  in order, and run in a fresh temporary directory (the page's working directory).
- A block preceded by the HTML comment ``<!-- skip -->`` is not executed.
- A block preceded by ``<!-- file: NAME.py -->`` is also written to ``NAME.py`` in
  that directory (so a later ``tensorc`` command can load it), and is compiled
  under that name, so source locations in its IR and errors read ``NAME.py:LINE``.
  Other blocks are compiled as ``example.py``; line numbers count from the block's
  first line.
- A fenced text block that directly follows a python block is that block's expected
  stdout; ``...`` matches anything (doctest's ELLIPSIS): use it for the last digits
  of floats that compiled code computes, since fusion may change their rounding.
- In a fenced console block, each ``$ tensorc ...`` line is run in-process
  (``tensorc.cli.main``) and the lines up to the next ``$`` are its expected stdout
  then stderr. Commands other than ``tensorc`` are not run.

The tables in docs/dsl.md that are generated from the code (the promotion matrix,
the weak-scalar table, the primitive op set) are checked against the code.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

import tensorc as tc

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["quickstart.md", "dsl.md", "autodiff.md", "passes.md", "backends.md", "models.md", "cli.md", "nn-and-optim.md", "text-and-data.md", "models-seq2seq.md"]

_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*(skip|file:\s*(?P<file>[\w./-]+))\s*-->\s*$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence in the page
    skip: bool = False
    filename: str | None = None
    follows_python: bool = False  # only blank lines since the previous python block closed


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown page, with their markers."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    marker: re.Match[str] | None = None
    last_python_close: int | None = None  # index of the closing fence of the last python block
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            mm = _MARKER.match(lines[i].strip())
            if mm:
                marker = mm
            elif lines[i].strip():
                marker = None
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"unclosed code fence at line {start + 1}"
        follows = last_python_close is not None and all(not s.strip() for s in lines[last_python_close + 1:start])
        block = Block(m.group(1), "\n".join(body) + "\n", start + 1, follows_python=follows)
        if marker is not None:
            block.skip = marker.group(1) == "skip"
            block.filename = marker.group("file")
        blocks.append(block)
        last_python_close = i if block.lang == "python" else None
        marker = None
        i += 1
    return blocks


def _check_output(want: str, got: str, what: str) -> None:
    checker = doctest.OutputChecker()
    want = "\n".join(s.rstrip() for s in want.strip("\n").splitlines()) + "\n"
    got = "\n".join(s.rstrip() for s in got.strip("\n").splitlines()) + "\n"
    if not checker.check_output(want, got, doctest.ELLIPSIS):
        pytest.fail(f"{what}: output differs from the docs\n--- docs\n{want}--- actual\n{got}")


def _run_console(block: Block, page: str) -> None:
    from tensorc import cli

    commands: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    for command, want in commands:
        argv = shlex.split(command)
        if argv[0] != "tensorc":
            continue
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(argv[1:])
            except SystemExit:  # argparse errors
                pass
        _check_output("\n".join(want), out.getvalue() + err.getvalue(), f"{page}:{block.line}: $ {command}")


def run_page(page: str, workdir: Path) -> None:
    blocks = parse_blocks((DOCS / page).read_text())
    namespace: dict[str, object] = {"__name__": f"docs_{Path(page).stem}"}
    stdout_of_last_python: str | None = None
    for block in blocks:
        where = f"{page}:{block.line}"
        if block.lang == "python":
            stdout_of_last_python = None
            if block.skip:
                continue
            name = block.filename or "example.py"
            if block.filename:
                (workdir / block.filename).write_text(block.code)
            out = io.StringIO()
            try:
                code = compile(block.code, name, "exec")
                with contextlib.redirect_stdout(out):
                    exec(code, namespace)
            except Exception as e:  # re-raise with the page's line, so a failure is easy to find
                raise AssertionError(f"the python block at {where} raised {type(e).__name__}: {e}\n"
                                     f"output so far:\n{out.getvalue()}") from e
            stdout_of_last_python = out.getvalue()
        elif block.lang == "text" and block.follows_python:
            if stdout_of_last_python is not None:  # the python block before it ran (was not skipped)
                _check_output(block.code, stdout_of_last_python, where)
            stdout_of_last_python = None
        elif block.lang == "console" and not block.skip:
            _run_console(block, page)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with tc.config():  # any flag a page sets is restored afterwards
        run_page(page, tmp_path)


def test_parse_blocks_markers() -> None:
    text = "\n".join([
        "<!-- skip -->", "```python", "raise SystemExit", "```", "",
        "```text", "not output: the block before was skipped", "```",
        "<!-- file: m.py -->", "```python", "print(1)", "```", "", "```text", "1", "```",
        "prose", "```text", "2", "```",
    ])
    b = parse_blocks(text)
    assert [(x.lang, x.skip, x.filename, x.follows_python) for x in b] == [
        ("python", True, None, False), ("text", False, None, True), ("python", False, "m.py", False),
        ("text", False, None, True), ("text", False, None, False),
    ]


# ----------------------------------------------------------------------------- generated tables


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The first markdown table after ``heading``: rows of cell strings (header row first)."""
    lines = text.splitlines()
    start = next(i for i, s in enumerate(lines) if s.strip() == heading)
    rows: list[list[str]] = []
    for s in lines[start + 1:]:
        if s.startswith("|"):
            cells = [c.strip().strip("*`").strip() for c in s.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    assert rows, f"no table after {heading!r}"
    return rows


def _dsl() -> str:
    return (DOCS / "dsl.md").read_text()


def test_promotion_matrix_matches_promote() -> None:
    rows = _table_after(_dsl(), "### Tensor with tensor")
    header, body = rows[0][1:], rows[1:]
    names = ["bool", "int32", "int64", "uint32", "float16", "bfloat16", "float32", "float64"]
    assert header == names
    assert [r[0] for r in body] == names
    for row in body:
        a = tc.ir.dtypes.dtype(row[0])
        for name, cell in zip(names, row[1:]):
            b = tc.ir.dtypes.dtype(name)
            assert cell == tc.promote(a, b).name, f"promote({a}, {b}) is {tc.promote(a, b)}, the docs say {cell}"


def test_weak_scalar_table_matches_ops() -> None:
    rows = _table_after(_dsl(), "### Tensor with Python scalar")
    header, body = rows[0], rows[1:]
    assert header[1:] == ["True", "1", "1.0"]
    scalars = [True, 1, 1.0]
    assert len(body) == 8
    for row in body:
        x = tc.zeros(2, dtype=row[0])
        for scalar, cell in zip(scalars, row[1:]):
            # tc.where promotes its branches like every binary op and is defined on every dtype.
            got = tc.where(tc.tensor([True, False]), x, scalar).dtype
            assert cell == got.name, f"{row[0]} with {scalar!r} gives {got}, the docs say {cell}"


def test_primitive_op_table_matches_registry() -> None:
    rows = _table_after(_dsl(), "### The primitive ops")
    assert rows[0] == ["op", "kind", "differentiable", "what it computes"]
    documented = {r[0]: (r[1], r[2]) for r in rows[1:]}
    # Fused ops (kind "fused") are made by passes, not the frontend; dsl.md describes them in prose.
    actual = {name: (op.kind, "yes" if op.differentiable else "no") for name, op in tc.ir.REGISTRY.items() if op.kind != "fused"}
    assert documented == actual


def test_every_public_function_is_documented() -> None:
    import inspect

    import tensorc.nn.functional as F

    text = _dsl()
    names = [n for n in tc.__all__ if not n.startswith("_") and not inspect.ismodule(getattr(tc, n))]
    names += [n for n, v in vars(F).items() if not n.startswith("_") and inspect.isfunction(v)
              and v.__module__ in ("tensorc.nn.functional", "tensorc.frontend.ops")]
    names += [n for n, v in vars(tc.random).items() if not n.startswith("_") and inspect.isfunction(v)
              and v.__module__ == "tensorc.random"]
    missing = sorted({n for n in names if f"`{n}" not in text and f".{n}`" not in text and f".{n}(" not in text})
    assert not missing, f"docs/dsl.md does not mention: {missing}"
