"""One GPT training step (vocab 65, block 128, 4 layers, 4 heads, n_embd 256, batch 16,
pre-LN, GELU, tied embeddings, AdamW, whole step compiled): tensorc vs PyTorch eager.

    python benchmarks/gpt_step.py [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc
from models.gpt import GPT, from_preset

V, B = 65, 16


def tensorc_step(cfg):  # noqa: ANN001, ANN201
    model = GPT(cfg)
    params = model.init(tc.random.key(0))
    opt = tc.optim.AdamW(3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    state = opt.init(params)

    def step(params, state, x, y):  # noqa: ANN001, ANN202
        loss, grads = tc.value_and_grad(model.loss)(params, x, y)
        grads, _ = tc.optim.clip_grad_norm(grads, 1.0)
        params, state = opt.update(grads, state, params)
        return loss, params, state

    return tc.jit(step), params, state


def torch_step(cfg):  # noqa: ANN001, ANN201
    torch = try_torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = cfg.n_embd
            self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.fc, self.out = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

        def forward(self, x):  # noqa: ANN001, ANN202
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(c, -1)
            q, k, v = (z.view(b, t, cfg.n_head, c // cfg.n_head).transpose(1, 2) for z in (q, k, v))
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, c))
            return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, cfg.n_embd), nn.Embedding(cfg.block_size, cfg.n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd)

        def forward(self, idx, targets):  # noqa: ANN001, ANN202
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step(x, y):  # noqa: ANN001, ANN202
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    cfg = from_preset("tiny", vocab_size=V)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, cfg.block_size))
    y = rng.integers(0, V, (B, cfg.block_size))
    f, params, state = tensorc_step(cfg)
    t0 = time.perf_counter()
    lowered = f.lower(params, state, x, y)
    lowered.optimized  # noqa: B018
    compile_s = time.perf_counter() - t0
    print(f"tensorc: trace + passes {compile_s:.2f} s; {len(lowered.graph.nodes)} nodes traced, "
          f"{len(lowered.optimized.nodes)} after passes")
    holder = {"p": params, "s": state}

    def run_tc() -> None:
        loss, holder["p"], holder["s"] = f(holder["p"], holder["s"], x, y)

    rows = [("tensorc", median_time(run_tc, repeat=args.steps, warmup=1))]
    torch = try_torch()
    if torch is not None:
        step = torch_step(cfg)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        rows.append(("torch eager", median_time(lambda: step(tx, ty), repeat=args.steps, warmup=1)))
    print(machine())
    n_params = 4 * 12 * cfg.n_embd ** 2 + V * cfg.n_embd
    flops = 6.0 * n_params * B * cfg.block_size + 12 * cfg.n_layer * B * cfg.block_size ** 2 * cfg.n_embd / 2
    report(f"GPT training step (B={B}, T={cfg.block_size}, {cfg.n_layer}x{cfg.n_embd}, ~{n_params / 1e6:.1f}M params)",
           rows, flops=flops)


if __name__ == "__main__":
    main()
