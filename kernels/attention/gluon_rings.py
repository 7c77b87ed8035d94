"""The copy engine's rings for our Gluon attention kernels (gluon_flash.py's forward, gluon_dq.py's dQ,
gluon_backward.py's dK/dV): tiles in shared memory, each with an mbarrier the copy engine completes and
one the two consumer warpgroups release it through, the producer's side that fills them, and the forward's
output leaving through its query tile."""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma


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


@gluon.jit
def ones_tiles(dtype: gl.constexpr, STAGES: gl.constexpr, TILE_N: gl.constexpr, FILL: gl.constexpr):
    """STAGES (8, TILE_N) tiles of ones in shared memory (gluon_softmax.issue_pv's row sums), one a ring
    stage (one tile's eight descriptors stayed live through the key loop and spilled, the window 112 B),
    filled where FILL. Stored (8, keys) and read K-major through a permute, as K is for S: a (keys, 8)
    tile's 16-byte rows take no swizzle, and ptxas 12.8 (Triton 3.6.0's) built that MN-major operand's
    descriptors from uniform registers never written (an illegal address on an H200, session 27)."""
    layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([8, TILE_N], dtype)
    ones = gl.allocate_shared_memory(dtype, [STAGES, 8, TILE_N], layout)
    if FILL:
        for i in gl.static_range(STAGES):
            ones.index(i).store(gl.full([8, TILE_N], 1.0, dtype,
                                layout=gl.BlockedLayout([1, 8], [2, 16], [gl.num_warps(), 1], [1, 0])))
        fence_async_shared()  # the generic proxy's stores, before the tensor cores' reads
    return ones


@gluon.jit
def query_tile(rounds, half):
    """(tile, phase): the query tile of a program's item number `rounds` for consumer `half`, and the phase
    of its mbarriers for that item. Each consumer holds two tiles and alternates between items, so the
    producer loads an item's rows while the item before it is walked (gluon_flash.py's q-ring)."""
    return rounds % 2 * 2 + half, rounds // 2 & 1


@gluon.jit
def store_rows(o_desc, o_smem, o_tile, acc, batch, q_head, row):
    """A consumer's output rows through the copy engine from its item's query tile in shared memory (o_smem,
    the tile o_tile seen as rows x 128): every S done, and no store pending (`_consumer` waits for the last
    item's as it releases that item's tile)."""
    o_smem.store(acc.to(o_desc.dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [batch, q_head, row, 0], o_tile)
