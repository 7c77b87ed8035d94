"""The backward of our attention (triton_attention.py) as an autograd function: FlashAttention-2's two kernels,
dK/dV and dQ (triton_backward_kernels.py says what they compute). On a GPU the two run side by side, on two
streams. On Hopper, where the tensors suit them, gluon_backward.py's and gluon_dq.py's kernels run the same two
halves instead (session 24, H200, gqa_8 at llama-3-8b-s4k: dK/dV 2.224 and dQ 1.440 ms against the Triton
kernels' 2.484 and 1.555). A token selection (DSA) runs the Gluon kernels where its words come beside its bytes
(gluon_selection.py: dQ reads the forward's, dK/dV each key's), else the Triton ones, which read the bytes.
"""

import functools
from dataclasses import dataclass

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.attention import triton_attention
from kernels.attention.triton_backward_kernels import _dkdv_kernel, _dq_kernel, _preprocess_kernel
from kernels.attention.triton_flash import SELECTION_KEYS, doc_start_arg

# a selection's words for the Gluon kernels (gluon_selection.py), options beside its bytes (`selection`)
WORD_OPTIONS = ("selection_words", "selection_key_words")

try:
    from triton.experimental import gluon  # noqa: F401 - only its absence sends every case to the Triton kernels
except ImportError:  # a Triton without Gluon (a defect in our Gluon modules still raises, below)
    gluon_backward = gluon_dq = None
else:
    from kernels.attention import gluon_backward, gluon_dq


@dataclass(frozen=True)
class Tiles:
    """One backward kernel's launch on a GPU: query rows and keys a tile, warps, pipeline stages."""

    rows: int
    keys: int
    warps: int
    stages: int


# Swept by tools/probe_attention_backward.py on an H200 with the loop tiles through descriptors and one
# loop a mask kind (llama-3-8b-s4k, forward+backward, session 20): dK/dV's 64 x 64, 4 warps, 2 stages
# still won for gqa_8 and softcap_50 (5.154 ms gqa_8; the next, 64 x 128 with 8 warps, 5.293); dQ's 128 x
# 64, 8 warps, 3 stages 5.156 ms against 64 x 64's 5.193 (softcap_50: 6.264 against 6.221, level).
# The interpreter's tile is always BLOCK, which the tests' lengths are set by.
DKDV_TILES = Tiles(64, 64, 4, 2)
DQ_TILES = Tiles(128, 64, 8, 3)
BLOCK = 64  # rows and keys a tile in the interpreter, and rows a preprocess program


def _launch(tiles):
    """A kernel's tile and launch arguments: the GPU's Tiles, or the interpreter's BLOCK (tiles None)."""
    if tiles is None:
        return {"BLOCK_M": BLOCK, "BLOCK_N": BLOCK}
    return {"BLOCK_M": tiles.rows, "BLOCK_N": tiles.keys, "num_warps": tiles.warps, "num_stages": tiles.stages}


def _describable(t):
    """Whether the copy engine can read t: a 16-byte-aligned base and 16-byte multiples for every outer
    stride (a tensor descriptor's terms)."""
    return t.data_ptr() % 16 == 0 and all(stride * t.element_size() % 16 == 0 for stride in t.stride()[:-1])


@functools.cache
def _pooled_side_streams(device):
    """Two streams from torch's pool for dQ's kernel, one pair a GPU (device a torch.device with its index)."""
    return torch.cuda.Stream(device), torch.cuda.Stream(device)


def _side_stream(main):
    """The stream dQ's kernel runs on beside `main`, never main itself: torch hands its 32 pooled streams
    out in turn, so a caller may be running on one cached here, and the two kernels would then run one
    after the other (right, but without the overlap). Of two consecutive pooled streams at most one is
    main, and a caller's stream always gets the same one."""
    first, second = _pooled_side_streams(main.device)
    return first if first != main else second


class TritonAttention(torch.autograd.Function):
    """Our forward (with lse) and the two backward kernels, for q (B, Hq, Sq, D), k, v (B, Hkv, Skv, D);
    `items`, the forward's document work listed once (triton_attention.document_work), or None. options are
    triton_attention.forward_launcher's; with a `selection` (DSA's bytes, triton_token_sparse.selection_bytes)
    the backward runs the Triton kernels, which read it, the forward too, unless its words come beside it:
    `selection_words` for the Gluon forward and dQ, `selection_key_words` for the Gluon dK/dV (the backward's
    alone: the forward is not handed them)."""

    @staticmethod
    def forward(ctx, q, k, v, options, items=None):
        if any(options.get(name) is not None for name in WORD_OPTIONS) and options.get("selection") is None:
            raise ValueError("a selection's words come beside its bytes (triton_token_sparse.selection_bytes)")
        lse = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        forward = {name: value for name, value in options.items() if name != "selection_key_words"}
        out = triton_attention.forward_launcher(q, k, v, lse=lse, items=items, **forward)()
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        if q.numel() == 0:  # no query: nothing flows back (and a descriptor needs a row)
            return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None, None
        # The kernels read Q and DO and write DQ with q's strides, K, V, DK and DV with k's. A gradient
        # is allocated like its input: in the input's layout where that is dense (a block's projections
        # are transposed views), contiguous where not (a slice of a fused QKV projection), and the input
        # then goes into it. The forward's output was allocated like q, so it has DQ's layout, which the
        # preprocess writes DO in (a DO read with other strides than its own put dq off by 10).
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        if q.stride() != dq.stride() or not _describable(q):
            # a fresh copy: contiguous() would hand back a contiguous q at a misaligned offset as it is
            q = q.clone(memory_format=torch.contiguous_format)
            dq = torch.empty_like(q)
            # The preprocess writes dO in out's strides, which dQ's kernel reads as q's. A fresh copy, as
            # q's: contiguous() keeps the stride of a size-1 dimension, which torch ignores and a
            # descriptor does not (a batch of 1 with an odd batch stride).
            out = out.clone(memory_format=torch.contiguous_format)
        if v.stride() != k.stride() or dk.stride() != k.stride():  # the forward refused k, v misaligned
            k, v = k.contiguous(), v.contiguous()
            dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        opts = ctx.options
        batch, n_q_heads, q_len, head_dim = q.shape
        n_kv_heads, kv_len = k.shape[1], k.shape[2]
        # The preprocess reads dO with its own strides but a contiguous head dim, in the output's dtype
        # (delta from the values the kernels read): a loss of out.sum() hands an expanded dO (every
        # stride 0), a transposed output one whose head dim is strided.
        if grad_out.stride(-1) != 1 or grad_out.dtype != out.dtype:
            grad_out = grad_out.to(out.dtype).contiguous()
        do = torch.empty_like(out)
        delta = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        selection = opts.get("selection")
        unselected = selection is None  # the Gluon kernels read a selection's words, not its bytes
        words, key_words = (opts.get(name) for name in WORD_OPTIONS)
        plain = {name: value for name, value in opts.items() if name not in ("selection", *WORD_OPTIONS)}
        dkdv, dq_tiles = (DKDV_TILES, DQ_TILES) if q.is_cuda else (None, None)
        if selection is not None and any(SELECTION_KEYS % (t.keys if t else BLOCK) for t in (dkdv, dq_tiles)):
            # a key tile must divide a selection row's padding: its bytes are read unmasked
            raise ValueError(f"a key tile of {dkdv.keys if dkdv else BLOCK} or {dq_tiles.keys if dq_tiles else BLOCK} "
                             f"does not divide a selection row's padding of {SELECTION_KEYS} keys")
        hopper_dkdv = (unselected or key_words is not None) and gluon_backward and \
            not gluon_backward.refusal(q, k, v, do, dk, dv)
        shifted = torch.empty_like(lse) if hopper_dkdv and opts.get("alibi") else None  # its ALiBi's lse, shifted
        _preprocess_kernel[(triton.cdiv(q_len, BLOCK), batch * n_q_heads)](
            out, grad_out, do, delta, lse, shifted if shifted is not None else lse, *out.stride()[:3],
            *grad_out.stride()[:3], n_q_heads, q_len, HEAD_DIM=head_dim, BLOCK=BLOCK,
            ALIBI_ROWS=gluon_backward.BLOCK_M if shifted is not None else 0)
        doc_start = opts.get("doc_start")
        doc_arg = doc_start_arg(doc_start, q)
        scale = opts.get("scale") or head_dim ** -0.5
        common = (n_kv_heads, n_q_heads, n_q_heads // n_kv_heads, q_len, kv_len, scale, opts.get("window") or 0,
                  opts.get("prefix") or 0, opts.get("softcap") or 1.0)
        flags = dict(CAUSAL=opts["causal"], WINDOW=opts.get("window") is not None,
                     PREFIX=opts.get("prefix") is not None, DOCUMENTS=doc_start is not None,
                     SOFTCAP=opts.get("softcap") is not None, ALIBI=bool(opts.get("alibi")), HEAD_DIM=head_dim,
                     SELECTION=selection is not None)
        # each row's bytes, padded to `width` keys (never read without a selection)
        selected, width = (lse, 0) if selection is None else (selection, selection.shape[-1])
        row_tile = [1, 1, dkdv.rows if dkdv else BLOCK, head_dim]
        key_tile = [1, 1, dq_tiles.keys if dq_tiles else BLOCK, head_dim]
        # On a GPU dQ's kernel runs on a stream of its own beside dK/dV's: the two read the same inputs and
        # write apart, and causal's programs differ up to 64x in length at 4096 queries (one row block of 64
        # sees the last key tile, all 64 the first), so either kernel's last wave leaves SMs idle that the
        # other's programs can fill. Everything dQ's kernel touches stays alive until backward returns,
        # and the main stream waits for the side stream before that (before any free): no record_stream,
        # which a CUDA graph's capture would not keep.
        main = torch.cuda.current_stream(q.device) if q.is_cuda else None
        side = _side_stream(main) if main is not None else None  # None on the CPU: one stream, no fork
        if side is not None:  # fork after the preprocess, whose delta and dO both kernels read
            side.wait_stream(main)
        if hopper_dkdv:
            gluon_backward.launch_dkdv(q, k, v, do, lse if shifted is None else shifted, delta, dk, dv,
                                       lse_shifted=shifted is not None, **plain, selection=key_words)
        else:
            _dkdv_kernel[(triton.cdiv(kv_len, dkdv.keys if dkdv else BLOCK), batch * n_kv_heads)](
                TensorDescriptor.from_tensor(q, row_tile), k, v, TensorDescriptor.from_tensor(do, row_tile), lse, delta,
                doc_arg, dk, dv, selected, width, *k.stride()[:3], *common, **flags, **_launch(dkdv))
        with torch.cuda.stream(side):
            if (unselected or words is not None) and gluon_dq and not gluon_dq.refusal(q, k, v, do, dq):  # Hopper's
                gluon_dq.launch_dq(q, k, v, do, lse, delta, dq, **plain, selection=words)
            else:
                _dq_kernel[(triton.cdiv(q_len * n_q_heads // n_kv_heads, dq_tiles.rows if dq_tiles else BLOCK),
                            batch * n_kv_heads)](
                    q, TensorDescriptor.from_tensor(k, key_tile), TensorDescriptor.from_tensor(v, key_tile), do, lse,
                    delta, doc_arg, dq, selected, width, *q.stride()[:3], *common, **flags, **_launch(dq_tiles))
        if side is not None:
            main.wait_stream(side)
        return dq, dk, dv, None, None
