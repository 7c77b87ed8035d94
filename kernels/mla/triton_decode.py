"""Our MLA decode kernel: attention in the absorbed form over the latent cache, split over the cache.

The absorbed form (reference/mla.py) has one key head, the cache row of rank + rope values (512 + 64
in DeepSeek-V3), shared by every query head, and the 512-wide latent as values. So, as FlashMLA does,
a tile's rows are query heads of one token (BLOCK_H of them) and every cache tile loaded feeds all of
them: the cache is read once per row block instead of once per head. A decode batch has few tokens,
so the cache is also split into `n_splits` ranges, one program each, and the partial softmax states
(running max, sum and the unnormalised latent output) are merged by a second kernel (flash-decoding).

Around the kernels, in torch: W_uk folded into the queries before (one batched matmul), and W_uv
applied to the merged latent output after.
"""

import math

import torch
import triton
import triton.language as tl

from variantbench.device import multiprocessors

# The partial states of every split are merged by the second kernel; a split below this many keys
# costs its program launch and merge more than it saves (a cache tile is 32 or 64 keys).
MIN_SPLIT_KEYS = 256
# Programs per SM the splits aim at, rounded: batch 64 x 2 row blocks is 128 programs, one wave on an
# H200's 132 SMs, so no split (tools/probe_mla.py at b64 x 8k, 64 x 64 tiles: 0.531 ms unsplit, 0.543
# in 2, 0.555 in 3, 0.608 in 8); batch 1 over a long cache splits into ~66 ranges of 2 row blocks.
# Rounded, not ceiled: batch 48 (96 programs) stays whole, a 27% idle wave against a merge pass.
PROGRAMS_PER_SM = 1
ROWS_PER_PROGRAM = 64  # the row block the split count is planned with (the largest tuned BLOCK_H)
SPLIT_ALIGN = 64  # a split's keys are a multiple of this (on the CPU, of the interpreter's 16)
LOG2E = 1.4426950408889634


@triton.jit
def online_softmax_step(s, values, m_i, l_i, acc):
    """One tile of keys in flash attention's online softmax: s (rows, keys) scaled scores in log2 units,
    -inf where hidden; values (keys, dim). Returns the running max, sum and unnormalised output."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet stays at 0
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    return m_new, l_i * alpha + tl.sum(p, 1), tl.dot(p.to(values.dtype), values, acc * alpha[:, None])


@triton.jit
def _partial_kernel(
    QLatent, QPe, Cache, PartOut, PartMax, PartSum,
    stride_cache_b, stride_cache_s,
    n_rows, n_heads, q_len, kv_len, split_len, scale_log2,
    RANK: tl.constexpr, ROPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One (row block, split, sequence): the online softmax over keys [split * split_len, next split)."""
    row_block, split = tl.program_id(0), tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)  # batch x cache stride reaches 1.2e9 at 64 x 32k: 56% of int32
    n_splits = tl.num_programs(1)
    rows = row_block * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < n_rows
    last_key = kv_len - q_len + rows // n_heads  # row = query * n_heads + head; causal per query
    r, e = tl.arange(0, RANK), tl.arange(0, ROPE)
    q_latent = tl.load(QLatent + (batch * n_rows + rows)[:, None] * RANK + r[None, :], mask=row_ok[:, None], other=0.0)
    q_pe = tl.load(QPe + (batch * n_rows + rows)[:, None] * ROPE + e[None, :], mask=row_ok[:, None], other=0.0)

    m_i = tl.zeros([BLOCK_H], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, RANK], dtype=tl.float32)
    start = split * split_len
    end = tl.minimum(start + split_len, kv_len)
    for first in range(start, end, BLOCK_N):
        keys = first + tl.arange(0, BLOCK_N)
        key_ok = keys < end
        row_ptr = Cache + batch * stride_cache_b + keys[:, None] * stride_cache_s
        latent = tl.load(row_ptr + r[None, :], mask=key_ok[:, None], other=0.0)
        k_pe = tl.load(row_ptr + RANK + e[None, :], mask=key_ok[:, None], other=0.0)
        s = tl.dot(q_latent, tl.trans(latent)) + tl.dot(q_pe, tl.trans(k_pe))
        s = tl.where(key_ok[None, :] & (keys[None, :] <= last_key[:, None]), s * scale_log2, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, latent, m_i, l_i, acc)
    part = (batch * n_splits + split) * n_rows + rows
    tl.store(PartOut + part[:, None] * RANK + r[None, :], acc, mask=row_ok[:, None])
    tl.store(PartMax + part, m_i, mask=row_ok)
    tl.store(PartSum + part, l_i, mask=row_ok)


@triton.jit
def merge_splits(
    PartOut, PartMax, PartSum, Out, n_rows, n_splits,
    RANK: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """One (row block, sequence): the splits' partial states rescaled to their common max and summed."""
    row_block, batch = tl.program_id(0), tl.program_id(1)
    rows = row_block * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < n_rows
    r = tl.arange(0, RANK)
    m_max = tl.zeros([BLOCK_H], dtype=tl.float32) - float("inf")
    for split in range(n_splits):
        part = (batch * n_splits + split) * n_rows + rows
        m_max = tl.maximum(m_max, tl.load(PartMax + part, mask=row_ok, other=float("-inf")))
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    total = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, RANK], dtype=tl.float32)
    for split in range(n_splits):
        part = (batch * n_splits + split) * n_rows + rows
        weight = tl.exp2(tl.load(PartMax + part, mask=row_ok, other=float("-inf")) - m_safe)
        total += weight * tl.load(PartSum + part, mask=row_ok, other=0.0)
        acc += weight[:, None] * tl.load(PartOut + part[:, None] * RANK + r[None, :], mask=row_ok[:, None], other=0.0)
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    tl.store(Out + (batch * n_rows + rows)[:, None] * RANK + r[None, :], out.to(Out.dtype.element_ty),
             mask=row_ok[:, None])


# Tiles tried on the GPU: 32 or 64 heads a row block, 32 or 64 keys a cache tile. A 64-head block
# holds a 64 x 512 float32 accumulator (128 registers a thread at 8 warps). 64 x 64 in two stages
# (147 KB of cache tiles in shared memory) was the fastest of tools/probe_mla.py's 11 on an H200 at
# b64 x 8k: 0.531 ms against 0.613 for the autotuned pick of the first four, split 3 ways.
CONFIGS = [triton.Config({"BLOCK_H": h, "BLOCK_N": n}, num_warps=w, num_stages=st)
           for h, n, w, st in ((64, 32, 8, 1), (64, 64, 8, 1), (64, 64, 8, 2), (32, 64, 4, 2), (32, 32, 4, 2))]
INTERPRETER_CONFIG = {"BLOCK_H": 16, "BLOCK_N": 16}  # the interpreter: small tiles, odd lengths in the tests
MERGE_BLOCK_H = 16
_tuned_partial = triton.autotune(configs=CONFIGS, key=["n_rows", "kv_len", "split_len"], cache_results=True)(
    _partial_kernel)


def plan_splits(batch, n_rows, kv_len, device):
    """How many ranges the cache is split into: enough programs for PROGRAMS_PER_SM on every SM,
    none shorter than MIN_SPLIT_KEYS keys."""
    sms = multiprocessors(device)
    programs = batch * math.ceil(n_rows / ROWS_PER_PROGRAM)
    return max(1, min(round(PROGRAMS_PER_SM * sms / programs), math.ceil(kv_len / MIN_SPLIT_KEYS)))


def decode_launcher(q_nope, q_pe, cache, w_uk, w_uv, *, scale, n_splits=None):
    """A launch of the absorbed attention: `launcher()` returns (B, H, Sq, v_head) in q's dtype.
    q_nope (B, H, Sq, qk_nope), q_pe (B, H, Sq, rope), cache (B, Skv, rank + rope) with a contiguous
    last dim, w_uk (H, qk_nope, rank), w_uv (H, v_head, rank). Rank and rope must be powers of two."""
    batch, heads, q_len, _ = q_nope.shape
    kv_len, rank = cache.shape[1], w_uk.shape[-1]
    rope = q_pe.shape[-1]
    if cache.shape[-1] != rank + rope or cache.stride(-1) != 1:
        raise ValueError(f"the cache rows must be {rank} + {rope} contiguous values, not {tuple(cache.shape)}")
    if rank & (rank - 1) or rope & (rope - 1):
        raise ValueError(f"rank {rank} and rope {rope} must be powers of two")
    n_rows = q_len * heads
    n_splits = n_splits or plan_splits(batch, n_rows, kv_len, cache.device)
    # whole tiles of 64 keys a split (every tuned BLOCK_N divides 64): no split starts mid-tile
    align = SPLIT_ALIGN if cache.is_cuda else INTERPRETER_CONFIG["BLOCK_N"]
    split_len = math.ceil(kv_len / n_splits / align) * align
    n_splits = math.ceil(kv_len / split_len)
    part_out = torch.empty(batch, n_splits, n_rows, rank, device=cache.device, dtype=torch.float32)
    part_max = torch.empty(batch, n_splits, n_rows, device=cache.device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    sizes = (cache.stride(0), cache.stride(1), n_rows, heads, q_len, kv_len, split_len, scale * LOG2E)
    if cache.is_cuda:
        partial = _tuned_partial[lambda meta: (triton.cdiv(n_rows, meta["BLOCK_H"]), n_splits, batch)]
        tiles = {}
    else:
        partial = _partial_kernel[(triton.cdiv(n_rows, INTERPRETER_CONFIG["BLOCK_H"]), n_splits, batch)]
        tiles = INTERPRETER_CONFIG
    merge = merge_splits[(triton.cdiv(n_rows, MERGE_BLOCK_H), batch)]

    def launcher():
        # rows are query-major (row = query * H + head), as the kernels index them
        q_latent = torch.einsum("bhqd,hdr->bqhr", q_nope, w_uk).contiguous()
        q_rope = q_pe.transpose(1, 2).contiguous()
        partial(q_latent, q_rope, cache, part_out, part_max, part_sum, *sizes, RANK=rank, ROPE=rope, **tiles)
        out_latent = torch.empty(batch, q_len, heads, rank, device=cache.device, dtype=q_nope.dtype)
        merge(part_out, part_max, part_sum, out_latent, n_rows, n_splits, RANK=rank, BLOCK_H=MERGE_BLOCK_H)
        return torch.einsum("bqhr,hdr->bhqd", out_latent, w_uv)

    launcher.n_splits = n_splits
    return launcher


def prepare_function(variant, problem):
    """Our decode as a function of any queries and cache of the problem's shapes (a block's), with the
    problem's up-projections; tuned here, on the problem's own tensors."""
    first = decode_launcher(problem.q_nope, problem.q_pe, problem.cache, problem.w_uk, problem.w_uv,
                            scale=problem.scale)
    first()

    def attend(q_nope, q_pe, cache):
        return decode_launcher(q_nope, q_pe, cache, problem.w_uk, problem.w_uv, scale=problem.scale)()

    attend.backend = f"triton ({first.n_splits} splits)"
    return attend


def prepare(variant, problem):
    """The catalog's entry point: launches (and on CUDA autotunes) once, returns the launch-only call."""
    launcher = decode_launcher(problem.q_nope, problem.q_pe, problem.cache, problem.w_uk, problem.w_uv,
                               scale=problem.scale)
    launcher()
    launcher.backend = f"triton ({launcher.n_splits} splits)"
    return launcher
