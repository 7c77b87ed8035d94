"""DSA's token selection in our Gluon forward (gluon_flash.py): a bit a key, packed so that each thread of a consumer
warpgroup reads one 32-bit word a row of a key tile, the word holding exactly the 32 scores of that row the warpgroup
MMA's accumulator gives the thread.

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
"""

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# constexpr, for the kernel's functions below to read (the host's code takes their values)
TILE_KEYS = gl.constexpr(128)  # gluon_flash's key tile: the keys of a row's words
WORDS = gl.constexpr(4)  # a row's words a key tile: one for each lane of a quad


def selection_words(selection):
    """A (B, Sq, Skv) bool selection as the Gluon forward reads it: (B, Sq, ceil(Skv / 128) x 4) int32, each row's
    key tile as four words (this module's packing), every key past the row's own position cleared (the kernel tests
    the bits alone: for self-attention, a selection inside the causal keys, as DSA's indexer makes it). Packed on the
    selection's device in blocks of rows of at most 256 MiB of padded bytes (the words are an eighth of that): at
    llama-3-8b-s32k a sequence's selection is 1 GiB, its words 128 MiB."""
    if selection.dim() != 3 or selection.dtype != torch.bool:
        raise ValueError(f"a selection is (batch, queries, keys) bool, not {tuple(selection.shape)} {selection.dtype}")
    batch, q_len, kv_len = selection.shape
    tiles = -(-kv_len // TILE_KEYS.value)
    words = torch.empty(batch, q_len, tiles * WORDS.value * 4, dtype=torch.uint8, device=selection.device)
    rows = max(1, _BLOCK_BYTES // (tiles * TILE_KEYS.value))
    for b in range(batch):
        for first in range(0, q_len, rows):
            last = min(first + rows, q_len)
            padded = torch.zeros(last - first, tiles * TILE_KEYS.value, dtype=torch.bool, device=selection.device)
            padded[:, :kv_len] = selection[b, first:last]
            padded.tril_(diagonal=kv_len - q_len + first)
            words[b, first:last] = _packed(padded.view(torch.uint8), tiles).flatten(1)
    return words.view(torch.int32)


_BLOCK_BYTES = 1 << 28  # selection_words' padded rows a block: 256 MiB


def _packed(keys, tiles):
    """(rows, tiles x 128) bytes of 0 or 1 -> (rows, tiles, WORDS, 4) bytes: byte m of word q holds the keys
    8 i + 2 q + b at bit t, where 2 i + b = 8 m + t, so i = 4 m + t // 2 (little-endian words)."""
    # a tile's keys 8 i + 2 q + b with i = 4 m + j: (m, j, q, b)
    split = keys.view(keys.shape[0], tiles, 4, 4, WORDS.value, 2)
    packed = torch.zeros(keys.shape[0], tiles, WORDS.value, 4, dtype=torch.uint8, device=keys.device)
    for j in range(4):
        for b in range(2):
            packed |= split[:, :, :, j, :, b].transpose(2, 3) << (2 * j + b)
    return packed


# The accumulator's layout for a consumer warpgroup's 64 rows, seen as (rows, i, q, b), column 8 i + 2 q + b: the
# module's packing (its bases, Triton 3.6.0's to_linear_layout of the accumulator's, split by column).
ROWS = gl.constexpr(64)
QUADS = gl.constexpr(gl.DistributedLinearLayout(
    reg_bases=[[0, 0, 0, 1], [8, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0], [0, 4, 0, 0], [0, 8, 0, 0]],
    lane_bases=[[0, 0, 1, 0], [0, 0, 2, 0], [1, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 0]],
    warp_bases=[[16, 0, 0, 0], [32, 0, 0, 0]], block_bases=[], shape=[ROWS, 16, WORDS.value, 2]))


@gluon.jit
def load_words(Words, row, tile, seq, HALF_M: gl.constexpr, SELECTION: gl.constexpr):
    """The words of key tile `tile` for the HALF_M flat rows (b Sq + position) from `row`: each thread its own two
    (its rows' word q), (HALF_M, WORDS) int32; 0 where not SELECTION. `tile` is clamped to the sequence's last, so a
    walk may load one tile past its own last: the consumer loads the next tile's words right after this tile's
    softmax, its latency behind the products, and after a walk's last tile that load's 1 KB an item goes unused."""
    words = 0
    if SELECTION:
        gl.static_assert(HALF_M == ROWS, "a consumer warpgroup's 64 rows")
        words_layout: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(3, QUADS))
        rows = gl.arange(0, HALF_M, layout=gl.SliceLayout(1, words_layout))
        quad = gl.arange(0, WORDS, layout=gl.SliceLayout(0, words_layout))
        tiles = seq // TILE_KEYS  # (a multiple of the tile: gluon_flash.refusal)
        at = (row + rows).to(gl.int64)[:, None] * (tiles * WORDS) + gl.minimum(tile, tiles - 1) * WORDS
        words = gl.load(Words + at + quad[None, :])
    return words


@gluon.jit
def selected(words, scores):
    """Which of the tile's `scores` (rows x 128, the accumulator's layout) the rows selected, by the words `load_words`
    read: bool in the scores' layout (the (rows, i, q, b) view reshaped back to it moves no data, offline)."""
    layout: gl.constexpr = scores.type.layout
    i = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, QUADS))))
    b = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, QUADS))))
    bit = (2 * i)[None, :, None, None] + b[None, None, None, :]
    keep = ((words[:, None, :, None] >> bit) & 1) != 0
    return gl.convert_layout(gl.reshape(keep, [ROWS, TILE_KEYS]), layout)


def checked_words(selection, q, *, causal, doc_start, window, prefix, softcap, alibi):
    """selection, where the Gluon forward can read it beside these options (None passes); a ValueError naming what
    differs otherwise. The bits alone mask the scores, so the selection runs with plain causal attention."""
    if selection is None:
        return None
    others = {"document": doc_start, "window": window, "prefix": prefix, "softcap": softcap, "alibi": alibi or None}
    beside = [name for name, value in others.items() if value is not None]
    if not causal or beside:
        raise ValueError("a selection runs with plain causal attention, not "
                         + (f"beside {', '.join(beside)}" if beside else "without the causal mask"))
    batch, _, seq, _ = q.shape
    shape = (batch, seq, -(-seq // TILE_KEYS.value) * WORDS.value)
    if tuple(selection.shape) != shape or selection.dtype != torch.int32 or not selection.is_contiguous() \
            or selection.device != q.device:
        raise ValueError(f"a selection is {shape} contiguous int32 on {q.device} (gluon_selection.selection_words), "
                         f"not {tuple(selection.shape)} {selection.dtype} on {selection.device}")
    return selection
