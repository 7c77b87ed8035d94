"""Our attention forward in Gluon for Hopper (sm_90): FlashAttention-3's warp-specialised schedule, for every
interval mask and score function of triton_flash.py where the tensors suit it (`refusal`).

Why: Triton 3.6.0 cannot issue the next key tile's q.k before this tile's softmax, and its CTA-wide barriers idle
the tensor cores through every softmax; Gluon exposes asynchronous warpgroup MMAs, TMA and warp specialisation. H200
(session 23, do_bench, causal gqa_8, llama-3-8b-s4k): 1.0193 ms, cuDNN 1.0219, our Triton forward 1.1518.

The schedule, FlashAttention-3's: a work item is 128 query rows of one head (or, packed, of several), and a persistent
program (one an SM) takes items pid, pid + programs, ..., a KV head's query heads together, each head's last row block
first (`_item`), or under the document mask, whose walks follow the documents, claims each as it comes free (`claim`)
from items that start at their documents' starts (`document_items`), each 128 / pack positions of `pack` query heads
of one KV head (`document_pack`). For each, one producer warp loads each consumer's 64 query rows, then K and V tile
by tile into rings of STAGES slots (a slot refilled once both consumers have released it, through mbarriers: no CTA
barrier anywhere in the loop). Two consumer warpgroups of four warps each own 64 rows and run apart, so one's
softmax can overlap the other's products; within each, FlashAttention-3's order issues S_j = Q K_j^T with P_{j-1}
V_{j-1} and waits for S_j alone before S_j's softmax. The two taking turns at their products (FlashAttention-3's
ping-pong) measured slower (session 25, H200: causal 1.0288 against 1.0023 ms): each turn's wait and arrive syncs.
Persistence is for the short walks: the next item's key tiles load during the last P V (gated on an H200 against one
program a row block, session 25: sliding_window_1024 faster 0.951, the rest the same), and each consumer holds two
items' query tiles, so the next item's rows load during this walk and each output leaves through its own item's tile
(released one S and softmax into the next item, its store gone). Measured on an H200 (session 29, do_bench,
llama-3-8b-s4k): sliding_window_1024 0.5112, 0.5134 -> 0.4907, 0.4890 ms, causal 0.9454 -> 0.9340; gated same at six
forwards, the window 0.968 (gate/q-ring-h200.md).

A softcap forward that fills no lse runs exp2 without a running max (gluon_softmax.bounded_softcap; session 25, H200:
softcap_50 1.1878 -> 1.1315 ms), its row sums the tensor cores' (`issue_pv`; session 28: 1.0878 -> 1.0443 ms). Masks
are triton_flash's intervals, every bound growing with the query position, so an item's first and last rows bound its
walk and tiles every row sees whole skip the test; producer and consumers walk the same tiles in one order (the rings'
release counts rely on it), a packed document item's diagonal first at half width (`takes_half_diagonal`). DSA's
selection masks every tile by its bits instead (gluon_selection.py). ptxas (sm_90) issues the wait for P_{j-1} V_{j-1}
ahead of the softmax's exp2s, and rescaling the output with S_{j+1} in flight serialises every MMA (C7514, session 22):
the overlap is between consumers.

Scope: 16-bit q, k, v of shape (B, H, S, 128), strides the copy engine takes, Sq == Skv a multiple of 128, grouped
heads. It fills lse (log2 units, as triton_flash's) for our backward.
"""

import functools
import os

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from kernels.attention.gluon_rings import ones_tiles, query_tile, ring, store_rows
from kernels.attention.gluon_selection import checked_words, load_words
from kernels.attention.gluon_softmax import (LOG2E, _softmax, alibi_columns, alibi_keys, alibi_lse, alibi_rows,
                                            bounded_softcap, fold_tanh_scale, half_diagonal, issue_pv, issue_s,
                                            row_sums_zero)
from kernels.attention.gluon_walk import (_item, checked_items, document_pack, document_work, producer, take,
                                         takes_half_diagonal)
# the masks' key intervals: a Triton function, which Gluon calls as its own
from kernels.attention.triton_flash import _bounds, doc_start_arg, score_refusal

BLOCK_M = 128  # query rows a program: two consumer warpgroups of 64
BLOCK_N = 128  # keys a tile
STAGES = 2  # K and V tiles in flight each
WARPS = 4  # the default partition's: the first consumer
# registers a thread: the second consumer's and the producer's (the first consumer takes what is left
# of MAX_REGISTERS x 12 warps x 32 threads)
CONSUMER_REGISTERS, PRODUCER_REGISTERS, MAX_REGISTERS = 232, 24, 168


@gluon.jit
def _consumer(descs, bars, bufs, work, scores, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
              PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr,
              BOUNDED: gl.constexpr, HALVES: gl.constexpr, SELECTION: gl.constexpr, HALF: gl.constexpr):
    """Four warps, one warpgroup: for each of the program's work items (under the document mask, the one
    the producer hands it, its number read once the query tile is in), 64 query rows (half HALF of the
    item's 128) through every key tile of its walk, then their output through the copy engine (from the
    item's query tile, every S done; a document's last item's rows of the next document are not stored, so
    its rows go out masked) and their lse. The last item's query tile is released after this item's first
    tile, its output's store gone, so the producer loads the item after this one's rows during this walk:
    with one query tile a consumer, the next item's rows began to load only once the walk's last S was done."""
    q_desc, k_desc, v_desc, o_desc = descs
    q_bars, q_empty, keys, values = bars
    k_ring, k_ready, k_empty = keys
    v_ring, v_ready, v_empty = values
    q_tiles, claimed, ones, alibi_b = bufs
    Claims, n_items, n_blocks, n_head_rows, n_q_heads, n_kv_heads = work
    Lse, sm_scale, softcap, Out, stride_b, stride_h, stride_s, Selection = scores
    seq, DocStart = masks[0], masks[3]
    STAGES: gl.constexpr = k_ring.shape[0]
    PACK: gl.constexpr = q_desc.block_type.shape[1]  # query heads a tile holds (`document_pack`)
    POSITIONS: gl.constexpr = q_desc.block_type.shape[2]  # positions of each
    HALF_M: gl.constexpr = PACK * POSITIONS  # the consumer's rows: 64
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, TILE_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    # the bias through the tensor cores (`alibi_rows`): the condition `_attention_forward` fills their tile on
    ALIBI_MMA: gl.constexpr = ALIBI and not SOFTCAP
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    if SOFTCAP:
        to_log2 = softcap * LOG2E
    else:
        to_log2 = sm_scale * LOG2E
    s_zero = gl.zeros([HALF_M, TILE_N], gl.float32, layout=s_layout)

    loaded = 0  # key tiles through the rings so far
    rounds = 0  # items started
    if DOCUMENTS:
        mbarrier.wait(q_bars.index(HALF), 0)
        item = take(claimed.index(HALF))
    else:
        item = gl.program_id(0)
    while item < n_items:
        q_index, q_phase = query_tile(rounds, HALF)  # this item's query tile, then its output's
        q_tile = q_tiles.index(q_index)
        q_smem = q_tile.reshape([HALF_M, HEAD_DIM])  # the copy engine's (1, heads, positions, 128) tile
        batch, q_head, kv_head, head_row, q_pos0, key0, n_tiles, unmasked_lo, unmasked_hi = _item(
            item, n_blocks, n_q_heads, n_kv_heads, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, HALF_M, PACK,
            TILE_N)
        row0 = q_pos0 + HALF * POSITIONS
        offsets = gl.arange(0, HALF_M, layout=gl.SliceLayout(1, s_layout))
        rows = row0 + offsets % POSITIONS  # each row's query position (its head: q_head + offsets // POSITIONS)
        slope, bias = alibi_columns(q_head, n_q_heads, TILE_N, gl.SliceLayout(0, s_layout), ALIBI, SOFTCAP)
        alibi_a = alibi_rows(slope, to_log2, q_desc.dtype, HALF_M,
                             gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2), ALIBI_MMA)
        if DOCUMENTS and not WINDOW and not PREFIX:  # its document's rows see key0 to themselves (the rest: not stored)
            lo, hi = rows * 0 + key0, rows
        else:
            lo, hi = _bounds(rows, batch, seq, masks[1], masks[2], DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
        first_tile = key0 // TILE_N  # the walk's tiles are numbered from here (`_item`)
        if BOUNDED:  # the max exp2 subtracts stays 0 (_softmax_step)
            m_i = gl.zeros([HALF_M], gl.float32, layout=gl.SliceLayout(1, s_layout))
        else:
            m_i = gl.full([HALF_M], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
        l_i = row_sums_zero(HALF_M, s_layout, BOUNDED)
        acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)

        if not DOCUMENTS:  # (under the document mask, waited for before the item's number was read)
            mbarrier.wait(q_bars.index(q_index), q_phase)
        if BOUNDED:
            fold_tanh_scale(q_smem, sm_scale / softcap)
        walked = 0  # key tiles of the item walked before the loop's (the half diagonal's)
        if HALVES:
            if takes_half_diagonal(q_pos0, key0, 2 * POSITIONS, TILE_N):
                slot, phase = loaded % STAGES, (loaded // STAGES) & 1
                mbarrier.wait(k_ready.index(slot), phase)
                mbarrier.wait(v_ready.index(slot), phase)
                acc, m_i, l_i = half_diagonal(
                    q_smem, k_ring.index(slot).reshape([TILE_N, HEAD_DIM]), v_ring.index(slot).reshape(
                        [TILE_N, HEAD_DIM]), ones.index(slot), acc, m_i, l_i, to_log2, sm_scale, softcap,
                    key0 + (n_tiles - 1) * TILE_N, lo, hi, o_layout, SOFTCAP, BOUNDED)
                mbarrier.arrive(k_empty.index(slot), count=1)
                mbarrier.arrive(v_empty.index(slot), count=1)
                if rounds > 0:  # (as after a walk's first tile, below)
                    tma.store_wait(pendings=0)
                    mbarrier.arrive(q_empty.index(q_index ^ 2), count=1)
                walked = 1
        if (not HALVES) or (n_tiles > walked):  # (a half diagonal may be the whole walk)
            start = loaded + walked  # the walk's ring positions from here, its keys from key0 on
            slot, phase = start % STAGES, (start // STAGES) & 1
            # a selection's bits of the tile (gluon_selection; 0 without), each next tile's loaded a tile ahead
            words = load_words(Selection, batch * seq + row0, first_tile, seq, HALF_M, SELECTION)
            mbarrier.wait(k_ready.index(slot), phase)
            s = issue_s(q_smem, k_ring.index(slot).reshape([TILE_N, HEAD_DIM]), s_zero, alibi_a, alibi_b, ALIBI_MMA)
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
            mbarrier.arrive(k_empty.index(slot), count=1)
            p, m_i, l_i, alpha = _softmax(s, m_i, l_i, to_log2, sm_scale, softcap, bias, slope * (key0 - row0), key0,
                                          lo, hi, (first_tile < unmasked_lo) | (first_tile >= unmasked_hi), SOFTCAP,
                                          ALIBI, BOUNDED, words, SELECTION)
            words = load_words(Selection, batch * seq + row0, first_tile + 1, seq, HALF_M, SELECTION)
            p = gl.convert_layout(p.to(v_desc.dtype), p_layout)  # carried as the 16-bit operand: 32 registers, not 64
            if HALVES and not BOUNDED:  # the half diagonal's products, to this tile's max (zeros otherwise)
                acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
            if (rounds > 0) & (walked == 0):  # the last item's output has left its tile (one S and softmax ago):
                tma.store_wait(pendings=0)  # the producer may load the item after this one's rows there
                mbarrier.arrive(q_empty.index(q_index ^ 2), count=1)
            for j in range(1, n_tiles - walked):
                slot, phase = (start + j) % STAGES, ((start + j) // STAGES) & 1
                prev, prev_phase = (start + j - 1) % STAGES, ((start + j - 1) // STAGES) & 1
                tile = first_tile + j
                mbarrier.wait(k_ready.index(slot), phase)
                s = issue_s(q_smem, k_ring.index(slot).reshape([TILE_N, HEAD_DIM]), s_zero, alibi_a, alibi_b,
                            ALIBI_MMA)
                mbarrier.wait(v_ready.index(prev), prev_phase)
                acc, l_i = issue_pv(p, v_ring.index(prev).reshape([TILE_N, HEAD_DIM]), ones.index(prev), acc, l_i,
                                    BOUNDED)
                # S_j done; P_{j-1} V_{j-1} (and under BOUNDED its row sums) may still run
                s = warpgroup_mma_wait(num_outstanding=2 if BOUNDED else 1, deps=(s, ))
                mbarrier.arrive(k_empty.index(slot), count=1)
                p_next, m_i, l_i, alpha = _softmax(s, m_i, l_i, to_log2, sm_scale, softcap, bias,
                                                   slope * (key0 + j * TILE_N - row0), key0 + j * TILE_N, lo, hi,
                                                   (tile < unmasked_lo) | (tile >= unmasked_hi), SOFTCAP, ALIBI,
                                                   BOUNDED, words, SELECTION)
                words = load_words(Selection, batch * seq + row0, tile + 1, seq, HALF_M, SELECTION)
                p_next = gl.convert_layout(p_next.to(v_desc.dtype), p_layout)
                if BOUNDED:
                    acc, l_i, p = warpgroup_mma_wait(num_outstanding=0, deps=(acc, l_i, p))
                else:
                    acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p))  # p: the operand in flight
                mbarrier.arrive(v_empty.index(prev), count=1)
                p = p_next
                if not BOUNDED:
                    acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
            last = loaded + n_tiles - 1  # (the walk's last ring position)
            mbarrier.wait(v_ready.index(last % STAGES), (last // STAGES) & 1)
            acc, l_i = issue_pv(p, v_ring.index(last % STAGES).reshape([TILE_N, HEAD_DIM]), ones.index(last % STAGES),
                                acc, l_i, BOUNDED)
            if BOUNDED:
                acc, l_i = warpgroup_mma_wait(num_outstanding=0, deps=(acc, l_i))
            else:
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(v_empty.index(last % STAGES), count=1)
        if BOUNDED:
            l_i = gl.convert_layout(gl.max(l_i, axis=1), gl.SliceLayout(1, s_layout))  # every column the sum
        loaded += n_tiles

        # one reciprocal a row, then a multiply a value: ptxas kept a division a value's range checks and
        # rescales (SASS, sm_90: the document consumer 6400 -> 6032 instructions, FMUL 549 -> 301)
        acc = acc * gl.convert_layout(1.0 / l_i, o_rows)[:, None]
        if DOCUMENTS and not WINDOW and not PREFIX:  # rows past the document's end are another item's
            in_doc = (rows < seq) & (gl.load(DocStart + batch * seq + gl.minimum(rows, seq - 1)) == key0)
            gl.store(Lse + (head_row + offsets // POSITIONS) * seq + rows,
                     alibi_lse(m_i + gl.log2(l_i), slope, rows - row0, ALIBI), mask=in_doc)
            last_row = row0 + POSITIONS - 1
            if (last_row < seq) & (gl.load(DocStart + batch * seq + gl.minimum(last_row, seq - 1)) == key0):
                store_rows(o_desc, q_smem, q_tile, acc, batch, q_head, row0)
            else:
                # (the copy engine's box would write them); offsets in int64, as the copy engine's are
                o_at = (Out + batch.to(gl.int64) * stride_b
                        + (q_head + gl.convert_layout(offsets, o_rows)[:, None] // POSITIONS).to(gl.int64) * stride_h
                        + gl.convert_layout(rows, o_rows)[:, None].to(gl.int64) * stride_s
                        + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))[None, :])
                gl.store(o_at, acc.to(o_desc.dtype), mask=gl.convert_layout(in_doc, o_rows)[:, None])
        else:
            gl.store(Lse + head_row * seq + row0 + offsets, alibi_lse(m_i + gl.log2(l_i), slope, offsets, ALIBI))
            store_rows(o_desc, q_smem, q_tile, acc, batch, q_head, row0)
        rounds += 1
        if DOCUMENTS:
            next_index, next_phase = query_tile(rounds, HALF)
            mbarrier.wait(q_bars.index(next_index), next_phase)
            item = take(claimed.index(next_index))
        else:
            item += gl.num_programs(0)
    tma.store_wait(pendings=0)


@gluon.jit
def _attention_forward(q_desc, k_desc, v_desc, o_desc, Out, Lse, Claims, DocStart, Items, Selection, sm_scale, softcap,
                       window, prefix, n_q_heads, n_kv_heads, seq, n_head_rows, stride_b, stride_h, stride_s,
                       CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
                       PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr,
                       BOUNDED: gl.constexpr, SELECTION: gl.constexpr, STAGES: gl.constexpr,
                       CONSUMER_REGISTERS: gl.constexpr, PRODUCER_REGISTERS: gl.constexpr):
    """A persistent program (one an SM at most): its work items (`_item`; under the document mask those it
    claims, `claim`), each 128 query rows of one head, or under the document mask alone 128 / pack positions of
    `pack` heads (the query tile's second dimension, `document_pack`)."""
    gl.static_assert(q_desc.block_type.shape[1] == 1 or (DOCUMENTS and not WINDOW and not PREFIX and not ALIBI),
                     "query heads pack into one tile under the document mask alone, without ALiBi (document_pack)")
    HALF_M: gl.constexpr = q_desc.block_type.shape[1] * q_desc.block_type.shape[2]  # a consumer's rows
    n_blocks = seq // (2 * HALF_M)

    # each consumer's query rows of two items (`query_tile`: rounds % 2 x 2 + consumer, rounds the items the program
    # has started), each item's output stored through its own (the layouts are one: `descriptor_layout`)
    q_tiles = gl.allocate_shared_memory(q_desc.dtype, [4] + q_desc.block_type.shape, q_desc.layout)
    q_bars = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    claimed = gl.allocate_shared_memory(gl.int32, [4, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))  # `post`
    for tile in gl.static_range(4):
        mbarrier.init(q_bars.index(tile), count=1)
        mbarrier.init(q_empty.index(tile), count=1)  # its own consumer's arrival

    descs = (q_desc, k_desc, v_desc, o_desc)
    bars = (q_bars, q_empty, ring(k_desc, STAGES), ring(v_desc, STAGES))
    bufs = (q_tiles, claimed, ones_tiles(q_desc.dtype, STAGES, k_desc.block_type.shape[2], BOUNDED),
            alibi_keys(q_desc.dtype, k_desc.block_type.shape[2], ALIBI and not SOFTCAP))  # `_consumer`'s ALIBI_MMA
    if DOCUMENTS and not WINDOW and not PREFIX:  # `document_items`' count, after its B x S positions
        n_items = gl.load(Items + n_head_rows // n_q_heads * seq) * (n_q_heads // q_desc.block_type.shape[1])
    else:
        n_items = n_blocks * n_head_rows
    work = (Claims, n_items, n_blocks, n_head_rows, n_q_heads, n_kv_heads)
    scores = (Lse, sm_scale, softcap, Out, stride_b, stride_h, stride_s, Selection)
    masks = (seq, window, prefix, DocStart, Items)
    # where the document walk may take its diagonal tile first at half width (`document_pack`: never under ALiBi),
    # one switch for the producer, which loads that tile first, and the consumers, which walk it first
    HALVES: gl.constexpr = DOCUMENTS and not WINDOW and not PREFIX and q_desc.block_type.shape[1] > 1
    # the switches (and each consumer's half) travel apart: inside a tuple through warp_specialize a
    # constexpr arrives as a runtime value (Triton 3.6.0), and every `if` on it would compile both branches
    gl.warp_specialize([
        (_consumer, (descs, bars, bufs, work, scores, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                     BOUNDED, HALVES, SELECTION, 0)),
        (_consumer, (descs, bars, bufs, work, scores, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                     BOUNDED, HALVES, SELECTION, 1)),
        (producer, (descs, bars, bufs, work, scores, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                    HALVES)),
    ], [4, 1], [CONSUMER_REGISTERS, PRODUCER_REGISTERS])


def refusal(q, k, v):
    """Why this kernel cannot run q, k, v (triton_flash's kernel runs them instead), or None."""
    if not q.is_cuda or _capability(q.device) != (9, 0):
        return "it is written for Hopper (sm_90)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "Gluon has no interpreter"
    if q.dtype not in (torch.bfloat16, torch.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"it takes 16-bit q, k, v of one dtype, not {q.dtype}, {k.dtype}, {v.dtype}"
    if q.dim() != 4 or k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        return f"it takes self-attention's q (B, Hq, S, D), k and v (B, Hkv, S, D), not {tuple(q.shape)}, " \
               f"{tuple(k.shape)}, {tuple(v.shape)}"
    if q.shape[-1] != 128 or q.shape[2] % BLOCK_M or q.shape[2] == 0:
        return f"it takes head dim 128 and a length that is a positive multiple of {BLOCK_M}, not {tuple(q.shape)}"
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        return f"query heads {q.shape[1]} are not a multiple of key heads {k.shape[1]}"
    if not 0 < q.shape[0] * q.shape[1] * q.shape[2] < 2 ** 31:
        return f"it indexes the lse by int32: batch x query heads x length from 1 to 2^31 - 1, not " \
               f"{q.shape[0] * q.shape[1] * q.shape[2]}"
    # the copy engine's terms: a contiguous head dim, a 16-byte-aligned base, every outer stride a positive
    # multiple of 16 bytes (a block's projections, (B, S, H, D) seen as (B, H, S, D), qualify; an expand()'s
    # zero strides were never tried here and go to the Triton kernel)
    if not all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(
            stride > 0 and stride * t.element_size() % 16 == 0 for stride in t.stride()[:-1]) for t in (q, k, v)):
        return "it takes q, k, v with a contiguous head dim and 16-byte-aligned storage and positive strides"
    return None


# Cached: under cProfile (session 30, H200, tools/probe_host_issue.py) a forward+backward asked the capability
# in each of its seven refusals (12-20 us each unprofiled) and made the layout three times (50 us each).
@functools.cache
def _capability(device):
    return torch.cuda.get_device_capability(device)


@functools.cache
def _sm_count(device):
    return torch.cuda.get_device_properties(device).multi_processor_count


def item_positions(q, k, doc_start, window, prefix, alibi):
    """Query positions a document item holds (gluon_walk.document_pack): what the document walk's items are
    listed at (here and in triton_attention.document_work)."""
    return BLOCK_M // document_pack(q, k, doc_start, window, prefix, alibi)


@functools.cache
def descriptor_layout(dtype):
    """The shared-memory layout of every tile the copy engine moves, (1, heads, rows, 128) of 16-bit values: a
    key or value tile's 128 rows of one head, a query or output tile's 64 rows of one head or of `document_pack`
    heads, of a (B, H, S, D) tensor of any strides the copy engine takes (get_default_for gives them one layout,
    128-byte swizzled; a tile of several heads reads as their rows one after another)."""
    return gl.NVMMASharedLayout.get_default_for([1, 1, BLOCK_N, 128], gl.bfloat16 if dtype == torch.bfloat16
                                                else gl.float16)


def forward_launcher(q, k, v, *, causal, window=None, prefix=None, doc_start=None, softcap=None, alibi=False,
                     scale=None, lse=None, items=None, selection=None):
    """A launch of the forward on these tensors (triton_flash.forward_launcher's options): `launcher()`
    allocates the output, launches and returns it, filling lse ((B, Hq, S) float32, log2 units) when
    given. Checks, the input descriptors and the document walk's items (unless the caller listed them:
    triton_attention.document_work) happen once here, not in every timed call. selection: DSA's keys a query
    reads, as gluon_selection.selection_words packs them, with plain causal attention."""
    why = refusal(q, k, v)
    if why:
        raise ValueError(f"the Gluon forward cannot run these: {why}")
    if doc_start is not None and not causal:
        raise ValueError("the document mask is defined for causal attention only")
    why = score_refusal(softcap, scale)
    if why:
        raise ValueError(why)
    selection = checked_words(selection, q, causal=causal, doc_start=doc_start, window=window, prefix=prefix,
                              softcap=softcap, alibi=alibi)
    batch, n_q_heads, seq, head_dim = q.shape
    layout = descriptor_layout(q.dtype)
    positions = item_positions(q, k, doc_start, window, prefix, alibi)
    pack = BLOCK_M // positions
    q_tile = [1, pack, positions // 2, head_dim]  # a consumer's query rows: `pack` heads' positions
    q_desc = TensorDescriptor.from_tensor(q, q_tile, layout)
    k_desc, v_desc = (TensorDescriptor.from_tensor(t, [1, 1, BLOCK_N, head_dim], layout) for t in (k, v))
    bounded = bounded_softcap(softcap, alibi, q.dtype, lse)  # asked before lse is made for the kernel's store
    lse = lse if lse is not None else torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
    doc_arg = doc_start_arg(doc_start, q)
    if items is None:  # not listed once by the caller (a training step builds a launcher a call)
        work = document_work(q, doc_start, window, prefix, positions)
        items = None if work is None else work.listed
    else:
        items = checked_items(items, doc_arg, positions)
    arguments = (doc_arg, doc_arg if items is None else items, q if selection is None else selection,
                 scale if scale is not None else head_dim ** -0.5, softcap or 1.0, window or 0, prefix or 0, n_q_heads,
                 k.shape[1], seq, batch * n_q_heads)
    # one program an SM at most (197-205 KB of shared memory leave room for one), each through its share of
    # the work items (under the document mask, the ones it claims)
    programs = min(seq // BLOCK_M * batch * n_q_heads, _sm_count(q.device))
    flags = dict(CAUSAL=causal, WINDOW=window is not None, PREFIX=prefix is not None, DOCUMENTS=doc_start is not None,
                 SOFTCAP=softcap is not None, ALIBI=alibi, BOUNDED=bounded, SELECTION=selection is not None,
                 STAGES=STAGES,
                 CONSUMER_REGISTERS=CONSUMER_REGISTERS, PRODUCER_REGISTERS=PRODUCER_REGISTERS)

    def launcher():
        out = torch.empty_like(q)  # dense, in q's order of dimensions (the backward copies where q's differ)
        o_desc = TensorDescriptor.from_tensor(out, q_tile, layout)
        # `claim`'s count, from 0 each launch (documents only; other masks take a fixed share)
        claims = torch.zeros(1, device=q.device, dtype=torch.int32) if doc_start is not None else lse
        _attention_forward[(programs, )](
            q_desc, k_desc, v_desc, o_desc, out, lse, claims, *arguments, *out.stride()[:3], **flags, num_warps=WARPS,
            maxnreg=MAX_REGISTERS)
        return out

    return launcher
