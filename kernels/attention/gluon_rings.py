"""The copy engine's rings for our Gluon attention kernels (gluon_flash.py's forward, gluon_dq.py's dQ,
gluon_backward.py's dK/dV): tiles in shared memory, each with an mbarrier the copy engine completes and
one the two consumer warpgroups release it through, and the producer's side that fills them."""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma


@gluon.jit
def ring(desc, STAGES: gl.constexpr):
    """(slots, ready, empty): STAGES tiles of desc's shape in shared memory, each with an mbarrier the copy
    engine completes (ready) and one both consumers release it through (empty: one arrival a consumer,
    since Gluon's mbarrier.arrive syncs the partition's 128 threads (bar.sync N, 128) and one thread
    arrives; a count of 256 would never complete, and the producer would hang)."""
    slots = gl.allocate_shared_memory(desc.dtype, [STAGES] + desc.block_type.shape, desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    return slots, ready, empty


@gluon.jit
def fill(desc, tiles, slot, phase, batch, head, row):
    """The producer's side of a `ring` (its triple `tiles`): once both consumers have released slot `slot`
    from its last use, one (1, 1, rows, 128) tile of desc at (batch, head, row) into it by the copy engine."""
    slots, ready, empty = tiles
    mbarrier.wait(empty.index(slot), phase ^ 1)  # a fresh mbarrier reads as phase 1 completed
    mbarrier.expect(ready.index(slot), desc.block_type.nbytes)
    tma.async_copy_global_to_shared(desc, [batch, head, row, 0], ready.index(slot), slots.index(slot))


@gluon.jit
def load_key_tiles(k_desc, v_desc, keys, values, batch, kv_head, first_key, n_tiles, start):
    """The producer's walk: K and V of n_tiles key tiles from key position first_key on (any position: the
    copy engine reads from any row, and fills rows past the end with zeros) into their rings (`ring`'s
    triples) from ring position `start` on (a persistent program's rings run on across its items), each
    slot once both consumers have released it."""
    STAGES: gl.constexpr = keys[0].shape[0]
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    for j in range(n_tiles):
        slot, phase = (start + j) % STAGES, ((start + j) // STAGES) & 1
        key = first_key + j * TILE_N
        fill(k_desc, keys, slot, phase, batch, kv_head, key)
        fill(v_desc, values, slot, phase, batch, kv_head, key)
