"""Our MoE layer: a fused Triton router (scores, top-k and renormalisation in one pass over the
tokens) and Triton permute / unpermute kernels around torch's grouped GEMM for the experts.

Router: each program takes BLOCK_T tokens, computes their logits against every expert in float32
(the router weight is a few MB and stays in L2), the softmax, then picks the k best one at a time,
ties to the lower expert index as the reference does, and renormalises the k weights. Permute gathers
each routed row into expert order; unpermute gathers each token's k expert rows back and sums them
with the router weights (a gather, so no atomics and a deterministic sum).
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK_T = 16  # tokens per router program: tl.dot's smallest tile side
BLOCK_D = 64  # columns per load in every kernel here
ROWS_PER_PROGRAM = 16  # rows per permute / unpermute program


@triton.jit
def _softmax_topk_router_kernel(
    x_ptr, w_ptr, experts_ptr, weights_ptr, tokens, dim,
    stride_x, stride_w,
    N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_e = tl.arange(0, E_PAD)
    logits = tl.zeros((BLOCK_T, E_PAD), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + offs_t[:, None] * stride_x + offs_d[None, :],
                    mask=(offs_t[:, None] < tokens) & (offs_d[None, :] < dim), other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs_e[:, None] * stride_w + offs_d[None, :],
                    mask=(offs_e[:, None] < N_EXPERTS) & (offs_d[None, :] < dim), other=0.0).to(tl.float32)
        # IEEE float32: routing is discrete, and TF32's 10-bit mantissa would flip near-ties that the
        # float32 reference decides the other way.
        logits += tl.dot(x, tl.trans(w), input_precision="ieee")
    logits = tl.where(offs_e[None, :] < N_EXPERTS, logits, float("-inf"))
    probs = tl.exp(logits - tl.max(logits, 1)[:, None])
    probs = probs / tl.sum(probs, 1)[:, None]
    offs_k = tl.arange(0, K_PAD)
    chosen = tl.zeros((BLOCK_T, K_PAD), dtype=tl.int32)
    chosen_p = tl.zeros((BLOCK_T, K_PAD), dtype=tl.float32)
    remaining = tl.where(offs_e[None, :] < N_EXPERTS, probs, -1.0)
    for slot in tl.static_range(TOP_K):
        best = tl.max(remaining, 1)
        # the lowest index among equal best scores, as the reference's stable sort picks
        index = tl.min(tl.where(remaining == best[:, None], offs_e[None, :], E_PAD), 1)
        chosen = tl.where(offs_k[None, :] == slot, index[:, None], chosen)
        chosen_p = tl.where(offs_k[None, :] == slot, best[:, None], chosen_p)
        remaining = tl.where(offs_e[None, :] == index[:, None], -1.0, remaining)
    chosen_p = chosen_p / tl.sum(chosen_p, 1)[:, None]
    out = offs_t[:, None] * TOP_K + offs_k[None, :]
    keep = (offs_t[:, None] < tokens) & (offs_k[None, :] < TOP_K)
    tl.store(experts_ptr + out, chosen, mask=keep)
    tl.store(weights_ptr + out, chosen_p, mask=keep)


@triton.jit
def _permute_kernel(x_ptr, source_ptr, rows_ptr, n_rows, dim, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """rows[i] = x[source[i]]: each routed row in expert order."""
    offs_r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    source = tl.load(source_ptr + offs_r, mask=offs_r < n_rows, other=0)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        keep = (offs_r[:, None] < n_rows) & (offs_d[None, :] < dim)
        row = tl.load(x_ptr + source[:, None] * dim + offs_d[None, :], mask=keep)
        tl.store(rows_ptr + offs_r[:, None] * dim + offs_d[None, :], row, mask=keep)


@triton.jit
def _unpermute_kernel(rows_ptr, position_ptr, weights_ptr, y_ptr, tokens, dim,
                      TOP_K: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """y[t] = sum_j weights[t, j] * rows[position[t, j]] in float32, stored in y's dtype."""
    offs_t = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    in_t = offs_t < tokens
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        keep = in_t[:, None] & (offs_d[None, :] < dim)
        acc = tl.zeros((ROWS, BLOCK_D), dtype=tl.float32)
        for slot in tl.static_range(TOP_K):
            position = tl.load(position_ptr + offs_t * TOP_K + slot, mask=in_t, other=0)
            weight = tl.load(weights_ptr + offs_t * TOP_K + slot, mask=in_t, other=0.0)
            row = tl.load(rows_ptr + position[:, None] * dim + offs_d[None, :], mask=keep, other=0.0)
            acc += weight[:, None] * row.to(tl.float32)
        tl.store(y_ptr + offs_t[:, None] * dim + offs_d[None, :], acc.to(y_ptr.dtype.element_ty), mask=keep)


def route(x, router_weight, top_k):
    """(experts (T, k) int32, weights (T, k) float32): softmax top-k, renormalised, ties to the lower index."""
    tokens, dim = x.shape
    n_experts = router_weight.shape[0]
    experts = torch.empty(tokens, top_k, dtype=torch.int32, device=x.device)
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=x.device)
    _softmax_topk_router_kernel[(triton.cdiv(tokens, BLOCK_T),)](
        x, router_weight, experts, weights, tokens, dim, x.stride(0), router_weight.stride(0),
        N_EXPERTS=n_experts, E_PAD=max(16, triton.next_power_of_2(n_experts)), TOP_K=top_k,
        K_PAD=triton.next_power_of_2(top_k), BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D,
    )
    return experts, weights


def permute(x, source):
    rows = torch.empty(source.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    _permute_kernel[(triton.cdiv(source.numel(), ROWS_PER_PROGRAM),)](
        x, source, rows, source.numel(), x.shape[1], ROWS=ROWS_PER_PROGRAM, BLOCK_D=BLOCK_D)
    return rows


def unpermute(rows, position, weights, tokens, dtype):
    y = torch.empty(tokens, rows.shape[1], dtype=dtype, device=rows.device)
    _unpermute_kernel[(triton.cdiv(tokens, ROWS_PER_PROGRAM),)](
        rows, position, weights, y, tokens, rows.shape[1], TOP_K=position.shape[1], ROWS=ROWS_PER_PROGRAM,
        BLOCK_D=BLOCK_D)
    return y


def prepare(variant, problem):
    config = problem.config
    x, w13, w2 = problem.x, problem.w13, problem.w2
    top_k = config.top_k

    def call():
        experts, weights = route(x, problem.router_weight, top_k)
        flat = experts.flatten()
        order = torch.argsort(flat, stable=True)
        position = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=x.device))
        offsets = torch.cumsum(torch.bincount(flat, minlength=config.n_experts), 0).to(torch.int32)
        rows = permute(x, (order // top_k).to(torch.int32))
        gate, up = torch._grouped_mm(rows, w13.transpose(-2, -1), offs=offsets).chunk(2, dim=-1)
        expert_rows = torch._grouped_mm(F.silu(gate) * up, w2.transpose(-2, -1), offs=offsets)
        y = unpermute(expert_rows, position.view(-1, top_k).to(torch.int32), weights, x.shape[0], x.dtype)
        if problem.shared13 is not None:
            gate, up = (x @ problem.shared13.t()).chunk(2, dim=-1)
            y = y + (F.silu(gate) * up) @ problem.shared2.t()
        return y

    call()
    return call
