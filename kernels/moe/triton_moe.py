"""Our MoE layer: a fused Triton router (scores, top-k and renormalisation in one pass over the
tokens) and Triton permute / unpermute kernels around the experts' grouped GEMMs: ours where experts
get few rows (kernels/moe/triton_experts.py), torch's beyond.

Routers (both of reference/moe.py's): BLOCK_T tokens a program take their float32 logits against
every expert, then the softmax, or the sigmoid with the selection bias and the group limit, pick the
k best one at a time, ties to the lower index as the reference does, and normalise the k weights.
The logits come one of two ways, chosen per call by plan_logit_splits:
- split: separate programs over (16 tokens, 16 experts, a slice of the model dim) write partial sums
  that the router program adds in a fixed order. For few tokens: at DeepSeek-V3 decode (16 tokens,
  256 experts, dim 7168) the single pass is one program on one SM looping over all 7168 columns for
  256 experts, 0.723 ms of the layer's ~3.9 ms on an H200; split, the layer took 0.842x (softmax_topk)
  and 0.830x (sigmoid_grouped_topk) the time, and 0.948x at Mixtral-8x7B decode (16 tokens, 8 experts).
- single pass: each router program loops over the whole dim itself. For many tokens: at DeepSeek-V3
  prefill (4096 tokens, 256 blocks of 16) the token blocks alone fill the GPU, and the split layer
  took 1.224x and 1.217x the time (unprofiled; by our reading, from reading the tokens once per block
  of 16 experts, the partial sums' round trip through memory and a second launch).
Permute gathers each routed row into expert order; unpermute gathers each token's k expert rows back
and sums them with the router weights (a gather, so no atomics and a deterministic sum). Both split
the columns over programs where the rows alone leave SMs idle (decode; plan_column_slices).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.interpreter import COMPILED
from kernels.moe import triton_experts
from kernels.moe import grouped_mm
from variantbench.catalog import lookup
from variantbench.device import multiprocessors

BLOCK_T = 16  # tokens per router program: tl.dot's smallest tile side
BLOCK_E = 16  # experts per logits program, the same
BLOCK_D = 64  # columns per load in the router's kernels, and the unit of a permute's or unpermute's column slices


class Tiling(NamedTuple):
    """A permute's or unpermute's rows a program, and its widest load (columns; a load divides its slice)."""

    rows: int
    widest: int


# tools/probe_permute.py at DeepSeek-V3 prefill (32768 routed rows of 7168, bfloat16; H200, do_bench, session
# 36), rows a program x widest load: permute 0.1953 ms at 16 x 64, 0.1780 at 16 x 128, 0.1969-0.2077 at
# 256-512 columns; unpermute 0.2490 at 16 x 64 (half the copy peak), 0.1638 at 16 x 512, 0.1553 at 8 x 512
# (likely, not measured apart: a token's k = 8 rows of 512 columns are 8 wide loads in flight). torch's gather
# of the permute's rows (index_select) 0.1986.
PERMUTE_TILING = Tiling(16, 128)
UNPERMUTE_TILING = Tiling(8, 512)
# A logits program's least slice of the model dim: 8 loads of BLOCK_D, so the partial sums it writes
# (16 x 16 float32, 1 KB) stay small beside the 16 KB of router weight it reads.
MIN_SPLIT_DIM = 512


@triton.jit
def _dot_logits(x_ptr, w_ptr, offs_t, offs_e, tokens, start, end, stride_x, stride_w, N_EXPERTS: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
    """(BLOCK_T, BLOCK_E) float32 sums over columns [start, end) of x[offs_t] . w[offs_e]."""
    acc = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
    for d0 in range(start, end, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + offs_t[:, None] * stride_x + offs_d[None, :],
                    mask=(offs_t[:, None] < tokens) & (offs_d[None, :] < end), other=0.0)
        w = tl.load(w_ptr + offs_e[:, None] * stride_w + offs_d[None, :],
                    mask=(offs_e[:, None] < N_EXPERTS) & (offs_d[None, :] < end), other=0.0)
        # compiled only: the interpreter's 16-bit tl.dot sums wrongly (kernels/interpreter.py)
        if COMPILED and x.dtype == w.dtype and x.dtype.primitive_bitwidth == 16:
            # 16-bit inputs on the tensor cores: a product of two has at most 22 significant bits, exact
            # in the float32 accumulator, so the logits are float32 sums of exact products, within a few
            # float32 ulps of the IEEE path's (the tensor cores align and truncate rather than round each
            # add; the order of the sums differs too, as with any float32 GEMM). The IEEE path runs on
            # the FMA units. Gated on an H200 (session 17): same or faster at every MoE shape. Profiled
            # at DeepSeek-V3 prefill (t4k zipf, H200): the sigmoid router kernel 0.087 ms on this path
            # (session 18), 1.467 ms on the IEEE path (session 17's profile, which imported main's code).
            acc += tl.dot(x, tl.trans(w))
        else:
            # IEEE float32: routing is discrete, and TF32's 10-bit mantissa would round float32 inputs,
            # flipping near-ties that the float32 reference decides the other way.
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
    return acc


@triton.jit
def _router_logits_kernel(x_ptr, w_ptr, partial_ptr, tokens, dim, stride_x, stride_w, split_dim,
                          N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr, BLOCK_T: tl.constexpr,
                          BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
    """One (token block, expert block, slice of the dim): its float32 partial logits into
    partial[split] (n_splits, T, E_PAD)."""
    split = tl.program_id(2)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    start = split * split_dim
    acc = _dot_logits(x_ptr, w_ptr, offs_t, offs_e, tokens, start, tl.minimum(start + split_dim, dim), stride_x,
                      stride_w, N_EXPERTS, BLOCK_T, BLOCK_E, BLOCK_D)
    tl.store(partial_ptr + (split * tokens + offs_t[:, None]) * E_PAD + offs_e[None, :], acc,
             mask=offs_t[:, None] < tokens)


@triton.jit
def _router_logits(x_ptr, w_ptr, partial_ptr, offs_t, tokens, dim, stride_x, stride_w, n_splits,
                   N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                   SPLIT: tl.constexpr):
    """(BLOCK_T, E_PAD) float32 logits, padded experts -inf. SPLIT: the logits programs' partial sums
    added in split order (experts with equal weights keep equal logits: the reference's ties stay
    ties); else this program's own pass over the whole dim (partial_ptr and n_splits unused)."""
    offs_e = tl.arange(0, E_PAD)
    if SPLIT:
        logits = tl.zeros((BLOCK_T, E_PAD), dtype=tl.float32)
        for split in range(n_splits):
            logits += tl.load(partial_ptr + (split * tokens + offs_t[:, None]) * E_PAD + offs_e[None, :],
                              mask=offs_t[:, None] < tokens, other=0.0)
    else:
        logits = _dot_logits(x_ptr, w_ptr, offs_t, offs_e, tokens, 0, dim, stride_x, stride_w, N_EXPERTS, BLOCK_T,
                             E_PAD, BLOCK_D)
    return tl.where(offs_e[None, :] < N_EXPERTS, logits, float("-inf"))


@triton.jit
def _pick_top_k(ranked, weights, offs_e, E_PAD: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr,
                BLOCK_T: tl.constexpr):
    """The TOP_K best of `ranked` one at a time, ties to the lower index as the reference's stable
    sort picks; returns their indices and their `weights` (BLOCK_T, K_PAD)."""
    offs_k = tl.arange(0, K_PAD)
    chosen = tl.zeros((BLOCK_T, K_PAD), dtype=tl.int32)
    chosen_w = tl.zeros((BLOCK_T, K_PAD), dtype=tl.float32)
    for slot in tl.static_range(TOP_K):
        best = tl.max(ranked, 1)
        index = tl.min(tl.where(ranked == best[:, None], offs_e[None, :], E_PAD), 1)
        hit = offs_e[None, :] == index[:, None]
        chosen = tl.where(offs_k[None, :] == slot, index[:, None], chosen)
        chosen_w = tl.where(offs_k[None, :] == slot, tl.sum(tl.where(hit, weights, 0.0), 1)[:, None], chosen_w)
        ranked = tl.where(hit, float("-inf"), ranked)
    return chosen, chosen_w


@triton.jit
def _store_routing(experts_ptr, weights_ptr, chosen, chosen_w, offs_t, tokens,
                   TOP_K: tl.constexpr, K_PAD: tl.constexpr):
    offs_k = tl.arange(0, K_PAD)
    out = offs_t[:, None] * TOP_K + offs_k[None, :]
    keep = (offs_t[:, None] < tokens) & (offs_k[None, :] < TOP_K)
    tl.store(experts_ptr + out, chosen, mask=keep)
    tl.store(weights_ptr + out, chosen_w, mask=keep)


@triton.jit
def _softmax_topk_router_kernel(
    experts_ptr, weights_ptr, x_ptr, w_ptr, partial_ptr, tokens, dim, stride_x, stride_w, n_splits,
    N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr, SPLIT: tl.constexpr,
):
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_e = tl.arange(0, E_PAD)
    logits = _router_logits(x_ptr, w_ptr, partial_ptr, offs_t, tokens, dim, stride_x, stride_w, n_splits, N_EXPERTS,
                            E_PAD, BLOCK_T, BLOCK_D, SPLIT)
    probs = tl.exp(logits - tl.max(logits, 1)[:, None])
    probs = probs / tl.sum(probs, 1)[:, None]
    ranked = tl.where(offs_e[None, :] < N_EXPERTS, probs, float("-inf"))
    chosen, chosen_p = _pick_top_k(ranked, probs, offs_e, E_PAD, TOP_K, K_PAD, BLOCK_T)
    _store_routing(experts_ptr, weights_ptr, chosen, chosen_p / tl.sum(chosen_p, 1)[:, None], offs_t, tokens,
                   TOP_K, K_PAD)


@triton.jit
def _sigmoid_grouped_router_kernel(
    bias_ptr, scale, experts_ptr, weights_ptr, x_ptr, w_ptr, partial_ptr, tokens, dim, stride_x, stride_w, n_splits,
    N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr,
    N_GROUPS: tl.constexpr, TOPK_GROUPS: tl.constexpr, PER_GROUP: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr, SPLIT: tl.constexpr,
):
    """DeepSeek-V3 routing, as reference/moe.py's sigmoid_grouped_topk. Padded experts (E_PAD, a
    power of two of at least 16 for tl.dot) form whole padded groups of -inf rank: N_GROUPS counts
    them too, and none is ever eligible while TOPK_GROUPS does not exceed the real groups."""
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_e = tl.arange(0, E_PAD)
    real = offs_e[None, :] < N_EXPERTS
    logits = _router_logits(x_ptr, w_ptr, partial_ptr, offs_t, tokens, dim, stride_x, stride_w, n_splits, N_EXPERTS,
                            E_PAD, BLOCK_T, BLOCK_D, SPLIT)
    scores = tl.where(real, tl.sigmoid(logits), 0.0)
    biased = tl.where(real, scores + tl.load(bias_ptr + offs_e, mask=offs_e < N_EXPERTS, other=0.0)[None, :],
                      float("-inf"))
    # a group ranks by the sum of its two best biased scores (its one score if it has one expert)
    grouped = tl.reshape(biased, (BLOCK_T, N_GROUPS, PER_GROUP))
    first = tl.max(grouped, 2)
    offs_in = tl.arange(0, PER_GROUP)
    first_at = tl.min(tl.where(grouped == first[:, :, None], offs_in[None, None, :], PER_GROUP), 2)
    second = tl.max(tl.where(offs_in[None, None, :] == first_at[:, :, None], float("-inf"), grouped), 2)
    group_rank = first + (second if PER_GROUP > 1 else 0.0)
    offs_g = tl.arange(0, N_GROUPS)
    eligible = tl.zeros((BLOCK_T, N_GROUPS), dtype=tl.int32)
    for _ in tl.static_range(TOPK_GROUPS):
        best = tl.max(group_rank, 1)
        index = tl.min(tl.where(group_rank == best[:, None], offs_g[None, :], N_GROUPS), 1)
        eligible = tl.where(offs_g[None, :] == index[:, None], 1, eligible)
        group_rank = tl.where(offs_g[None, :] == index[:, None], float("-inf"), group_rank)
    eligible_e = tl.reshape(tl.broadcast_to(eligible[:, :, None], (BLOCK_T, N_GROUPS, PER_GROUP)),
                            (BLOCK_T, E_PAD))
    ranked = tl.where(eligible_e != 0, biased, float("-inf"))
    chosen, chosen_s = _pick_top_k(ranked, scores, offs_e, E_PAD, TOP_K, K_PAD, BLOCK_T)
    _store_routing(experts_ptr, weights_ptr, chosen, scale * chosen_s / tl.sum(chosen_s, 1)[:, None], offs_t, tokens,
                   TOP_K, K_PAD)


@triton.jit
def _permute_kernel(x_ptr, source_ptr, rows_ptr, n_rows, dim, cols, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """rows[i] = x[source[i]] over columns [cols * program_id(1), + cols): each routed row in expert order."""
    offs_r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    source = tl.load(source_ptr + offs_r, mask=offs_r < n_rows, other=0)
    start = tl.program_id(1) * cols
    for d0 in range(start, tl.minimum(start + cols, dim), BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        keep = (offs_r[:, None] < n_rows) & (offs_d[None, :] < dim)
        row = tl.load(x_ptr + source[:, None] * dim + offs_d[None, :], mask=keep)
        tl.store(rows_ptr + offs_r[:, None] * dim + offs_d[None, :], row, mask=keep)


@triton.jit
def _unpermute_kernel(rows_ptr, position_ptr, weights_ptr, y_ptr, tokens, dim, cols,
                      TOP_K: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """y[t] = sum_j weights[t, j] * rows[position[t, j]] in float32, stored in y's dtype, over columns
    [cols * program_id(1), + cols)."""
    offs_t = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    in_t = offs_t < tokens
    start = tl.program_id(1) * cols
    for d0 in range(start, tl.minimum(start + cols, dim), BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        keep = in_t[:, None] & (offs_d[None, :] < dim)
        acc = tl.zeros((ROWS, BLOCK_D), dtype=tl.float32)
        for slot in tl.static_range(TOP_K):
            position = tl.load(position_ptr + offs_t * TOP_K + slot, mask=in_t, other=0)
            weight = tl.load(weights_ptr + offs_t * TOP_K + slot, mask=in_t, other=0.0)
            row = tl.load(rows_ptr + position[:, None] * dim + offs_d[None, :], mask=keep, other=0.0)
            acc += weight[:, None] * row.to(tl.float32)
        tl.store(y_ptr + offs_t[:, None] * dim + offs_d[None, :], acc.to(y_ptr.dtype.element_ty), mask=keep)


def _softmax_topk(config, selection_bias, experts, weights, grid, common):
    _softmax_topk_router_kernel[grid](experts, weights, **common)


def _sigmoid_grouped_topk(config, selection_bias, experts, weights, grid, common):
    per_group = config.n_experts // config.n_groups
    _sigmoid_grouped_router_kernel[grid](
        selection_bias, config.routed_scale, experts, weights, N_GROUPS=common["E_PAD"] // per_group,
        TOPK_GROUPS=config.topk_groups, PER_GROUP=per_group, **common)


# reference/moe.py's routers by the same names, each launching its router kernel into `experts` and
# `weights`. tests/test_moe.py checks that every catalog router has an entry here.
ROUTERS = {"softmax_topk": _softmax_topk, "sigmoid_grouped_topk": _sigmoid_grouped_topk}


def plan_logit_splits(tokens, e_pad, dim, device):
    """Slices of the model dim for separate logits programs, or 0 for the single pass, where each
    router program computes its own logits. The rule: the single pass once its token blocks alone
    give a program for every SM (a wave): then splitting adds no parallelism worth its costs (the
    tokens read once per block of 16 experts, the partial sums' round trip, a second launch).
    DeepSeek-V3 prefill: 256 blocks of 16 tokens on an H200's 132 SMs, the single pass. Fewer token
    blocks: enough programs for every SM, no slice under MIN_SPLIT_DIM. DeepSeek-V3 decode: 1 x 16
    blocks of 16 tokens x 16 experts, 9 slices of 7168 (144 programs); Mixtral-8x7B decode: 1 x 1
    block, 8 slices of 4096. The threshold between is unmeasured (the gate's counts are 16 and 4096).
    On the CPU (multiprocessors: 4) the split up to 48 tokens."""
    sms = multiprocessors(device)
    token_blocks = triton.cdiv(tokens, BLOCK_T)
    if token_blocks >= sms:
        return 0
    return max(1, min(triton.cdiv(sms, token_blocks * (e_pad // BLOCK_E)), dim // MIN_SPLIT_DIM))


def route(router, config, x, router_weight, selection_bias, *, logit_splits=None):
    """(experts (T, k) int32, weights (T, k) float32) as reference/moe.py's router of that name.
    logit_splits: slices of the model dim for the logits, 0 for the single pass (default:
    plan_logit_splits)."""
    launch = lookup(ROUTERS, router, "Triton MoE router")
    (tokens, dim), top_k, n_experts = x.shape, config.top_k, config.n_experts
    e_pad = max(16, triton.next_power_of_2(n_experts))
    splits = plan_logit_splits(tokens, e_pad, dim, x.device) if logit_splits is None else logit_splits
    partial = None
    if splits:
        split_dim = triton.cdiv(triton.cdiv(dim, splits), BLOCK_D) * BLOCK_D  # whole loads a slice
        splits = triton.cdiv(dim, split_dim)
        partial = torch.empty(splits, tokens, e_pad, dtype=torch.float32, device=x.device)
        _router_logits_kernel[(triton.cdiv(tokens, BLOCK_T), e_pad // BLOCK_E, splits)](
            x, router_weight, partial, tokens, dim, x.stride(0), router_weight.stride(0), split_dim,
            N_EXPERTS=n_experts, E_PAD=e_pad, BLOCK_T=BLOCK_T, BLOCK_E=BLOCK_E, BLOCK_D=BLOCK_D)
    experts = torch.empty(tokens, top_k, dtype=torch.int32, device=x.device)
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=x.device)
    common = dict(x_ptr=x, w_ptr=router_weight, partial_ptr=partial, tokens=tokens, dim=dim, stride_x=x.stride(0),
                  stride_w=router_weight.stride(0), n_splits=splits, N_EXPERTS=n_experts, E_PAD=e_pad, TOP_K=top_k,
                  K_PAD=triton.next_power_of_2(top_k), BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D, SPLIT=splits > 0)
    launch(config, selection_bias, experts, weights, (triton.cdiv(tokens, BLOCK_T),), common)
    return experts, weights


def plan_column_slices(row_blocks, dim, device):
    """Columns a permute or unpermute program moves: the whole row where its row blocks alone give
    every SM a program, else slices of whole loads so that (row blocks x slices) does, one load (64
    columns) at the least. At decode the row blocks are few: DeepSeek-V3's unpermute of 16 tokens was
    one program walking 7168 columns in 112 dependent loads of 8 rows each, its permute 8 programs;
    Mixtral's unpermute one program over 4096. The same rule as plan_logit_splits."""
    loads = triton.cdiv(dim, BLOCK_D)
    slices = min(loads, triton.cdiv(multiprocessors(device), max(row_blocks, 1)))  # no tokens: no programs
    return triton.cdiv(loads, slices) * BLOCK_D


def sliced(n_rows, dim, device, tiling):
    """(grid, columns a program, columns a load) of a permute or unpermute over n_rows rows of dim columns:
    the tiling's rows a program, and its widest load that divides the program's columns (a multiple of
    BLOCK_D): at DeepSeek-V3 prefill whole rows of 7168 in loads of 128 (permute) and 512 (unpermute), at its
    decode slices of 64-448 columns."""
    row_blocks = triton.cdiv(n_rows, tiling.rows)
    cols = plan_column_slices(row_blocks, dim, device)
    return (row_blocks, triton.cdiv(dim, cols)), cols, min(tiling.widest, cols & -cols)


def permute(x, source):
    n_rows, dim = source.numel(), x.shape[1]
    rows = torch.empty(n_rows, dim, dtype=x.dtype, device=x.device)
    grid, cols, load = sliced(n_rows, dim, x.device, PERMUTE_TILING)
    _permute_kernel[grid](x, source, rows, n_rows, dim, cols, ROWS=PERMUTE_TILING.rows, BLOCK_D=load)
    return rows


def unpermute(rows, position, weights, tokens, dtype):
    dim = rows.shape[1]
    y = torch.empty(tokens, dim, dtype=dtype, device=rows.device)
    grid, cols, load = sliced(tokens, dim, rows.device, UNPERMUTE_TILING)
    _unpermute_kernel[grid](rows, position, weights, y, tokens, dim, cols, TOP_K=position.shape[1],
                            ROWS=UNPERMUTE_TILING.rows, BLOCK_D=load)
    return y


def expert_order(flat, top_k):
    """(order, source, position) of the routed (token, slot) pairs flat (T k,) put in expert order: the pairs'
    order (a stable sort: an expert's rows in token order), each row's token (int32, permute's source) and each
    pair's row ((T, k) int32, unpermute's position)."""
    order = torch.argsort(flat, stable=True)
    position = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=flat.device))
    return order, (order // top_k).to(torch.int32), position.view(-1, top_k).to(torch.int32)


def prepare_function(variant, problem):
    """The layer, with the problem's experts and router, as a function of any tokens x (T, dim)."""
    config = problem.config
    w13, w2 = problem.w13, problem.w2
    top_k = config.top_k

    def layer(x):
        experts, weights = route(variant.router, config, x, problem.router_weight, problem.selection_bias)
        flat = experts.flatten()
        order, source, position = expert_order(flat, top_k)
        offsets = grouped_mm.expert_offsets(flat[order], config.n_experts)
        rows = permute(x, source)
        # few rows an expert: our weight-streaming GEMMs (kernels/moe/triton_experts.py); torch's beyond
        experts_of = triton_experts.experts if triton_experts.serves(rows, w13, w2) else grouped_mm.swiglu_experts
        y = unpermute(experts_of(rows, w13, w2, offsets), position, weights, x.shape[0], x.dtype)
        if problem.shared13 is not None:
            gate, up = (x @ problem.shared13.t()).chunk(2, dim=-1)
            # into the routed sum in the GEMM's epilogue (beta 1), in place: no (T, dim) product written and
            # read back by an add kernel (0.040 ms of the layer at DeepSeek-V3 prefill, H200, session 36's
            # profile), and no copy of y, which torch.addmm's out-of-place form took (0.029 ms)
            y.addmm_(F.silu(gate) * up, problem.shared2.t())
        return y

    layer.backend = "triton"
    return layer


def prepare(variant, problem):
    layer = prepare_function(variant, problem)

    def call():
        return layer(problem.x)

    call()
    return call
