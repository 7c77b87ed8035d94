"""DSA's token selection in our Gluon kernels: a bit a key, packed so that each thread of a consumer warpgroup reads
one word a row of a tile, holding exactly that row's scores the warpgroup MMA's accumulator gives the thread: for
the forward (gluon_flash.py) and dQ (gluon_dq.py) a 32-bit word a row of a 128-key tile, for dK/dV
(gluon_backward.py) a 16-bit word a key of a 64-query block.

Why a bit and this packing: our Triton forward reads a byte a key (triton_token_sparse.selection_bytes), 16 KB a
128 x 128 tile, loaded whole and moved into the accumulator's layout through shared memory; it took 2.23 ms at
llama-3-8b-s4k where our causal Triton forward takes 1.14 (H200, sessions 41-42). Here a consumer's 64 rows of a
tile are 1 KB of words, two 4-byte loads a thread, and ptxas turns the bit tests into R2P's seven predicates an
instruction and one select a score: the forward with a selection compiles (offline, sm_90, Triton 3.6.0) to 168
registers, no spill, no shared memory beyond the causal forward's 197000 bytes, 22 R2P, 64 SEL and 234 LOP3 more
than causal's. It took 1.04-1.07 ms at llama-3-8b-s4k's dsa_topk_2048 (H200, session 43, do_bench; the Triton
forward 2.24), 1.36x the baseline per useful FLOP: every tile runs the masked path, the bit tests included.

The accumulator of a 64 x 128 warpgroup MMA over four warps (Triton 3.6.0's linear layout of
NVMMADistributedLayout([3, 0], [4, 1], [16, 128, 16])) gives lane l of warp w the rows 16 w + l // 4 and that + 8,
and the columns 8 i + 2 (l % 4) + b for i < 16, b < 2. So word q (0 .. 3) of a row's tile holds its keys 8 i + 2 q + b
at bit 2 i + b: lanes l % 4 == q read it.

The dK/dV kernel (gluon_backward.py) computes S^T, 64 keys x 64 query rows a consumer: its accumulator lays the
64 columns out the same way (i < 8), so there each key holds its selecting queries, a block of 64 queries as four
16-bit words (`key_words`: the selection transposed).
"""

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# constexpr, for the kernel's functions below to read (the host's code takes their values)
TILE_KEYS = gl.constexpr(128)  # gluon_flash's key tile: the keys of a row's words
QUERY_BLOCK = gl.constexpr(64)  # gluon_backward's query row block: the queries of a key's words
WORDS = gl.constexpr(4)  # a row's words a tile: one for each lane of a quad


def selection_words(selection):
    """A (B, Sq, Skv) bool selection as the Gluon forward reads it: (B, Sq, ceil(Skv / 128) x 4) int32, each row's
    key tile as four words (this module's packing), every key past the row's own position cleared (the kernel tests
    the bits alone: for self-attention, a selection inside the causal keys, as DSA's indexer makes it). Packed on the
    selection's device in blocks of rows of at most 256 MiB of padded bytes (the words are an eighth of that): at
    llama-3-8b-s32k a sequence's selection is 1 GiB, its words 128 MiB."""
    return _words(selection, transposed=False).view(torch.int32)


def key_words(selection):
    """The selection as the Gluon dK/dV kernel reads it: (B, Skv, ceil(Sq / 64) x 4) int16, for each key each block
    of 64 queries as four 16-bit words, query 8 i + 2 q + b of the block at bit 2 i + b of word q (the selection
    transposed, the packing `selection_words`'), every query before the key's position cleared. Packed in blocks of
    keys of at most 256 MiB, as `selection_words`' rows."""
    return _words(selection, transposed=True).view(torch.int16)


def _words(selection, transposed):
    """The packed bytes of each row (each key, transposed) of the selection, in blocks of lines of _BLOCK_BYTES
    padded bytes, each block's causal bound cleared in place."""
    _check(selection)
    batch, q_len, kv_len = selection.shape
    lines, columns, width = (kv_len, q_len, QUERY_BLOCK.value) if transposed else (q_len, kv_len, TILE_KEYS.value)
    tiles = -(-columns // width)
    words = torch.empty(batch, lines, tiles * WORDS.value * width // 32, dtype=torch.uint8, device=selection.device)
    step = max(1, _BLOCK_BYTES // (tiles * width))
    for b in range(batch):
        for first in range(0, lines, step):
            last = min(first + step, lines)
            padded = torch.zeros(last - first, tiles * width, dtype=torch.bool, device=selection.device)
            if transposed:  # key first + j keeps the queries i with first + j <= i + kv_len - q_len
                padded[:, :columns] = selection[b, :, first:last].T
                padded.triu_(diagonal=first - (kv_len - q_len))
            else:  # row first + i keeps the keys j <= first + i + kv_len - q_len
                padded[:, :columns] = selection[b, first:last]
                padded.tril_(diagonal=kv_len - q_len + first)
            words[b, first:last] = _packed(padded.view(torch.uint8), width).flatten(1)
    return words


def _check(selection):
    if selection.dim() != 3 or selection.dtype != torch.bool:
        raise ValueError(f"a selection is (batch, queries, keys) bool, not {tuple(selection.shape)} {selection.dtype}")


_BLOCK_BYTES = 1 << 28  # the padded bytes a block of rows or keys: 256 MiB


def _packed(bits, width):
    """(rows, tiles x width) bytes of 0 or 1 -> (rows, tiles, WORDS, width / 32) bytes: byte m of word q holds the
    columns 8 i + 2 q + b at bit t, where 2 i + b = 8 m + t, so i = 4 m + t // 2 (little-endian words)."""
    rows, tiles = bits.shape[0], bits.shape[1] // width
    # a tile's columns 8 i + 2 q + b with i = 4 m + j: (m, j, q, b)
    split = bits.view(rows, tiles, width // 32, 4, WORDS.value, 2)
    packed = torch.zeros(rows, tiles, WORDS.value, width // 32, dtype=torch.uint8, device=bits.device)
    for j in range(4):
        for b in range(2):
            packed |= split[:, :, :, j, :, b].transpose(2, 3) << (2 * j + b)
    return packed


def _quads(width):
    """The accumulator's layout of a consumer warpgroup's 64 rows of `width` columns, seen as (rows, i, q, b),
    column 8 i + 2 q + b: the module's packing (Triton 3.6.0's to_linear_layout of the accumulator's, split by
    column: tools/compile_gluon_sm90.py asserts it)."""
    columns = [[0, 1 << n, 0, 0] for n in range((width // 8).bit_length() - 1)]
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 0, 1], [8, 0, 0, 0]] + columns,
        lane_bases=[[0, 0, 1, 0], [0, 0, 2, 0], [1, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 0]],
        warp_bases=[[16, 0, 0, 0], [32, 0, 0, 0]], block_bases=[], shape=[ROWS.value, width // 8, WORDS.value, 2])


ROWS = gl.constexpr(64)
QUADS = gl.constexpr(_quads(TILE_KEYS.value))  # the forward's and dQ's scores: 64 rows x 128 keys
KEY_QUADS = gl.constexpr(_quads(QUERY_BLOCK.value))  # dK/dV's S^T: 64 keys x 64 query rows


@gluon.jit
def _load(Words, row, tile, tiles, quads: gl.constexpr):
    """Each thread's words of tile `tile` (clamped to `tiles` - 1) for its two of the 64 flat rows from `row`."""
    words_layout: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(3, quads))
    rows = gl.arange(0, ROWS, layout=gl.SliceLayout(1, words_layout))
    quad = gl.arange(0, WORDS, layout=gl.SliceLayout(0, words_layout))
    at = (row + rows).to(gl.int64)[:, None] * (tiles * WORDS) + gl.minimum(tile, tiles - 1) * WORDS
    return gl.load(Words + at + quad[None, :])


@gluon.jit
def load_words(Words, row, tile, seq, HALF_M: gl.constexpr, SELECTION: gl.constexpr):
    """The words of key tile `tile` for the HALF_M flat rows (b Sq + position) from `row`: each thread its own two
    (its rows' word q), (HALF_M, WORDS) int32; 0 where not SELECTION. `tile` is clamped to the sequence's last, so a
    walk may load one tile past its own last: the consumer loads the next tile's words right after this tile's
    softmax, its latency behind the products, and after a walk's last tile that load's 1 KB an item goes unused."""
    words = 0
    if SELECTION:
        gl.static_assert(HALF_M == ROWS, "a consumer warpgroup's 64 rows")
        words = _load(Words, row, tile, seq // TILE_KEYS, QUADS)  # (seq a multiple of the tile: gluon_flash)
    return words


@gluon.jit
def load_key_words(Words, key, block, seq, HALF_N: gl.constexpr, SELECTION: gl.constexpr):
    """`key_words`' words of query block `block` for the HALF_N flat keys (b Skv + position) from `key`: each
    thread its own two, (HALF_N, WORDS) int32; 0 where not SELECTION."""
    words = 0
    if SELECTION:
        gl.static_assert(HALF_N == ROWS, "a consumer warpgroup's 64 keys")
        words = _load(Words, key, block, seq // QUERY_BLOCK, KEY_QUADS).to(gl.int32)
    return words


@gluon.jit
def _selected(words, scores, quads: gl.constexpr, WIDTH: gl.constexpr):
    layout: gl.constexpr = scores.type.layout
    i = gl.arange(0, WIDTH // 8, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, quads))))
    b = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, quads))))
    bit = (2 * i)[None, :, None, None] + b[None, None, None, :]
    keep = ((words[:, None, :, None] >> bit) & 1) != 0
    return gl.convert_layout(gl.reshape(keep, [ROWS, WIDTH]), layout)


@gluon.jit
def selected(words, scores):
    """Which of the tile's `scores` (rows x 128, the accumulator's layout) the rows selected, by the words `load_words`
    read: bool in the scores' layout (the (rows, i, q, b) view reshaped back to it moves no data, offline)."""
    return _selected(words, scores, QUADS, TILE_KEYS)


@gluon.jit
def selected_keys(words, scores):
    """`selected` for dK/dV's S^T (64 keys x 64 query rows) by the words `load_key_words` read."""
    return _selected(words, scores, KEY_QUADS, QUERY_BLOCK)


def checked_words(selection, q, *, causal, doc_start, window, prefix, softcap, alibi, keys=False):
    """selection (`selection_words`', or `key_words`' where keys), where a Gluon kernel can read it beside these
    options (None passes); a ValueError naming what differs otherwise. The bits alone mask the scores, so the
    selection runs with plain causal attention."""
    if selection is None:
        return None
    others = {"document": doc_start, "window": window, "prefix": prefix, "softcap": softcap, "alibi": alibi or None}
    beside = [name for name, value in others.items() if value is not None]
    if not causal or beside:
        raise ValueError("a selection runs with plain causal attention, not "
                         + (f"beside {', '.join(beside)}" if beside else "without the causal mask"))
    batch, _, seq, _ = q.shape
    tile, dtype, packing = (QUERY_BLOCK, torch.int16, "key_words") if keys else (TILE_KEYS, torch.int32,
                                                                                 "selection_words")
    shape = (batch, seq, -(-seq // tile.value) * WORDS.value)
    if tuple(selection.shape) != shape or selection.dtype != dtype or not selection.is_contiguous() \
            or selection.device != q.device:
        raise ValueError(f"a selection is {shape} contiguous {dtype} on {q.device} (gluon_selection.{packing}), "
                         f"not {tuple(selection.shape)} {selection.dtype} on {selection.device}")
    return selection
