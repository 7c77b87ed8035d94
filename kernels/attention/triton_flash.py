"""Our Triton flash-attention forward: one kernel for every mask that is a key interval per query.

Every mask variant in the catalog lets query position q see exactly the keys lo(q) <= k <= hi(q):

    causal           lo = 0                    hi = q
    sliding window   lo = q - window + 1       hi = q        (window counts the query itself)
    document         lo = first key of q's doc hi = q        (packed sequences, causal)
    prefix-LM        lo = 0                    hi = max(q, prefix - 1)
    full             lo = 0                    hi = kv_len - 1

so one kernel covers them all and skips whole key blocks outside [min lo, max hi] of a query block.
Score functions (tanh soft-capping, ALiBi) are compile-time switches applied to every visible score.
A selection (DSA's top-k keys a query, a byte a key) is one more: it masks every tile,
inside the interval. triton_token_sparse.py runs it where the selection is dense enough and the
Gluon kernels (a bit a key, gluon_selection.py) cannot run the tensors (off Hopper), where the
Triton backward kernels read its bytes too (triton_attention_backward.py).

Grouped KV heads (GQA/MQA): one program owns one KV head and a block of the rows of its query-head
group, rows laid out (group head, query position). At prefill a block lies inside one query head; at
decode (one query token) the group's heads share a block, so each KV byte is read once, not once per
query head.

Positions: queries are the last q_len positions of the kv_len keys (q_len == kv_len at prefill, 1 at
decode), so query row i sits at absolute position kv_len - q_len + i.

K and V tiles come through tensor descriptors (Hopper's bulk tensor copy engine, TMA): a block of
pointers for a 64x128 tile costs each of 256 threads 32 64-bit addresses, registers the softmax
needs. Rows past the end of a head's keys read as zeros (the descriptor is 4-D, so a tile never runs
into the next head) and are masked out of the scores like any invisible key.
"""

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels import tuned_choices
from kernels.interpreter import COMPILED

LOG2E = 1.4426950408889634

# Measured on an H100 (causal GQA, B=4 H=32/8 S=4096 D=128 bf16), pointer loads: BLOCK 128x64, 8 warps,
# 4 stages won at 409 TFLOP/s out of 36 configs; for decode, 16x64, 4 warps, 3 stages (2.8 TB/s). Each
# config costs a compile (~3 s) the first time a machine tunes a key, so the lists keep the winners
# and a neighbour.
# The 16-row configs serve decode, where a KV head's whole query group is a handful of rows.
def _set_tile(nargs):
    """Autotune pre-hook: the descriptors' tile is the config's key block."""
    for name in ("desc_k", "desc_v"):
        nargs[name].block_shape = [1, 1, nargs["BLOCK_N"], nargs["HEAD_DIM"]]


def _configs(shapes):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st, pre_hook=_set_tile)
        for bm, bn, w, st in shapes
    ]


PREFILL_CONFIGS = _configs(((128, 64, 8, 4), (128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2)))
DECODE_CONFIGS = _configs(((16, 64, 4, 3), (16, 128, 4, 3)))
# The interpreter runs on the CPU in tests: one small config, no autotuning.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64}


@triton.jit
def _tanh(x):
    if COMPILED:  # the hardware tanh exists only compiled (kernels/interpreter.py)
        # tanh.approx.f32: one MUFU instruction where the portable path spends an exp2, a reciprocal, a
        # series and a select (softcap_50 ran 1.72x our causal on an H100 that way). Its relative error,
        # at most 2^-11 (PTX ISA), reaches a capped score s as |s| 2^-11: 0.003 at |s| = 6, about the
        # largest of llama-3-8b-s4k's seeded scores (unit normal, 2e9 of them), 0.024 at the cap itself.
        # bfloat16 rounds the output and the inputs by up to 2^-8 relative: the tanh's error is below.
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        # Portable (libdevice does not run under the interpreter). Through exp alone, 1 - 2/(e^2x + 1)
        # loses absolute precision near 0, and softcap multiplies that by the cap (50): 5e-6 score error
        # in float32, over the data-derived tolerance. Below |x| = 0.1 the odd series to x^5 is exact
        # to 1e-8 relative.
        x2 = x * x
        series = x * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)))
        via_exp = 1.0 - 2.0 / (tl.exp2(x * (2.0 * 1.4426950408889634)) + 1.0)
        return tl.where(tl.abs(x) < 0.1, series, via_exp)


@triton.jit
def _bounds(q_pos, batch, kv_len, window, prefix, DocStart,
            CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr):
    """(lo, hi): the key interval each query position sees (the module's docstring lists them); q_pos a
    vector or a scalar. The forward, our backward and the Gluon kernels all read the masks through it."""
    lo = q_pos * 0
    hi = q_pos * 0 + (kv_len - 1)
    if CAUSAL:
        hi = q_pos
    if PREFIX:
        hi = tl.minimum(tl.maximum(hi, prefix - 1), kv_len - 1)  # a prefix may exceed the sequence
    if WINDOW:
        lo = tl.maximum(lo, q_pos - window + 1)
    if DOCUMENTS:
        lo = tl.maximum(lo, tl.load(DocStart + batch * kv_len + q_pos))
    return lo, hi


@triton.jit
def _attend_block(
    acc, l_i, m_i, q, desc_k, desc_v, batch, kv_head, start_n, lo, hi, q_pos, q_head, n_q_heads,
    sm_scale, softcap, selected_rows,
    MASKED: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, SELECTION: tl.constexpr,
    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k = desc_k.load([batch, kv_head, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
    v = desc_v.load([batch, kv_head, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
    qk = tl.dot(q, tl.trans(k))
    # slope of head h (0-based) is 2^(-8 (h+1) / H), the ALiBi paper's geometric sequence.
    if ALIBI and SOFTCAP:
        s = softcap * _tanh(qk * (sm_scale / softcap))
        slope = tl.exp2(-8.0 * (q_head + 1).to(tl.float32) / n_q_heads)
        s = s + slope[:, None] * (offs_n[None, :] - q_pos[:, None]).to(tl.float32)
        to_log2 = 1.4426950408889634
    elif ALIBI:
        # The bias joins the raw score through a slope divided by the scale once a row, so a score
        # costs one fused multiply-add (with the distance's subtract and conversion) and exp2's argument
        # stays the causal kernel's one FMA: (s x scale + bias) x log2(e) took three multiplies and an
        # add more a score, 1.19x our causal on an H200 (1.37 vs 1.15 ms at s4k, session 13). The
        # distance stays an exact integer: slope x position less slope x query position would lose
        # 3e-4 of a score to float32 at 4k keys, 1e-2 at 128k.
        slope = tl.exp2(-8.0 * (q_head + 1).to(tl.float32) / n_q_heads) / sm_scale
        s = qk + slope[:, None] * (offs_n[None, :] - q_pos[:, None]).to(tl.float32)
        to_log2 = sm_scale * 1.4426950408889634
    elif SOFTCAP:
        # Scores stay in units of the cap; the cap x log2(e) folds into exp2's fused multiply-add, as plain
        # scores' scale does below. As cap * tanh(s / cap), every score took an IEEE division (~8
        # instructions) and three multiplies: 1.27x our causal on an H200 (1.451 vs 1.141 ms, s4k).
        s = _tanh(qk * (sm_scale / softcap))
        to_log2 = softcap * 1.4426950408889634
    else:
        # Plain scores stay raw: the row max is scaled once, and exp2's argument becomes one fused
        # multiply-add (s * to_log2 - m) instead of a multiply, then a subtract, per score.
        s = qk
        to_log2 = sm_scale * 1.4426950408889634
    if MASKED:  # also hides the zero rows a tile past the last key reads
        visible = (offs_n[None, :] >= lo[:, None]) & (offs_n[None, :] <= hi[:, None])
        if SELECTION:  # a row's bytes, one a key, read whole and unmasked: rows are padded
            visible = visible & (tl.load(selected_rows[:, None] + offs_n[None, :]) != 0)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * to_log2)
        # A row with no visible key yet keeps m = -inf; subtracting 0 instead keeps exp2 at 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * to_log2)
        m_safe = m_new
    p = tl.exp2(s * to_log2 - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def _attention_forward_kernel(
    Q, desc_k, desc_v, O, DocStart, Lse, Selected,
    stride_qb, stride_qh, stride_qs,
    stride_ob, stride_oh, stride_os,
    n_kv_heads, n_q_heads, group, q_len, kv_len,
    sm_scale, window, prefix, softcap,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STORE_LSE: tl.constexpr = False,
    SELECTION: tl.constexpr = False,
):
    n_rows = group * q_len
    n_row_blocks = tl.cdiv(n_rows, BLOCK_M)
    # Causal row blocks further down see more keys: launch them first so the tail of the grid is short.
    row_block = n_row_blocks - 1 - tl.program_id(0)
    batch = tl.program_id(1) // n_kv_heads
    kv_head = tl.program_id(1) % n_kv_heads

    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = rows < n_rows
    rows_c = tl.minimum(rows, n_rows - 1)  # tail rows borrow the last row's bounds, never stored
    q_head = kv_head * group + rows_c // q_len
    q_pos = kv_len - q_len + rows_c % q_len  # absolute position among the keys
    offs_d = tl.arange(0, HEAD_DIM)

    lo, hi = _bounds(q_pos, batch, kv_len, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)

    first = (tl.min(lo, 0) // BLOCK_N) * BLOCK_N
    end = tl.cdiv(tl.max(hi, 0) + 1, BLOCK_N) * BLOCK_N
    # Key blocks in [unmasked_lo, unmasked_hi) are visible to every row of this block: no mask there.
    unmasked_lo = tl.minimum(tl.maximum(tl.cdiv(tl.max(lo, 0), BLOCK_N) * BLOCK_N, first), end)
    unmasked_hi = tl.maximum(tl.minimum(((tl.min(hi, 0) + 1) // BLOCK_N) * BLOCK_N, end), unmasked_lo)
    if SELECTION:  # a selection masks every tile: all walk as the interval's edges do
        unmasked_lo = end
        unmasked_hi = end

    q_row = rows_c % q_len
    # each row's selection bytes (B x Sq rows of kv_len padded to SELECTION_KEYS, 128), in int64. The padded width
    # as one more argument changed the other masks' code (alibi 128 x 64 at 4 stages: 204 -> 229 registers)
    selected_rows = Selected + (batch * q_len + q_row).to(tl.int64) * (tl.cdiv(kv_len, 128) * 128)
    q_ptrs = Q + batch * stride_qb + q_head[:, None] * stride_qh + q_row[:, None] * stride_qs + offs_d[None, :]
    q = tl.load(q_ptrs)

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    for start_n in range(first, unmasked_lo, BLOCK_N):
        acc, l_i, m_i = _attend_block(
            acc, l_i, m_i, q, desc_k, desc_v, batch, kv_head, start_n, lo, hi, q_pos, q_head, n_q_heads,
            sm_scale, softcap, selected_rows, True, SOFTCAP, ALIBI, SELECTION, BLOCK_N, HEAD_DIM)
    for start_n in range(unmasked_lo, unmasked_hi, BLOCK_N):
        acc, l_i, m_i = _attend_block(
            acc, l_i, m_i, q, desc_k, desc_v, batch, kv_head, start_n, lo, hi, q_pos, q_head, n_q_heads,
            sm_scale, softcap, selected_rows, False, SOFTCAP, ALIBI, SELECTION, BLOCK_N, HEAD_DIM)
    for start_n in range(unmasked_hi, end, BLOCK_N):
        acc, l_i, m_i = _attend_block(
            acc, l_i, m_i, q, desc_k, desc_v, batch, kv_head, start_n, lo, hi, q_pos, q_head, n_q_heads,
            sm_scale, softcap, selected_rows, True, SOFTCAP, ALIBI, SELECTION, BLOCK_N, HEAD_DIM)

    out = acc / l_i[:, None]
    o_ptrs = O + batch * stride_ob + q_head[:, None] * stride_oh + q_row[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_valid[:, None])
    if STORE_LSE:  # for the backward (triton_attention_backward.py): log2 of each row's softmax sum, scaled
        tl.store(Lse + (batch * n_q_heads + q_head) * q_len + q_row, m_i + tl.log2(l_i), mask=row_valid)


AUTOTUNE_KEY = ["group", "q_len", "kv_len", "HEAD_DIM", "CAUSAL", "WINDOW", "PREFIX", "DOCUMENTS", "SOFTCAP", "ALIBI",
                "SELECTION"]
# Triton's own disk cache of autotune results (cache_results) gives up on configs with a pre-hook, and
# ours need one (the descriptors' tile is the config's). So each machine keeps the first choice per
# tuning key (kernels/tuned_choices.py says why), and later processes tune no more.


def _config_name(config):
    return f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']}-w{config.num_warps}-s{config.num_stages}"


# Every kernel and config is in this file: its source names them all.
SOURCE_HASH = tuned_choices.source_hash(__file__)


def _choice_path(key_values, dtype):
    """This machine's file for one tuning key, this file's source, the GPU, Triton and the dtype."""
    return tuned_choices.choice_path([triton.__version__, torch.cuda.get_device_name(), SOURCE_HASH, str(dtype),
                                      *(f"{name}={key_values[name]}" for name in AUTOTUNE_KEY)])


# A selection's rows are padded to this many keys, the widest key tile, so a tile's bytes are read unmasked
# (triton_token_sparse.selection_bytes).
SELECTION_KEYS = 128


def fits(config, selection):
    """Whether a config's tiles fit an SM's shared memory: with a selection's bytes, which the compiler stages
    beside the key tiles, 128 x 128 tiles of 128 rows at 3 stages take 262,168 B, over sm_90's 232,448
    (tools/compile_forward_sm90.py, session 41); decode's 16 rows at 128 keys, 143,392 B, fit."""
    return not (selection and config.kwargs["BLOCK_M"] == 128 and config.kwargs["BLOCK_N"] == 128
                and config.num_stages == 3)


def _remembered(configs, named_args, **kwargs):
    """Autotune pruning: the configs that fit, and of them only the one this machine chose before for this key,
    if it did."""
    key_values = {name: named_args[name] if name in named_args else kwargs[name] for name in AUTOTUNE_KEY}
    configs = [c for c in configs if fits(c, key_values["SELECTION"])]
    chosen = tuned_choices.recalled(_choice_path(key_values, named_args["Q"].dtype))
    return [c for c in configs if _config_name(c) == chosen] or configs


_REMEMBERED = set()  # (key values, dtype) this process has written or found: later launches skip the file


def _remember(config, key_values, dtype):
    seen = (tuple(key_values.items()), dtype, tuned_choices.CHOICES_DIR)
    if seen in _REMEMBERED:  # a block or a training step launches per call: no hash and stat each time
        return
    _REMEMBERED.add(seen)
    tuned_choices.keep(_choice_path(key_values, dtype), _config_name(config), key_values)


_prefill_kernel = triton.autotune(
    configs=PREFILL_CONFIGS, key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _remembered},
)(_attention_forward_kernel)
_decode_kernel = triton.autotune(
    configs=DECODE_CONFIGS, key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _remembered},
)(_attention_forward_kernel)


def doc_start_arg(doc_start, q):
    """doc_start ((B, S) document starts) as every kernel of ours reads it: int32, contiguous, on q's device;
    q where there is none (a pointer the kernel never reads, DOCUMENTS off)."""
    return q if doc_start is None else doc_start.to(device=q.device, dtype=torch.int32).contiguous()


def score_refusal(softcap, scale):
    """Why our forwards (this one and gluon_flash's) cannot take these score options, or None. A cap of 0
    would divide by it, and below 0 exp2 meets +inf; both kernels take a row's max of raw scores and scale
    it once, which is the max of the scaled scores only for a positive scale (0 divides too)."""
    if softcap is not None and not softcap > 0:
        return f"softcap caps the scores at +-softcap: it must be positive, not {softcap}"
    if scale is not None and not scale > 0:
        return f"scale multiplies q.k before the softmax: it must be positive, not {scale}"
    return None


def forward_launcher(
    q, k, v, *, causal, window=None, prefix=None, doc_start=None, softcap=None, alibi=False, scale=None,
    config=None, lse=None, selection=None,
):
    """A launch of the attention forward on these tensors: `launcher()` allocates the output, launches
    the kernel and returns the output. Checks, tensor descriptors and kernel choice happen once here,
    not in every timed call. q: (B, Hq, Sq, D); k, v: (B, Hkv, Skv, D) with Hq a multiple of Hkv.
    config: a `triton.Config` (BLOCK_M, BLOCK_N, warps, stages) to launch instead of autotuning, for a
    kernel engineer comparing one tile against the tuned choice (a plug-in candidate). lse: a (B, Hq,
    Sq) float32 tensor the launch also fills with each row's log2-sum-exp2 of its scaled scores (what
    the backward recomputes the probabilities from).

    doc_start: (B, Skv) int32, for each key position the first position of its document (packed
    sequences); requires causal. selection: (B, Sq, Skv padded to SELECTION_KEYS) uint8
    (triton_token_sparse.selection_bytes), the keys each query reads inside its interval; a row must keep
    at least one key. The output is (B, Hq, Sq, D) in q's dtype.
    """
    batch, n_q_heads, q_len, head_dim = q.shape
    _, n_kv_heads, kv_len, _ = k.shape
    if n_q_heads % n_kv_heads:
        raise ValueError(f"{n_q_heads} query heads is not a multiple of {n_kv_heads} KV heads")
    if doc_start is not None and not causal:
        raise ValueError("the document mask is defined for causal attention only")
    why = score_refusal(softcap, scale)
    if why:
        raise ValueError(why)
    if kv_len == 0:
        raise ValueError("attention over no keys is undefined: kv_len is 0")
    padded = (batch, q_len, -(-kv_len // SELECTION_KEYS) * SELECTION_KEYS)
    if selection is not None and (tuple(selection.shape) != padded or selection.dtype != torch.uint8
                                  or not selection.is_contiguous() or selection.device != q.device):
        raise ValueError(f"a selection is {padded} contiguous uint8 on {q.device} "
                         f"(triton_token_sparse.selection_bytes), not {tuple(selection.shape)} {selection.dtype} "
                         f"on {selection.device}")
    if q.is_cuda and q.element_size() > 2:
        # the tiles are sized for 16-bit inputs: float32's need 328,704 bytes of shared memory at head dim
        # 128 where Hopper has 232,448 (session 20); the interpreter runs float32 on the CPU for the tests
        raise ValueError(f"our attention takes 16-bit inputs on the GPU, not {q.dtype}")
    if head_dim not in (16, 32, 64, 128):
        raise ValueError(f"head_dim {head_dim} unsupported: one of 16, 32, 64, 128")
    for t in (q, k, v):
        if t.stride(-1) != 1:
            raise ValueError("the head dimension must be contiguous")
    for t in (k, v):
        # The copy engine needs a 16-byte-aligned base and 16-byte multiples for every outer stride.
        if t.data_ptr() % 16 or any(stride * t.element_size() % 16 for stride in t.stride()[:-1]):
            raise ValueError("k and v need 16-byte-aligned storage and strides (tensor descriptors)")
    group = n_q_heads // n_kv_heads
    doc_arg = doc_start_arg(doc_start, q)
    # The tile is the interpreter's or the forced config's; the autotuner's pre-hook sets each of its
    # configs' on the GPU.
    tile = [1, 1, (config.kwargs if config else INTERPRETER_CONFIG)["BLOCK_N"], head_dim]
    desc_k, desc_v = TensorDescriptor.from_tensor(k, tile), TensorDescriptor.from_tensor(v, tile)
    sizes = (
        n_kv_heads, n_q_heads, group, q_len, kv_len,
        scale if scale is not None else head_dim ** -0.5,
        window or 0, prefix or 0, softcap or 1.0,
    )
    flags = dict(
        CAUSAL=causal, WINDOW=window is not None, PREFIX=prefix is not None,
        DOCUMENTS=doc_start is not None, SOFTCAP=softcap is not None, ALIBI=alibi, HEAD_DIM=head_dim,
        STORE_LSE=lse is not None, SELECTION=selection is not None,
    )
    lse_arg = q if lse is None else lse  # never written unless STORE_LSE
    selection_arg = q if selection is None else selection  # never read unless SELECTION

    def grid(meta):
        return (triton.cdiv(group * q_len, meta["BLOCK_M"]), batch * n_kv_heads)

    if config is not None:
        meta = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
        kernel, flags = _attention_forward_kernel[grid(config.kwargs)], {**flags, **meta}
    elif not q.is_cuda:
        kernel, flags = _attention_forward_kernel[grid(INTERPRETER_CONFIG)], {**flags, **INTERPRETER_CONFIG}
    else:
        tuner = _decode_kernel if group * q_len <= 16 else _prefill_kernel
        kernel = tuner[grid]

    def launcher():
        out = torch.empty_like(q)
        kernel(q, desc_k, desc_v, out, doc_arg, lse_arg, selection_arg, q.stride(0), q.stride(1), q.stride(2),
               out.stride(0), out.stride(1), out.stride(2), *sizes, **flags)
        return out

    if config is not None or not q.is_cuda:
        return launcher

    def first_launch():
        """Launches, tuning on the first launch anywhere for this key, and remembers the choice."""
        out = launcher()
        _remember(tuner.best_config, {"group": group, "q_len": q_len, "kv_len": kv_len, **flags}, q.dtype)
        return out

    first_launch.then = launcher
    return first_launch
