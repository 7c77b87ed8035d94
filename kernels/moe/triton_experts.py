"""Our grouped expert GEMMs: every routed row through its expert's SwiGLU in two kernels over the rows
in expert order, silu(gate) * up fused into the first one's epilogue.

Why: at DeepSeek-V3 prefill on an H200 (4096 tokens x top-8 = 32768 routed rows over 256 experts, zipf
load, dim 7168, ffn 2048, bfloat16) our layer took 14.15 ms, torch._grouped_mm's two calls 11.28 ms of
it. Reading every expert's weights once (w13 and w2, 22.5 GB) takes 5.3 ms at 4.23 TB/s, the FLOPs
3.8 ms at 756 TFLOP/s: at ~128 rows an expert the products stream weights. So here each weight tile is
read once per expert, and gate and up never go through memory: the first kernel keeps a gate and an up
accumulator for the same ffn columns and stores only silu(gate) * up, the (R, ffn) hidden rows the
second kernel reads (torch's path writes (R, 2 ffn) and reads it back in an elementwise kernel).

The schedule (_tile), on the device with no host synchronisation: expert e's rows [start, end) (from
the (E,) offsets, the end of each expert's rows) are cdiv(rows, BLOCK_M) m-tiles, where the launch serves
experts of that many rows (`Share`: at prefill gate_up takes the hot experts and the rest in two launches).
Program ids run expert by expert, within an expert n-block by n-block, within an n-block m-tile by m-tile:
the m-tiles that read one weight tile run side by side (its repeated reads of a hot expert hit L2), and an
expert's rows stay in L2 across its n-blocks. Each program finds its tile itself: a running sum of the
experts' m-tiles over E_PAD lanes (1 KB of offsets at 256 experts, against the MBs of weights a tile
streams). The grid is an upper bound, cdiv(R, BLOCK_M) + min(E, R // least) m-tiles over the experts of
`least` rows or more (each leaves at most one partial tile) times the n-blocks; programs past the real
count return at once.

gate_up loads through tensor descriptors (Hopper's copy engine, TMA): one instruction a tile, no
per-thread addresses or masks. Session 19 swept both load paths on an H200 at DeepSeek-V3 prefill in
one lease (do_bench): gate_up 6.215 ms through pointers at this tiling (6.042 at their best), 5.772
through the copy engine; down 3.101 through pointers at its wide tiling, 3.162 through the copy
engine at its best, so down keeps its pointer loads. The experts' w13 is one (E x 2 ffn, dim) matrix to
the descriptor: a tile's rows past the expert's (the next expert's, or zeros past the last row) and
columns past ffn (up's, or the next expert's) are computed and never stored; past dim the copy engine
fills zeros.
"""

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.interpreter import COMPILED


class Tiles(NamedTuple):
    """One launch's tiling: m rows x n columns of output a program, k deep a step, its warps and stages."""

    m: int
    n: int
    k: int
    warps: int
    stages: int


# Chosen on an H200 by tools/sweep_expert_gemm.py (do_bench, each checked against torch._grouped_mm)
# at DeepSeek-V3's zipf loads: prefill (32768 routed rows over 256 experts, 128 an expert on average,
# the hottest 3904) and decode (128 rows, the hottest 14). No autotune: it would re-tune inside timing.
# gate_up, two accumulators, through the copy engine (session 19, 9 tilings): 64 x 128 x 64, 4 warps,
# 4 stages: prefill 5.772 ms, decode 0.476, the best at decode (prefill's best, 128 x 128 x 64 at 8
# warps, 5.749 but decode 0.530); torch's gate|up GEMM 7.557 and 0.686.
GATE_UP_TILES = Tiles(64, 128, 64, 4, 4)
# down: at decode 64 x 128 x 64, 4 warps, 4 stages (0.263 ms, the best of 8; prefill 3.589); at
# prefill 128 x 256 x 64, 8 warps, 3 stages (3.245 ms, the best of 8; decode 0.293). torch's: 3.796
# and 0.373. The wide tile reads each weight tile for twice the rows, where an expert has them.
DOWN_TILES_FEW = Tiles(64, 128, 64, 4, 4)
DOWN_TILES_MANY = Tiles(128, 256, 64, 8, 3)
# Average routed rows an expert from which down takes DOWN_TILES_MANY and gate_up splits its experts into
# SHARES' launches (DeepSeek-V3: prefill 128, decode 0.5; the threshold between is unmeasured).
MANY_ROWS = 64
# Our kernels where the average routed rows an expert is at most this, torch._grouped_mm beyond: large
# experts are compute-bound, where cuBLAS / CUTLASS grouped GEMM is strong. Unmeasured threshold
# (DeepSeek-V3 prefill, 128 an expert, is ours; Mixtral-8x7B prefill, 8192 tokens x 2 / 8 = 2048, torch's).
EXPERT_GEMM_MAX_ROWS = 256


class Share(NamedTuple):
    """The experts one gate_up launch serves, by their rows (least <= rows < most), and its tiling."""

    least: int
    most: int
    tiles: Tiles


EVERY_EXPERT = (1, 2 ** 31 - 1)  # (least, most): an int32 bound past any row count
# Where experts average MANY_ROWS rows or more (prefill), gate_up takes the hot experts and the rest in
# separate launches, each on its own tiles. Hot: an expert whose products take at least as long as its
# weight reads at an H200's peaks, 6 dim ffn rows / 753 TFLOP/s against 3 dim ffn 2 bytes / 4240 GB/s, from
# 178 rows; there 128-row tiles read each weight tile for twice the rows, where the cold experts' few rows
# take 64-row tiles (by the grids' bounds about three fifths of the 19300 programs launched at DeepSeek-V3
# prefill find no tile and return at once). Session 36, H200, DeepSeek-V3 prefill t4k zipf: softmax_topk's
# load has 24 hot experts of 29390 rows (tools/probe_expert_overlap.py); under sigmoid_grouped_topk's the
# profiler's kernel times (tools/probe_kernels.py) read gate_up 5.534 -> 5.382 ms, and down split the same
# way (the cold experts on 64-row tiles) 3.207 ms against one launch's 3.210, so down stays one launch.
HOT_ROWS = 178
SHARES = (Share(HOT_ROWS, EVERY_EXPERT[1], Tiles(128, 128, 64, 8, 3)), Share(EVERY_EXPERT[0], HOT_ROWS, GATE_UP_TILES))


@triton.jit
def _tile(offsets_ptr, pid, least, most, N_BLOCKS: tl.constexpr, N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr,
          BLOCK_M: tl.constexpr):
    """Program `pid`'s tile: (live, expert, its m-tile's first row, the expert's row end, n-block), over
    the experts of least <= rows < most. live is False past their tiles (the grid is an upper bound)."""
    offs_e = tl.arange(0, E_PAD)
    ends = tl.load(offsets_ptr + offs_e, mask=offs_e < N_EXPERTS, other=0)
    starts = tl.load(offsets_ptr + offs_e - 1, mask=(offs_e > 0) & (offs_e < N_EXPERTS), other=0)
    served = (ends - starts >= least) & (ends - starts < most)
    tiles = tl.where(served, (ends - starts + BLOCK_M - 1) // BLOCK_M, 0)  # 0 for the padding too
    tile_ends = tl.cumsum(tiles, 0)
    live = pid < tl.max(tile_ends, 0) * N_BLOCKS
    # the experts whose programs all come before pid (empty ones included) are pid's expert's index
    expert = tl.sum((tile_ends * N_BLOCKS <= pid).to(tl.int32), 0)
    mine = offs_e == expert
    expert_tiles = tl.sum(tl.where(mine, tiles, 0), 0)
    local = pid - tl.sum(tl.where(mine, tile_ends - tiles, 0), 0) * N_BLOCKS
    local = tl.where(live, local, 0)
    expert_tiles = tl.maximum(expert_tiles, 1)  # past the real tiles: no expert, no division by 0
    row = tl.sum(tl.where(mine, starts, 0), 0) + (local % expert_tiles) * BLOCK_M
    return live, expert, row, tl.sum(tl.where(mine, ends, 0), 0), local // expert_tiles


@triton.jit
def _mma(acc, a, b):
    """acc + a @ b in float32."""
    if COMPILED and a.dtype == b.dtype and a.dtype.primitive_bitwidth == 16:
        acc = tl.dot(a, b, acc)  # 16-bit on the tensor cores, products exact in the float32 accumulator
    else:
        # float32 inputs: IEEE, as the float32 reference (TF32 rounds inputs to 10 bits). The
        # interpreter: its 16-bit tl.dot sums wrongly (kernels/interpreter.py).
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return acc


@triton.jit
def _store(ptrs, x, mask):
    """float32 x stored in the pointers' dtype, rounded to nearest. Compiled, the conversion rounds; the
    interpreter's truncates to bfloat16 (triton 3.9: up to an ulp off, twice the rounding's error), so
    there the bits are rounded first (to nearest, ties to even) and the truncation is exact."""
    if not COMPILED:
        if ptrs.dtype.element_ty == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            x = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).to(tl.float32, bitcast=True)
    tl.store(ptrs, x.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _tile_operands(row, row_end, n_block, n_cols, a_ptr, stride_a, w_ptr, expert, stride_we, stride_wn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """A program's rows and output columns (offsets, in-range masks) and the pointers to the first
    element of each of its rows of A and of its expert's weight rows (one per output column)."""
    offs_m = row + tl.arange(0, BLOCK_M)
    offs_n = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * stride_a
    w_ptrs = w_ptr + expert.to(tl.int64) * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn
    return offs_m, offs_n, offs_m < row_end, offs_n < n_cols, a_ptrs, w_ptrs


@triton.jit
def _gate_up_kernel(rows_desc, w13_desc, hidden_ptr, offsets_ptr, dim, ffn, least, most,
                    N_BLOCKS: tl.constexpr, N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """hidden[r, n] = silu(rows[r] . w13[e, n]) * (rows[r] . w13[e, ffn + n]) for the rows r of expert e:
    w13 (E x 2 ffn, dim) holds each expert's gate rows, then its up rows."""
    live, expert, row, row_end, n_block = _tile(offsets_ptr, tl.program_id(0), least, most, N_BLOCKS, N_EXPERTS,
                                                E_PAD, BLOCK_M)
    if live:
        n0 = n_block * BLOCK_N
        gate_row = expert * 2 * ffn + n0
        gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, dim, BLOCK_K):
            a = rows_desc.load([row, k0])
            gate = _mma(gate, a, tl.trans(w13_desc.load([gate_row, k0])))
            up = _mma(up, a, tl.trans(w13_desc.load([gate_row + ffn, k0])))
        # SwiGLU on the float32 sums, rounded once to the rows' dtype. torch's path (and the reference
        # in bfloat16) rounds gate and up to bfloat16 first, then silu's output, then the product: we
        # skip those three roundings, so we sit closer to the float64 reference than the bfloat16
        # reference does, and the check's tolerance (4x the bfloat16 reference's own error against
        # float64, variantbench/cases.py check_output) allows four times that reference's error.
        offs_m, offs_n = row + tl.arange(0, BLOCK_M), n0 + tl.arange(0, BLOCK_N)
        _store(hidden_ptr + offs_m.to(tl.int64)[:, None] * ffn + offs_n[None, :], gate * tl.sigmoid(gate) * up,
               (offs_m < row_end)[:, None] & (offs_n < ffn)[None, :])


@triton.jit
def _down_kernel(hidden_ptr, w2_ptr, out_ptr, offsets_ptr, dim, ffn, stride_h, stride_we, stride_wn, least, most,
                 N_BLOCKS: tl.constexpr, N_EXPERTS: tl.constexpr, E_PAD: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[r, n] = hidden[r] . w2[e, n] for the rows r of expert e: w2 (E, dim, ffn)."""
    live, expert, row, row_end, n_block = _tile(offsets_ptr, tl.program_id(0), least, most, N_BLOCKS, N_EXPERTS,
                                                E_PAD, BLOCK_M)
    if live:
        offs_m, offs_n, in_m, in_n, a_ptrs, w_ptrs = _tile_operands(
            row, row_end, n_block, dim, hidden_ptr, stride_h, w2_ptr, expert, stride_we, stride_wn, BLOCK_M, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, ffn, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            in_k = offs_k[None, :] < ffn
            a = tl.load(a_ptrs + offs_k[None, :], mask=in_m[:, None] & in_k, other=0.0)
            w = tl.load(w_ptrs + offs_k[None, :], mask=in_n[:, None] & in_k, other=0.0)
            acc = _mma(acc, a, tl.trans(w))
        _store(out_ptr + offs_m.to(tl.int64)[:, None] * dim + offs_n[None, :], acc, in_m[:, None] & in_n[None, :])


def serves(rows, w13, w2):
    """Whether our kernels take these experts: few rows an expert on average (EXPERT_GEMM_MAX_ROWS, from
    the row count the host knows, no synchronisation) and operands they can read (_refusal). They have
    no backward, and need none: the triton layer is forward-only (its permute and unpermute are Triton
    launches outside autograd; the catalog's backward=False, and a trained block refuses it).
    torch._grouped_mm takes the rest."""
    return rows.shape[0] <= EXPERT_GEMM_MAX_ROWS * w13.shape[0] and _refusal(rows, w13, w2) is None


def _refusal(rows, w13, w2=None):
    """None, or in one line why our kernels cannot read these operands. gate_up reads rows and w13
    through the copy engine (tensor descriptors): a 16-byte-aligned base, the last dim contiguous and
    every other stride a multiple of 16 bytes, and w13 contiguous (its experts seen as one matrix of
    E x 2 ffn rows). down steps along w2's last dim by one. On the GPU the tiles are sized for 16-bit
    operands: float32's take 320 KB of shared memory a gate_up program at 4 stages, where an sm_90 SM has
    227 KB."""
    for name, t in (("rows", rows), ("w13", w13)):
        if t.stride(-1) != 1:
            return f"expert GEMM operand {name} needs its last dim contiguous, not strides {t.stride()}"
        if t.data_ptr() % 16:
            return f"expert GEMM operand {name} needs a 16-byte-aligned base address, not one {t.data_ptr() % 16} past"
        if any(stride * t.element_size() % 16 for stride in t.stride()[:-1]):
            return (f"expert GEMM operand {name} needs strides that are multiples of 16 bytes, not "
                    f"{[stride * t.element_size() for stride in t.stride()[:-1]]} bytes")
    if not w13.is_contiguous():
        return f"expert GEMM operand w13 must be contiguous, not strides {w13.stride()}"
    if w2 is not None and w2.stride(-1) != 1:
        return f"expert GEMM operand w2 needs its last dim contiguous, not strides {w2.stride()}"
    for t in (rows, w13, w2):
        if t is not None and t.is_cuda and t.element_size() > 2:
            return f"our expert GEMMs take 16-bit operands on the GPU, not {t.dtype}"
    return None


def _grid(n_rows, n_experts, n_cols, tiles, least=EVERY_EXPERT[0]):
    """(programs, n-blocks): the schedule's upper bound on programs (module docstring), over experts of
    `least` rows or more: at most n_rows // least of them, each leaving at most one partial tile; none
    where no expert can have `least` rows."""
    n_blocks = triton.cdiv(n_cols, tiles.n)
    if n_rows < least:
        return 0, n_blocks
    return (triton.cdiv(n_rows, tiles.m) + min(n_experts, n_rows // least)) * n_blocks, n_blocks


def _launch(tiles, device):
    """The kernels' tile constexprs, and on a GPU their warps and stages (the interpreter takes none)."""
    sizes = {"BLOCK_M": tiles.m, "BLOCK_N": tiles.n, "BLOCK_K": tiles.k}
    return {**sizes, "num_warps": tiles.warps, "num_stages": tiles.stages} if device.type == "cuda" else sizes


def _check_down(hidden, w2):
    """down steps along K by 1 (nn.Linear's layout, as checkpoints store the experts); on the GPU its
    tiles are sized for 16-bit operands (float32's take 288 KB of shared memory at DOWN_TILES_MANY)."""
    for t in (hidden, w2):
        if t.stride(-1) != 1:
            raise ValueError(f"expert GEMM operands need their last dim contiguous, not strides {t.stride()}")
    for t in (hidden, w2):
        if t.is_cuda and t.element_size() > 2:
            raise ValueError(f"our expert GEMMs take 16-bit operands on the GPU, not {t.dtype}")


def _output(out, n_rows, n_cols, like):
    """out, checked to be the (n_rows, n_cols) contiguous rows a launch writes, or a new one."""
    if out is None:
        return torch.empty(n_rows, n_cols, dtype=like.dtype, device=like.device)
    if out.shape != (n_rows, n_cols) or out.dtype != like.dtype or out.device != like.device or not out.is_contiguous():
        raise ValueError(f"out must be contiguous ({n_rows}, {n_cols}) {like.dtype} on {like.device}, not "
                         f"{tuple(out.shape)} {out.dtype} on {out.device} (strides {out.stride()})")
    return out


def gate_up(rows, w13, offsets, tiles=GATE_UP_TILES, *, serving=EVERY_EXPERT, out=None):
    """(R, ffn) silu(gate) * up in rows' dtype: rows (R, dim) in expert order, w13 (E, 2 ffn, dim),
    offsets (E,) int32 the end of each expert's rows. serving (least, most): only the rows of experts with
    least <= rows < most are written (into out, if given); least at least 1 (an empty expert has no rows)."""
    (n_rows, dim), (n_experts, two_ffn, _) = rows.shape, w13.shape
    why = _refusal(rows, w13)
    if why:
        raise ValueError(why)
    if not 1 <= serving[0] <= serving[1] <= EVERY_EXPERT[1]:
        raise ValueError(f"serving must be (least, most) with 1 <= least <= most <= {EVERY_EXPERT[1]}, not {serving}")
    hidden = _output(out, n_rows, two_ffn // 2, rows)
    programs, n_blocks = _grid(n_rows, n_experts, two_ffn // 2, tiles, serving[0])
    if programs:
        rows_desc = TensorDescriptor.from_tensor(rows, [tiles.m, tiles.k])
        w13_desc = TensorDescriptor.from_tensor(w13.view(-1, dim), [tiles.n, tiles.k])
        _gate_up_kernel[(programs,)](
            rows_desc, w13_desc, hidden, offsets, dim, two_ffn // 2, *serving, N_BLOCKS=n_blocks,
            N_EXPERTS=n_experts, E_PAD=triton.next_power_of_2(n_experts), **_launch(tiles, rows.device))
    return hidden


def down_tiles(n_rows, n_experts):
    """down's tiling for n_rows routed rows over n_experts (MANY_ROWS)."""
    return DOWN_TILES_MANY if n_rows >= MANY_ROWS * n_experts else DOWN_TILES_FEW


def down(hidden, w2, offsets, tiles=None):
    """(R, dim) hidden @ w2[e].T for each expert e's rows, in hidden's dtype: w2 (E, dim, ffn).
    tiles: down_tiles' choice by default."""
    (n_rows, ffn), (n_experts, dim, _) = hidden.shape, w2.shape
    _check_down(hidden, w2)
    tiles = tiles or down_tiles(n_rows, n_experts)
    out = torch.empty(n_rows, dim, dtype=hidden.dtype, device=hidden.device)
    programs, n_blocks = _grid(n_rows, n_experts, dim, tiles)
    if programs:
        _down_kernel[(programs,)](
            # every expert: the bounds are _tile's, which gate_up's shares use
            hidden, w2, out, offsets, dim, ffn, hidden.stride(0), w2.stride(0), w2.stride(1), *EVERY_EXPERT,
            N_BLOCKS=n_blocks, N_EXPERTS=n_experts, E_PAD=triton.next_power_of_2(n_experts),
            **_launch(tiles, hidden.device))
    return out


def experts(rows, w13, w2, offsets):
    """(R, dim) each routed row through its expert's SwiGLU, rows in expert order: gate_up in one launch
    where experts average few rows, else in SHARES' launches; down in one."""
    n_rows, n_experts = rows.shape[0], w13.shape[0]
    if n_rows < MANY_ROWS * n_experts:
        hidden = gate_up(rows, w13, offsets)
    else:
        hidden = _output(None, n_rows, w13.shape[1] // 2, rows)
        for share in SHARES:
            gate_up(rows, w13, offsets, share.tiles, serving=(share.least, share.most), out=hidden)
    return down(hidden, w2, offsets)
