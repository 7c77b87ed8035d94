"""Our paged decode kernel: GQA decode reading keys and values through the page table, split over the
cache (flash-decoding), partial states merged by kernels/mla/triton_decode.py's `merge_splits`.

A program is one (sequence, KV head, split): its rows are the KV head's query heads (4 for Llama-3-8B,
padded to a 16-row tile, the smallest a dot takes), its keys the split's range of the sequence's
logical positions, each tile of them found page by page: pool position = table[pos // page] * page +
pos % page. Batch 1 over 128k has only 8 (sequence, KV head) pairs, so the split count fills the GPU
(a plan's programs per SM); a split past a short sequence's end reads nothing.

The launch plan (programs per SM, keys a tile, warps, pipeline stages) is measured, not fixed: on a
GPU, `prepare` times each of CANDIDATES once on the problem's own tensors (`tune_plan`) and keeps the
fastest, which `launcher.plan` and `launcher.backend` name. Session 8's fixed plan is DEFAULT_PLAN,
one of the candidates, so tuning can only gain, up to the timing's noise. tools/probe_paged.py
prints every candidate's time against the copy peak.
"""

import math
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

from kernels import tuned_choices
from kernels.mla.triton_decode import MIN_SPLIT_KEYS, merge_splits, online_softmax_step
from variantbench.device import multiprocessors

ROWS = 16  # the query heads of a KV head, padded to a dot's smallest M


@triton.jit
def _paged_partial_kernel(
    Q, KPool, VPool, Table, Lens, PartOut, PartMax, PartSum,
    stride_qb, stride_qh, stride_pool_h, stride_pool_s, stride_table,
    n_kv_heads, group, page_size, split_len, scale_log2,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    sequence_head, split = tl.program_id(0), tl.program_id(1)
    n_splits = tl.num_programs(1)
    batch, kv_head = sequence_head // n_kv_heads, sequence_head % n_kv_heads
    rows = tl.arange(0, ROWS)
    row_ok = rows < group
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + batch * stride_qb + (kv_head * group + rows)[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None], other=0.0)
    length = tl.load(Lens + batch)
    start = split * split_len
    end = tl.minimum(start + split_len, length)
    m_i = tl.zeros([ROWS], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
    for first in range(start, end, BLOCK_N):
        logical = first + tl.arange(0, BLOCK_N)
        key_ok = logical < end
        page = tl.load(Table + batch * stride_table + logical // page_size, mask=key_ok, other=0)
        position = page * page_size + logical % page_size
        offs = kv_head * stride_pool_h + position[:, None] * stride_pool_s + d[None, :]
        k = tl.load(KPool + offs, mask=key_ok[:, None], other=0.0)
        v = tl.load(VPool + offs, mask=key_ok[:, None], other=0.0)
        s = tl.where(key_ok[None, :], tl.dot(q, tl.trans(k)) * scale_log2, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc)
    part = (sequence_head * n_splits + split) * ROWS + rows
    tl.store(PartOut + part[:, None] * HEAD_DIM + d[None, :], acc)
    tl.store(PartMax + part, m_i)
    tl.store(PartSum + part, l_i)


@dataclass(frozen=True)
class Plan:
    """How a decode launches: `programs_per_sm` sets the split count (plan_splits), `block_n` the keys
    a tile, `num_warps` and `num_stages` the partial kernel's warps and software-pipeline depth."""

    programs_per_sm: int
    block_n: int
    num_warps: int
    num_stages: int

    def __str__(self):
        return f"{self.programs_per_sm}/SM N{self.block_n} w{self.num_warps} s{self.num_stages}"


# Session 8's fixed plan: batch 1 over 128k keys with 8 KV heads in 33 splits on an H200's 132 SMs,
# 0.193 ms (~2780 GB/s, 65% of the 4240 GB/s copy peak; SDPA 0.156). At batch 64 x 8k it is one split,
# 0.5125 ms (99% of the peak). Its own figure: MLA's decode aims at one wave, paged's tiles are smaller.
DEFAULT_PLAN = Plan(programs_per_sm=2, block_n=64, num_warps=4, num_stages=2)
# The interpreter (CPU tests): 16 keys a tile, so tiles there cross several small pages; never timed.
INTERPRETER_PLAN = replace(DEFAULT_PLAN, block_n=16)

# What the tuner tries: more bytes in flight than session 8's plan, which at batch 1 streams ~2 MB a
# program with 2 programs an SM. A program's shared memory is about num_stages x BLOCK_N keys x (K + V)
# x 128 x 2 bytes at Llama-3-8B's head dim: (key tile, warps, stages) below is 64, 96, 128, 128 and
# 192 KB, of an H200's 227 KB a block (3, 2, 1, 1, 1 programs resident an SM). The deeper ones fetch
# 2-3 tiles ahead, the 128-key ones halve the loop's trips (each a page-table load before its K/V
# loads). Programs per SM 2, 4, 8 split batch 1 x 128k into 33, 66, 132 ranges and batch 64 x 8k
# into 1, 2, 3. 15 plans, 5 compiled kernels (the split count is a runtime argument).
TILES = ((64, 4, 2), (64, 4, 3), (64, 8, 4), (128, 4, 2), (128, 8, 3))
CANDIDATES = tuple(Plan(programs_per_sm, block_n, num_warps, num_stages)
                   for programs_per_sm in (2, 4, 8) for block_n, num_warps, num_stages in TILES)

# The tuner's do_bench budget a plan: 1 ms of warm-up and 5 of timed calls (an L2 flush before each),
# ~25 calls of batch 1 x 128k (~0.2 ms), ~9 of batch 64 x 8k (~0.5 ms); with do_bench's 6 estimating
# calls about 10 ms a plan, 0.15 s of GPU time for the 15 at prepare, compiles aside (Triton caches
# them on disk). Both shapes move 0.5-2 GB, far past an H200's 50 MB L2: flushed or not, a call reads
# its cache from HBM, as in the suite's timing.
TUNE_WARMUP_MS, TUNE_REP_MS = 1, 5


def plan_splits(batch, n_kv_heads, longest, device, programs_per_sm=DEFAULT_PLAN.programs_per_sm):
    """Ranges each sequence's keys split into: `programs_per_sm` programs on every SM, none shorter
    than MIN_SPLIT_KEYS keys."""
    sms = multiprocessors(device)
    return max(1, min(math.ceil(programs_per_sm * sms / (batch * n_kv_heads)), math.ceil(longest / MIN_SPLIT_KEYS)))


def paged_launcher(q, k_pool, v_pool, page_table, seq_lens, page_size, *, plan=None, n_splits=None, block_n=None):
    """A launch of paged decode: `launcher()` returns (B, Hq, 1, D). q (B, Hq, 1, D); pools (1, Hkv,
    pages x page_size, D) with a contiguous head dim; page_table (B, max pages) int32; seq_lens (B,).
    `plan` defaults to DEFAULT_PLAN on a GPU, INTERPRETER_PLAN on the CPU; `n_splits` and `block_n`,
    where given, override its split count and key tile. The launcher keeps `plan`, `n_splits` and
    `launch_key` (what it launches: two plans of one key run alike)."""
    batch, n_q_heads, _, head_dim = q.shape
    n_kv_heads = k_pool.shape[1]
    group = n_q_heads // n_kv_heads
    if group > ROWS:
        raise ValueError(f"{group} query heads per KV head: at most {ROWS}")
    if k_pool.stride() != v_pool.stride() or k_pool.stride(-1) != 1:
        raise ValueError("the key and value pools need one layout with a contiguous head dim")
    plan = plan or (DEFAULT_PLAN if q.is_cuda else INTERPRETER_PLAN)
    plan = replace(plan, block_n=block_n or plan.block_n)
    longest = int(seq_lens.max())
    n_splits = n_splits or plan_splits(batch, n_kv_heads, longest, q.device, plan.programs_per_sm)
    split_len = math.ceil(longest / n_splits / plan.block_n) * plan.block_n  # whole tiles: no split starts mid-tile
    n_splits = math.ceil(longest / split_len)
    programs = batch * n_kv_heads
    part_out = torch.empty(programs, n_splits, ROWS, head_dim, device=q.device, dtype=torch.float32)
    part_max = torch.empty(programs, n_splits, ROWS, device=q.device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    table, lens = page_table.to(torch.int32).contiguous(), seq_lens.to(torch.int32).contiguous()
    partial = _paged_partial_kernel[(programs, n_splits)]
    merge = merge_splits[(1, programs)]
    # The merge reads only the group's rows of each split's 16 (4 of them for Llama-3-8B: a quarter of
    # the bytes); the rest of `out` is padding the launcher slices off. At batch 1 its 8 programs walk
    # every split one after another, 33 to 132 of them, the plan tuner's longest.
    merged_rows = triton.next_power_of_2(group)

    def launcher():
        partial(q, k_pool, v_pool, table, lens, part_out, part_max, part_sum,
                q.stride(0), q.stride(1), k_pool.stride(1), k_pool.stride(2), table.stride(0),
                n_kv_heads, group, page_size, split_len, head_dim ** -0.5 * 1.4426950408889634,
                HEAD_DIM=head_dim, ROWS=ROWS, BLOCK_N=plan.block_n,
                num_warps=plan.num_warps, num_stages=plan.num_stages)
        out = torch.empty(programs, ROWS, head_dim, device=q.device, dtype=q.dtype)
        merge(part_out, part_max, part_sum, out, ROWS, n_splits, RANK=head_dim, BLOCK_H=merged_rows)
        return out[:, :group].reshape(batch, n_q_heads, 1, head_dim)

    launcher.plan, launcher.n_splits = plan, n_splits
    launcher.launch_key = (n_splits, split_len, plan.block_n, plan.num_warps, plan.num_stages)
    return launcher


def bench_ms(launcher):
    """A launch's median ms over a short do_bench: the tuner's clock."""
    return do_bench(launcher, warmup=TUNE_WARMUP_MS, rep=TUNE_REP_MS, return_mode="median")


def fastest(timings):
    """The plan of least ms in {plan: ms}; of equal times the first timed (DEFAULT_PLAN leads CANDIDATES)."""
    return min(timings, key=timings.get)


def tune_plan(build, candidates=CANDIDATES, time=bench_ms):
    """(the fastest plan, {plan: ms} of those timed), like triton.autotune over our split plan.
    `build(plan)` makes a launcher, `time(launcher)` gives its ms. A plan that launches as one timed
    before (at a short cache every programs-per-SM hits the MIN_SPLIT_KEYS cap) is not timed again; one
    whose tiles overflow the GPU's shared memory (192 KB against an A100's 163) is left out."""
    timings, launched = {}, set()
    for plan in candidates:
        launcher = build(plan)
        if launcher.launch_key in launched:
            continue
        launched.add(launcher.launch_key)
        try:
            timings[plan] = time(launcher)
        except OutOfResources:
            continue
    return fastest(timings), timings


PLANS_BY_NAME = {str(plan): plan for plan in CANDIDATES}
SOURCE_HASH = tuned_choices.source_hash(__file__)  # every candidate and the kernel are in this file


def remembered_plan(path, build, time=bench_ms):
    """(plan, how it was chosen): the plan this machine chose before under `path`
    (kernels/tuned_choices.py), else the fastest of CANDIDATES now, filed there: every process tuning
    afresh would let two plans within the timing's noise win by turns, and the figure with them."""
    plan = PLANS_BY_NAME.get(tuned_choices.recalled(path))
    if plan is not None:
        return plan, "this machine's choice"
    plan, timings = tune_plan(build, time=time)
    tuned_choices.keep(path, str(plan), {"plan": plan})
    return plan, f"fastest of {len(timings)} plans"


def _choice_path(p):
    """The file of a problem's plan: Triton, the GPU, this file's source, and what the plan depends on."""
    batch, n_q_heads, _, head_dim = p.q.shape
    return tuned_choices.choice_path([
        triton.__version__, torch.cuda.get_device_name(p.q.device), SOURCE_HASH, str(p.q.dtype), f"batch={batch}",
        f"heads={n_q_heads}/{p.k_pool.shape[1]}", f"dim={head_dim}", f"page={p.page_size}",
        f"lengths={sorted(p.seq_lens.tolist())}",
    ])


def prepare(variant, problem):
    """The catalog's entry point: on a GPU the plan tuned on the problem (once a machine), on the CPU
    the interpreter's."""
    p = problem

    def build(plan):
        return paged_launcher(p.q, p.k_pool, p.v_pool, p.page_table, p.seq_lens, p.page_size, plan=plan)

    if p.q.is_cuda:
        plan, how = remembered_plan(_choice_path(p), build)
        tuned = f", {how}"
    else:
        plan, tuned = INTERPRETER_PLAN, ""
    launcher = build(plan)
    launcher()
    launcher.backend = f"triton ({plan}, {launcher.n_splits} splits{tuned})"
    return launcher
