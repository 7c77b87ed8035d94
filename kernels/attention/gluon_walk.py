"""Which key tiles a Gluon attention program walks, and how a persistent one takes its work (gluon_flash.py's
forward, whose producer warp is here; gluon_dq.py's dQ walks alike): Gluon functions over triton_flash's mask
intervals."""

import math
from typing import NamedTuple

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from kernels.attention.gluon_rings import load_key_tiles, query_tile
# the masks' key intervals: a Triton function, which Gluon calls as its own
from kernels.attention.triton_flash import _bounds, doc_start_arg


@gluon.jit
def key_walk(q_pos0, batch, seq, window, prefix, DocStart, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
             PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, ROWS: gl.constexpr, TILE_N: gl.constexpr):
    """(first_tile, end_tile, unmasked_lo, unmasked_hi): rows q_pos0..q_pos0 + ROWS - 1 see keys of tiles
    first_tile..end_tile - 1 only, and every one of them sees the tiles in [unmasked_lo, unmasked_hi) whole
    (no interval test there). Every bound grows with the query position: the first row's and the last's
    bound the rows'."""
    first_lo, first_hi = _bounds(q_pos0, batch, seq, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
    last_lo, last_hi = _bounds(q_pos0 + ROWS - 1, batch, seq, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX,
                               DOCUMENTS)
    first_tile = first_lo // TILE_N
    end_tile = (last_hi + TILE_N) // TILE_N
    unmasked_lo = gl.minimum(gl.maximum((last_lo + TILE_N - 1) // TILE_N, first_tile), end_tile)
    unmasked_hi = gl.maximum(gl.minimum((first_hi + 1) // TILE_N, end_tile), unmasked_lo)
    return first_tile, end_tile, unmasked_lo, unmasked_hi


@gluon.jit
def claim(Claims):
    """The next work item for this program: a launch's programs count through one zeroed int32 in global
    memory, so each item goes to the first program free. A fixed share (items pid, pid + programs, ...)
    left the document mask's programs unequal: the catalog's documents at llama-3-8b-s4k give 4096 items
    of 1 to 17 key tiles, and the busiest of 132 shares 233 tiles where the mean is 191 (1.22x; causal and
    the window 1.031x, where four programs take a 32nd item); taken in this order as programs come free,
    the busiest takes 192 (offline count, reports/README.md, session 26). Gated on an H200 (session 26,
    llama-3-8b-s4k, `gate/dynamic-h200.md`): the document mask faster (0.951); the other masks, claiming
    too, the same at 1.012-1.029 (do_bench in one lease 1.4-1.9% slower), so they keep the fixed share.
    Relaxed: the count publishes no data for anyone to acquire."""
    return gl.atomic_add(Claims, 1, sem="relaxed")


@gluon.jit
def post(slot, item):
    """The producer's side of the hand-over: its claimed item into a consumer's one-value slot of shared
    memory, before the arrival that completes the consumer's query tile (the arrival releases the store)."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
    slot.store(gl.full([1], item, gl.int32, layout=layout))


@gluon.jit
def take(slot):
    """The consumer's side: the item `post` wrote, read once the query tile's mbarrier has completed."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
    return gl.max(slot.load(layout), axis=0)


def document_items(doc_start, rows):
    """The document forward's work items, built once a launcher (or once a doc_start by a caller that builds a
    launcher a call: triton_attention.document_work) from doc_start ((B, S) int32, each position's
    document start) with torch ops, as Flex builds its block mask once: (B S + 1,) int32, the flat positions
    b S + p of the rows p that start an item, (p - doc_start[b, p]) a multiple of `rows` (every document
    split into blocks of `rows` from its own start), longest walk first, then the other positions; the
    last value is how many items there are. Against items at multiples of 128 (an item's rows in two
    documents walk both, and only the tiles between their bounds skip the interval test), at
    llama-3-8b-s4k's catalog documents: 187 key tiles a batch-head walked, not 197 (1.201x the visible
    pairs, not 1.265x), and one tested tile an item, 34 a batch-head, not 80.5 (offline count, session 26).
    Measured on an H200 (session 27, with the head chunks of `_item`): the document forward 0.4445 ->
    0.3937 ms (do_bench, one lease), gated faster 0.910 (`gate/chunks-docs-h200.md`)."""
    offset = torch.arange(doc_start.shape[1], device=doc_start.device) - doc_start
    walk = torch.where(offset % rows == 0, offset, -1).flatten()  # an item's walk grows with its offset
    order = torch.sort(walk, descending=True, stable=True).indices.to(torch.int32)
    return torch.cat([order, (walk >= 0).sum(dtype=torch.int32).reshape(1)])


class DocumentWork(NamedTuple):
    """The document forward's work items as listed (`document_items`) and the query positions an item holds
    (its rows: 128 positions of one head, or fewer of several: `document_pack`), which the kernel
    must walk with: a list at other rows leaves rows out or takes them twice."""

    listed: torch.Tensor
    rows: int


def document_pack(q, k, doc_start, window, prefix, alibi):
    """Query heads of one KV head a document item holds (FlashAttention-3's PackGQA): an item is 128 / pack
    positions of `pack` heads, one walk of keys and values for them all, so a document's last item, whose
    positions past the document's end are computed and never stored, wastes 128 / pack rows a head, not 128.
    At llama-3-8b-s4k's catalog documents (offline count, tools/document_tile_floor.py): 1.139x the visible
    pairs at pack 4 (32 x 128 tiles) against 1.201x at 1, in 4176 items of 22696 key tiles against 4352 of
    23936. The largest power of two up to 8 that divides the group: a head's 64 / pack rows of a consumer's
    tile stay a multiple of the 128-byte swizzle's 8, so its (1, pack, rows, 128) tile reads as (64, 128).
    1 outside the document walk (a window or prefix beside the documents walks 128-row blocks) and under
    ALiBi, whose bias operand carries one slope, a head's, for all of a consumer's rows."""
    if doc_start is None or window is not None or prefix is not None or alibi:
        return 1
    return math.gcd(q.shape[1] // k.shape[1], 8)


def document_work(q, doc_start, window, prefix, rows):
    """The document walk's work items (`document_items` at `rows` query positions an item) for doc_start, as
    `DocumentWork`, or None where `_item` walks otherwise (no documents, or a window or prefix beside them)."""
    if doc_start is None or window is not None or prefix is not None:
        return None
    return DocumentWork(document_items(doc_start_arg(doc_start, q), rows), rows)


def checked_items(items, doc_arg, rows):
    """items' list, where it can be `document_work`'s for doc_arg ((B, S) int32 document starts) at `rows`
    positions an item: (B S + 1,) int32 on doc_arg's device; a ValueError naming it otherwise (the kernel
    would read past a shorter list, or walk rows a list at other rows left out)."""
    if not isinstance(items, DocumentWork) or items.rows != rows:
        raise ValueError(f"the document walk's items are triton_attention.document_work's at {rows} positions an "
                         f"item, not {type(items).__name__} at {getattr(items, 'rows', None)}")
    listed = items.listed
    if listed.shape != (doc_arg.numel() + 1, ) or listed.dtype != torch.int32 or listed.device != doc_arg.device:
        raise ValueError(f"the document walk's items are ({doc_arg.numel() + 1},) int32 on {doc_arg.device} "
                         f"(triton_attention.document_work), not {tuple(listed.shape)} {listed.dtype} on "
                         f"{listed.device}")
    return listed


@gluon.jit
def _document_item(item, seq, n_q_heads, DocStart, Items, PACK: gl.constexpr, ROWS: gl.constexpr,
                   TILE_N: gl.constexpr):
    """Work item `item` of the document forward: query heads PACK (item % packs) on of the positions
    `document_items` lists at item // packs (packs: n_q_heads // PACK), (batch, first q_head, q_pos0, key0,
    n_tiles): ROWS positions from q_pos0 (past its document's end, positions of the next, whose output the
    consumer does not store) and key tiles from its document's start key0 up to the diagonal, every one seen
    whole by the document's rows but the last (ROWS divides TILE_N, and items start a multiple of ROWS into
    their documents, so an item's positions lie in one key tile)."""
    gl.static_assert(TILE_N % ROWS == 0, "an item's positions must lie in one key tile")
    packs = n_q_heads // PACK
    flat = gl.load(Items + item // packs)
    key0 = gl.load(DocStart + flat)
    q_pos0 = flat % seq
    return flat // seq, item % packs * PACK, q_pos0, key0, (q_pos0 - key0) // TILE_N + 1


@gluon.jit
def takes_half_diagonal(q_pos0, key0, ROWS: gl.constexpr, TILE_N: gl.constexpr):
    """Whether a document item's ROWS positions from q_pos0 lie in the first half of its diagonal key tile
    (tiles from its document's start key0): then every key of the tile's second half is past every row's
    position, and the walk takes the tile first at half its width (gluon_softmax.half_diagonal). With ROWS under
    half a tile (`document_pack` of 2 or more) about half the items qualify: at llama-3-8b-s4k's catalog documents
    and 32 positions an item, 269 of 522 a pack of heads, their pairs computed 1.139x -> 1.085x the visible
    (offline count). Measured on an H200 (session 38, llama-3-8b-s4k): the document forward 0.3742 -> 0.3661 ms
    (do_bench, both in one lease), gated same at 0.974 with the other five forwards same; its cost per useful FLOP
    1.200 (main, an earlier lease) -> 1.169."""
    return (q_pos0 - key0) % TILE_N + ROWS <= TILE_N // 2


@gluon.jit
def _item(item, n_blocks, n_q_heads, n_kv_heads, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
          PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, HALF_M: gl.constexpr, PACK: gl.constexpr,
          TILE_N: gl.constexpr):
    """Work item `item`: 128 query rows of one head (under the document mask alone, 128 / PACK positions of PACK
    heads: `_document_item`), (batch, q_head, kv_head, head_row, q_pos0, key0, n_tiles, unmasked_lo, unmasked_hi),
    q_head and head_row the first of its heads: n_tiles key tiles from key position key0, the j-th numbered key0 //
    TILE_N + j, and those numbered in [unmasked_lo, unmasked_hi) every row sees whole (no interval test). Under the
    document mask alone (a window or a prefix beside it walks as the rest), the items `document_items` lists.
    Otherwise heads go in chunks, the query heads of one KV head a chunk, and within a chunk every head's last row
    block comes first, then the blocks before: under causal and prefix masks the longest walks start first, so the
    last ones to finish are short. The chunks keep the programs at work at once on few KV heads, whose keys and
    values may then stay in L2: with every head at once (one chunk), multi-head causal at llama-3-8b-s4k (128 heads,
    256 MB of keys and values against the H200's 50 MB of L2) cost 1.195-1.21x the baseline where one program a row
    block cost 0.971 (session 26). Session 27 probed chunks of 1, 2, 4 and 8 query heads (do_bench, H200, one
    lease): multi-head 1.0491, 1.0548, 1.1122 (1.0875 in another lease) and 1.0659 ms, grouped heads (4 a KV head)
    0.9946, 0.9726, 0.9522 and 0.9469. Session 28: two KV heads a chunk (multi-head 2 query heads, grouped 8) took
    multi-head causal from 1.0853-1.0926 to 1.0288-1.0438 ms but alibi (grouped) from 1.0294 to 1.0448-1.0519; one
    KV head a chunk is 1 query head there and main's 4 here."""
    seq, window, prefix, DocStart, Items = masks
    if DOCUMENTS and not WINDOW and not PREFIX:
        batch, q_head, q_pos0, key0, n_tiles = _document_item(item, seq, n_q_heads, DocStart, Items, PACK,
                                                              2 * HALF_M // PACK, TILE_N)
        unmasked_lo = key0 // TILE_N
        unmasked_hi = unmasked_lo + n_tiles - 1  # the last tile holds the diagonal
    else:
        # a KV head's query heads are consecutive head rows (batch x n_q_heads + q head), so every chunk
        # is whole
        heads = n_q_heads // n_kv_heads
        chunk = item // (heads * n_blocks)
        within = item - chunk * heads * n_blocks
        row_block = n_blocks - 1 - within // heads
        head_row = chunk * heads + within % heads
        batch, q_head = head_row // n_q_heads, head_row % n_q_heads
        q_pos0 = row_block * 2 * HALF_M
        first_tile, end_tile, unmasked_lo, unmasked_hi = key_walk(q_pos0, batch, seq, window, prefix, DocStart,
                                                                   CAUSAL, WINDOW, PREFIX, DOCUMENTS, 2 * HALF_M,
                                                                   TILE_N)
        key0, n_tiles = first_tile * TILE_N, end_tile - first_tile
    return (batch, q_head, q_head // (n_q_heads // n_kv_heads), batch * n_q_heads + q_head, q_pos0, key0, n_tiles,
            unmasked_lo, unmasked_hi)


@gluon.jit
def producer(descs, bars, bufs, work, scores, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
             PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr,
             HALVES: gl.constexpr):
    """gluon_flash.py's forward's producer, one warp: for each of the program's work items, each consumer's query
    rows into its tile for that item (two a consumer, alternating) once the item before last has left it, then
    every key tile of the item's walk, K and V through the copy engine into the rings (their position runs on
    across items), each slot once both consumers have released it; the diagonal tile first for an item that
    `takes_half_diagonal` where HALVES (the consumers' switch too, set once by `_attention_forward`).
    Under the document mask the items are claimed (`claim`): each item's number goes to the consumers
    with its query rows, and out of items, a number past the last. The next item is claimed once this
    one's first key tile is on its way: Triton hands an atomic's result to the warp at once, so the claim's
    round trip holds the warp, and there it passes while the next ring slot is released anyway (claimed
    before the key tiles, every forward measured 3.6-5.5% slower, session 26)."""
    q_desc, k_desc, v_desc = descs[0], descs[1], descs[2]
    q_bars, q_empty, keys, values = bars
    q_tiles, claimed = bufs[0], bufs[1]
    Claims, n_items, n_blocks, n_head_rows, n_q_heads, n_kv_heads = work
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    PACK: gl.constexpr = q_desc.block_type.shape[1]  # query heads a tile holds (`document_pack`)
    POSITIONS: gl.constexpr = q_desc.block_type.shape[2]  # positions of each
    loaded = 0  # key tiles through the rings so far
    rounds = 0  # items this program has started
    if DOCUMENTS:  # the walks' lengths follow the documents: items go to programs as they come free
        item = claim(Claims)
    else:  # a fixed share, every head's last row block first: the busiest program walks 1.031x the mean
        item = gl.program_id(0)
    while item < n_items:
        batch, q_head, kv_head, head_row, q_pos0, key0, n_tiles, unmasked_lo, unmasked_hi = _item(
            item, n_blocks, n_q_heads, n_kv_heads, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, PACK * POSITIONS,
            PACK, TILE_N)
        for h in gl.static_range(2):
            tile, phase = query_tile(rounds, h)
            mbarrier.wait(q_empty.index(tile), phase ^ 1)  # a fresh mbarrier reads as phase 1 completed
            if DOCUMENTS:
                post(claimed.index(tile), item)
            mbarrier.expect(q_bars.index(tile), q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [batch, q_head, q_pos0 + h * POSITIONS, 0], q_bars.index(tile),
                                            q_tiles.index(tile))
        if DOCUMENTS:
            first_key, rest_key = key0, key0 + TILE_N
            if HALVES:  # the consumers' half diagonal first
                if takes_half_diagonal(q_pos0, key0, 2 * POSITIONS, TILE_N):
                    first_key, rest_key = key0 + (n_tiles - 1) * TILE_N, key0
            load_key_tiles(k_desc, v_desc, keys, values, batch, kv_head, first_key, 1, loaded)
            following = claim(Claims)
            load_key_tiles(k_desc, v_desc, keys, values, batch, kv_head, rest_key, n_tiles - 1, loaded + 1)
        else:
            following = item + gl.num_programs(0)
            load_key_tiles(k_desc, v_desc, keys, values, batch, kv_head, key0, n_tiles, loaded)
        loaded += n_tiles
        rounds += 1
        item = following
    if DOCUMENTS:
        for h in gl.static_range(2):
            tile, phase = query_tile(rounds, h)
            mbarrier.wait(q_empty.index(tile), phase ^ 1)
            post(claimed.index(tile), item)
            mbarrier.arrive(q_bars.index(tile), count=1)
