"""Our token-level top-k attention (DSA): each query reads only the keys its selection lists, by one of two kernels.

Gathered (this module's kernel): a program is one (sequence, query, KV head): its rows are the KV head's query
heads (4 for Llama-3-8B, padded to the 16 rows a dot takes), its keys the query's selected positions
(ascending), gathered a tile of BLOCK_N at a time by index, with the online softmax of flash attention. No two
queries share a selection, so no key tile is shared between programs: the kernel is a gather, bound by memory
(H200, llama-3-8b-s4k: 12.81 ms, 16.3x the baseline per useful FLOP, session 41's default tier).

Masked: causal flash attention whose every tile also masks the keys a row did not select, so the tensor cores run
whole tiles and compute pairs no row reads: our Gluon forward on Hopper with the selection a bit a key
(gluon_selection.py), our Triton forward elsewhere with a byte a key (triton_flash.py). The indexer's top k scatter
over the causal keys, so nearly every causal tile holds some row's key and a walk skips none: it costs the same
whatever k (llama-3-8b-s4k, the Triton kernel: 2.23 ms, session 41; our causal Triton forward 1.14, session 42).
Where k is a large share of the causal keys (llama-3-8b-s4k: 0.75; s16k: 0.23; s32k: 0.12) that beats the gather;
where it is a small one it does not. Each masked kernel's `dense_from` picks by that share at prefill; decode (a
handful of query rows, bound by the keys it reads) keeps the gather.

A gradient (`trainable`) runs the masked forward at any share and our attention's backward
(triton_attention_backward.py), its kernels masking every tile by the selection (on Hopper the Gluon ones by its
bits, elsewhere the Triton ones by its bytes): the gather has no backward, and `dense_from` is a crossing of forward
times, not a limit of the masked kernels.
"""

from typing import Callable, NamedTuple

import torch
import triton
import triton.language as tl

from kernels.mla.triton_decode import online_softmax_step

ROWS = 16
MASKED_ROWS = 128  # the masked kernel at prefill: at least one of its 128-row blocks of query positions


def selected_share(topk, q_len, kv_len):
    """The selection's pairs over the causal pairs (queries at the last q_len of kv_len positions)."""
    from variantbench.catalog.token_selection import selected_token_pairs

    return selected_token_pairs(topk, q_len, kv_len) / selected_token_pairs(kv_len, q_len, kv_len)  # k = all: causal


def selection_bytes(selection):
    """A (B, Sq, Skv) bool selection as the forward reads it: a byte a key, 1 where the query reads it, each row
    padded with 0 to a multiple of SELECTION_KEYS. Packed 8 keys a byte (token_selection.packed_bits) each
    score fetched its own byte: 32 loads a thread a 128 x 64 tile, 8 rows' cache lines a warp's load, and
    dsa_topk_2048 at llama-3-8b-s4k took 7.54 ms (H200, session 41) where causal takes about 1.2; a row's bytes
    are one coalesced load a tile (16 MiB a sequence at 4096 positions: 64 MiB at llama-3-8b-s4k)."""
    from kernels.attention.triton_flash import SELECTION_KEYS

    pad = -selection.shape[-1] % SELECTION_KEYS
    return torch.nn.functional.pad(selection.view(torch.uint8), (0, pad)).contiguous()  # one copy: 1 GiB at s32k


def triton_masked_launch(q, k, v, selection):
    """The selection as a byte a key over causal tiles (triton_flash.py), tuned on its first launch: the launch-only
    call."""
    from kernels.attention import triton_flash

    first_launch = triton_flash.forward_launcher(q, k, v, causal=True, selection=selection_bytes(selection))
    first_launch()
    return getattr(first_launch, "then", first_launch)


def gluon_masked_launch(q, k, v, selection):
    """The selection as a bit a key over causal tiles (gluon_flash.py, gluon_selection.py), launched once: the
    launch-only call."""
    from kernels.attention import gluon_flash
    from kernels.attention.gluon_selection import selection_words

    launch = gluon_flash.forward_launcher(q, k, v, causal=True, selection=selection_words(selection))
    launch()
    return launch


class MaskedKernel(NamedTuple):
    """One of our forwards running the selection as a mask over causal tiles, and the share of the causal pairs from
    which it beats the gather (`prepare` takes it there at prefill): where the two tie, measured."""

    name: str
    dense_from: float
    launch: Callable  # (q, k, v, selection) -> the launch-only call, launched once


# On an H200 (session 42, tools/probe_dsa.py, do_bench, k from 512 to 4096) the Triton kernel took the same at every
# k, 8.18 ms at llama-3-8b-s16k and 32.30 at s32k, and the gather grew with the share, 67.1 and 271.7 ms a unit of
# share (linear fits, offsets 0.49 and 1.52 ms): they cross at 0.115 and 0.113. At s32k's dsa_topk_2048 (0.121)
# the Triton kernel took 32.34 ms against the gather's 34.25.
TRITON_MASKED = MaskedKernel("our Triton forward", 0.114, triton_masked_launch)
# On an H200 (session 43, tools/probe_dsa.py, do_bench) the Gluon kernel took 3.79-3.91 ms at llama-3-8b-s16k and
# 14.99-15.28 at s32k whatever k, the gather 4.66 and 16.43 ms at s16k's shares 0.0615 and 0.234, 19.14 and 35.03 at
# s32k's 0.0615 and 0.121 (68.1 and 266.8 ms a unit of share): they cross at 0.050 and 0.047.
GLUON_MASKED = MaskedKernel("our Gluon forward", 0.048, gluon_masked_launch)


def masked_kernel(q, k, v):
    """The masked kernel for these tensors: the Gluon forward where it takes them (Hopper, a Triton with Gluon), else
    the Triton one."""
    from kernels.attention.triton_attention import gluon_refusal

    return GLUON_MASKED if gluon_refusal(q, k, v) is None else TRITON_MASKED


@triton.jit
def _token_sparse_kernel(
    Q, K, V, O, Indices, Counts,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks, stride_ob, stride_oh, stride_os,
    n_kv_heads, group, q_len, width, scale_log2,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    kv_head, query = pid % n_kv_heads, pid // n_kv_heads
    batch, t = query // q_len, query % q_len
    rows = tl.arange(0, ROWS)
    row_ok = rows < group
    q_head = kv_head * group + rows
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + batch * stride_qb + q_head[:, None] * stride_qh + t * stride_qs + d[None, :],
                mask=row_ok[:, None], other=0.0)
    count = tl.load(Counts + query)
    m_i = tl.zeros([ROWS], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
    base = batch * stride_kb + kv_head * stride_kh
    for first in range(0, count, BLOCK_N):
        j = first + tl.arange(0, BLOCK_N)
        key_ok = j < count
        key = tl.load(Indices + query.to(tl.int64) * width + j, mask=key_ok, other=0).to(tl.int64)
        offs = base + key[:, None] * stride_ks + d[None, :]
        k = tl.load(K + offs, mask=key_ok[:, None], other=0.0)
        v = tl.load(V + offs, mask=key_ok[:, None], other=0.0)
        s = tl.where(key_ok[None, :], tl.dot(q, tl.trans(k)) * scale_log2, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc)
    out = acc / l_i[:, None]
    tl.store(O + batch * stride_ob + q_head[:, None] * stride_oh + t * stride_os + d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])


def gather_launch(variant, problem):
    """The gather kernel: lists each query's selected keys once (ascending, `token_selection.selected_indices`),
    launches once, returns the launch-only call."""
    from variantbench.catalog.token_selection import selected_indices

    q, k, v = problem.q, problem.k, problem.v
    batch, n_q_heads, q_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    group = n_q_heads // n_kv_heads
    if group > ROWS or k.stride() != v.stride() or k.stride(-1) != 1:
        raise ValueError(f"{group} query heads per KV head (at most {ROWS}), k and v in one layout")
    indices, valid = selected_indices(problem.selection, variant.topk_tokens)
    counts = valid.sum(-1, dtype=torch.int32).contiguous()
    indices = indices.to(torch.int32).contiguous()
    kernel = _token_sparse_kernel[(batch * q_len * n_kv_heads,)]
    launch = {"num_warps": 4, "num_stages": 2} if q.is_cuda else {}
    block_n = 64  # the interpreter too: its cost is per tile, and 16-key tiles made a CPU case take minutes

    def call():
        out = torch.empty_like(q)
        kernel(q, k, v, out, indices, counts, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
               k.stride(2), out.stride(0), out.stride(1), out.stride(2), n_kv_heads, group, q_len, indices.shape[-1],
               head_dim ** -0.5 * 1.4426950408889634, HEAD_DIM=head_dim, ROWS=ROWS, BLOCK_N=block_n, **launch)
        return out

    call()
    return call


def trainable(q, k, v, selection):
    """Our attention with the selection (triton_attention_backward.TritonAttention): its forward the masked kernel
    (`masked_kernel`), its backward's kernels masking every tile: on Hopper the Gluon ones, the selection's bits
    beside its bytes (a row's for the forward and dQ, a key's for dK/dV), elsewhere the Triton ones reading the
    bytes; launched once: the forward+backward case's call."""
    from kernels.attention.triton_attention_backward import TritonAttention

    options = dict(causal=True, selection=selection_bytes(selection))
    if masked_kernel(q, k, v) is GLUON_MASKED:
        from kernels.attention.gluon_selection import key_words, selection_words  # Gluon's: not every Triton has it

        options |= dict(selection_words=selection_words(selection), selection_key_words=key_words(selection))

    def call():
        return TritonAttention.apply(q, k, v, options)

    call()
    return call


def prepare(variant, problem):
    """The masked kernel (`masked_kernel`) where the selection is at least its `dense_from` of the causal pairs at
    prefill, else the gather; the launch-only call, its `backend` naming the kernel. Where q needs a gradient,
    `trainable` at any share (the gather has no backward)."""
    q, k = problem.q, problem.k
    q_len = q.shape[2]
    share = selected_share(variant.topk_tokens, q_len, k.shape[2])
    if q.requires_grad:
        call = trainable(q, k, problem.v, problem.selection)
        masked = masked_kernel(q, k, problem.v)
        backward = "Gluon" if masked is GLUON_MASKED else "Triton"  # the Gluon kernels run its backward too
        call.backend = (f"{masked.name} and our {backward} backward, the selection ({share:.2f} of the causal pairs) "
                        f"masking tiles")
        return call
    masked = masked_kernel(q, k, problem.v)
    if q_len >= MASKED_ROWS and share >= masked.dense_from:
        call = masked.launch(q, k, problem.v, problem.selection)
        call.backend = f"{masked.name}, the selection ({share:.2f} of the causal pairs) masking causal tiles"
        return call
    call = gather_launch(variant, problem)
    call.backend = f"our gather kernel, each query's selected keys by index ({share:.2f} of the causal pairs)"
    return call
