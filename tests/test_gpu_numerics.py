"""Numerics only a GPU shows, skipped elsewhere. On a CUDA machine, with our kernels compiled:

    TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q tests/test_gpu_numerics.py

(tools/s19_lanes.sh to s22_lanes.sh run it). Each is a claim the CPU tests cannot reach: the interpreter takes
other paths (its 16-bit tl.dot sums wrongly, so the router's tensor-core path is compiled-only), and
cuDNN exists only on the GPU."""

import dataclasses
import os

import pytest
import torch
from torch.nn.attention import SDPBackend

from reference import mla as reference_mla
from reference.moe import route
from test_moe import _tied_router_problem
from variantbench.catalog import family
from variantbench.catalog.attention import document_starts
from variantbench.shapes import MLAShape

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs a GPU and our kernels compiled (TRITON_INTERPRET=0)")


@pytest.mark.parametrize("router", ["softmax_topk", "sigmoid_grouped_topk"])
@pytest.mark.parametrize("logit_splits", [None, 0, 3])  # the plan (split at 37 tokens), the other path, 3 slices
def test_triton_routers_match_the_reference_with_exact_ties_in_bfloat16(router, logit_splits):
    from kernels.moe import triton_moe

    config, x, w, bias = _tied_router_problem(32, 8, tokens=37)
    args = config, x.cuda().bfloat16(), w.cuda().bfloat16(), bias.cuda()
    experts, weights = triton_moe.route(router, *args, logit_splits=logit_splits)
    ref_experts, ref_weights = route(router, *args)
    assert torch.equal(experts.long(), ref_experts)
    assert torch.allclose(weights, ref_weights, atol=1e-5)


@pytest.mark.parametrize("backend", [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
def test_mla_prefill_gradients_through_sdpa_in_a_blocks_layout(monkeypatch, backend):
    """DeepSeek-V3's latent attention at prefill (128 heads, keys 192 wide, values 128), its output
    handed back as a block does, (B, S, H x D): through cuDNN every gradient came out wrong on an H200
    until the gradient was laid out as the output (kernels/mla/sdpa.py, session 17)."""
    from kernels.attention import sdpa as attention_sdpa
    from kernels.mla import sdpa as mla_sdpa

    monkeypatch.setattr(attention_sdpa, "FUSED_BACKENDS", (backend,))
    mla = family("mla")
    variant = mla.variant("mla")
    shape = MLAShape("gpu-test-prefill", "deepseek-v3", batch=2, q_len=512, kv_len=512)
    problem = mla.make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=5, requires_grad=True)
    attend = mla_sdpa.prepare_function(variant, problem)
    assert attend.backend == backend.name
    inputs = (problem.q_nope, problem.q_pe, problem.cache, problem.w_uk, problem.w_uv)
    heads, width = problem.config.n_heads, problem.config.v_head_dim
    out_grad = torch.randn(shape.batch, shape.q_len, heads * width, device="cuda",
                           generator=torch.Generator("cuda").manual_seed(6))

    def gradients(out, tensors):
        blocks = out.transpose(1, 2).reshape(shape.batch, shape.q_len, heads * width)
        return torch.autograd.grad((blocks.double() * out_grad.double()).sum(), tensors)

    def reference(dtype):
        tensors = [t.detach().to(dtype).requires_grad_() for t in inputs]
        return gradients(reference_mla.decompressed(*tensors, scale=problem.scale), tensors)

    got = gradients(attend(*inputs[:3]), inputs)
    exact, low = reference(torch.float64), reference(torch.bfloat16)
    for name, g, e, lo in zip(("q_nope", "q_pe", "cache", "w_uk", "w_uv"), got, exact, low):
        error, reference_error = (g.double() - e).abs().max().item(), (lo.double() - e).abs().max().item()
        assert error <= 8 * reference_error, f"d{name}: {error:.3g} against the 16-bit reference's {reference_error:.3g}"


def test_dense_attention_gradients_through_cudnn_after_another_gradient_layout(monkeypatch):
    """Our SDPA piece at the attention family's dims (GQA 32/8 heads, 128 wide, causal), backward first
    with a contiguous output gradient (as the attention family's forward+backward hands it), then in a
    block's layout (B, S, H x D), in one process: at MLA's dims cuDNN reused the first call's plan for
    the second layout and got every gradient wrong (tools/probe_sdpa_backward.py, session 18), and here
    too before every cuDNN call went through kernels/attention/sdpa.py's attend_through (session 19,
    H200: dq 5.32 against the bfloat16 reference's 0.016)."""
    from kernels.attention import sdpa as attention_sdpa
    from reference.attention import attention

    monkeypatch.setattr(attention_sdpa, "FUSED_BACKENDS", (SDPBackend.CUDNN_ATTENTION,))
    fam = family("attention")
    variant = fam.variant("gqa_8")
    shape = dataclasses.replace(fam.shape("llama-3-8b-s4k"), name="gpu-test", batch=2, q_len=512, kv_len=512)
    problem = fam.make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=7, requires_grad=True)
    attend = attention_sdpa.prepare_function(variant, problem)
    assert attend.backend == "sdpa CUDNN_ATTENTION"
    inputs = (problem.q, problem.k, problem.v)
    batch, heads, tokens, width = problem.q.shape
    gen = torch.Generator("cuda").manual_seed(8)
    contiguous_grad = torch.randn(batch, heads, tokens, width, device="cuda", generator=gen)
    block_grad = torch.randn(batch, tokens, heads * width, device="cuda", generator=gen)

    def in_block_layout(out):
        return out.transpose(1, 2).reshape(batch, tokens, heads * width)

    torch.autograd.grad(attend(*inputs), inputs, contiguous_grad.to(torch.bfloat16))  # the first layout's plan
    got = torch.autograd.grad((in_block_layout(attend(*inputs)).double() * block_grad.double()).sum(), inputs)

    def reference(dtype):
        tensors = [t.detach().to(dtype).requires_grad_() for t in inputs]
        out = attention(*tensors, mask_mod=variant.mask_mod(problem))
        return torch.autograd.grad((in_block_layout(out).double() * block_grad.double()).sum(), tensors)

    exact, low = reference(torch.float64), reference(torch.bfloat16)
    for name, g, e, lo in zip("qkv", got, exact, low):
        error, reference_error = (g.double() - e).abs().max().item(), (lo.double() - e).abs().max().item()
        assert error <= 8 * reference_error, f"d{name}: {error:.3g} against the 16-bit reference's {reference_error:.3g}"


def test_our_attention_backward_at_head_dim_128_and_float32_refused():
    """Our attention's GPU tiles are sized for 16-bit inputs (float32's would ask 328,704 bytes of shared
    memory at head dim 128, over Hopper's 232,448): bfloat16's backward launches, its dQ kernel on a
    stream of its own beside dK/dV's, and is within twice SDPA's error of float64 autograd of the
    reference on the same bfloat16 inputs (GQA, causal, a length no tile divides); float32 is refused
    in one line. The gradients are read on the current stream as soon as backward returns, as a
    training step reads them."""
    import torch.nn.functional as F

    from kernels.attention.triton_attention_backward import TritonAttention
    from reference.attention import attention

    gen = torch.Generator(device="cuda").manual_seed(9)

    def inputs(dtype):
        return [torch.randn(1, heads, 200, 128, device="cuda", generator=gen, dtype=dtype).requires_grad_()
                for heads in (4, 2, 2)]

    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=False)
    q, k, v = inputs(torch.bfloat16)
    out = TritonAttention.apply(q, k, v, options)
    grad = torch.randn(out.shape, device="cuda", generator=gen, dtype=out.dtype)
    got = torch.autograd.grad(out, (q, k, v), grad)
    sdpa = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), (q, k, v),
                               grad)
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    reference = attention(*exact, mask_mod=lambda b, h, i, j: j <= i)
    for name, g, theirs, e in zip("qkv", got, sdpa, torch.autograd.grad(reference, exact, grad.double())):
        error, sdpa_error = (g.double() - e).abs().max().item(), (theirs.double() - e).abs().max().item()
        assert error <= 2 * sdpa_error, f"d{name}: {error:.3g} against SDPA's {sdpa_error:.3g}"
    with pytest.raises(ValueError, match="16-bit inputs on the GPU"):
        TritonAttention.apply(*inputs(torch.float32), options)


@pytest.mark.parametrize("selection_kind", ["indexer", "whole-tiles-masked"])
def test_dsa_trains_through_the_gluon_kernels(monkeypatch, selection_kind):
    """DSA at a shape the Gluon forward and backward take (bfloat16, head dim 128, a length a multiple of 128): the
    forward and the dQ kernel must read the rows' words, the dK/dV kernel the keys' words (the Gluon kernels, handed
    them), and the backward the Gluon forward's lse. Two sequences (the words' flat rows and keys cross them): the
    catalog's indexer top 96; and by hand each row itself, in the first sequence rows before 64 also key 0 and rows
    from 300 also key 140, so rows from 128 on walk whole tiles that hide every key (and keys from 141 on see only
    their own rows), in the second rows from 200 also key 40. Output and gradients within twice those of the
    reference computed in bfloat16, against the float64 reference over the selection."""
    from kernels.attention import gluon_backward, gluon_dq, triton_token_sparse
    from reference.attention import attention
    from variantbench.catalog.attention import AttentionVariant, make_problem
    from variantbench.shapes import AttentionShape

    variant = AttentionVariant("dsa_topk_96", topk_tokens=96)
    shape = AttentionShape("s512", "llama-3-8b", 2, 512, 512, device="cuda")
    p = make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=5, requires_grad=True)
    if selection_kind == "whole-tiles-masked":
        rows = torch.arange(512, device="cuda")
        p.selection.zero_()
        p.selection[:, rows, rows] = True
        p.selection[0, :64, 0] = True
        p.selection[0, 300:, 140] = True
        p.selection[1, 200:, 40] = True
    assert not torch.equal(p.selection[0], p.selection[1])
    handed = {}

    def spy(module, name):
        launch = getattr(module, name)

        def spied(*args, **options):
            handed[name] = options.get("selection")
            return launch(*args, **options)
        monkeypatch.setattr(module, name, spied)

    spy(gluon_dq, "launch_dq")
    spy(gluon_backward, "launch_dkdv")
    assert triton_token_sparse.masked_kernel(p.q, p.k, p.v) is triton_token_sparse.GLUON_MASKED
    call = triton_token_sparse.trainable(p.q, p.k, p.v, p.selection)
    out = call()
    grad = torch.randn(out.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(6), dtype=out.dtype)
    got = torch.autograd.grad(out, (p.q, p.k, p.v), grad)
    mask = variant.mask_mod(p)
    low = [t.detach().clone().requires_grad_() for t in (p.q, p.k, p.v)]
    low_out = attention(*low, mask_mod=mask)
    low_grads = torch.autograd.grad(low_out, low, grad)
    exact = [t.detach().double().requires_grad_() for t in (p.q, p.k, p.v)]
    reference = attention(*exact, mask_mod=mask)
    for name, g, theirs, e in zip("oqkv", (out, *got), (low_out, *low_grads),
                                  (reference, *torch.autograd.grad(reference, exact, grad.double()))):
        error, low_error = (g.double() - e).abs().max().item(), (theirs.double() - e).abs().max().item()
        assert error <= 2 * low_error, f"{name}: {error:.3g} against the bfloat16 reference's {low_error:.3g}"
    assert sorted(handed) == ["launch_dkdv", "launch_dq"], f"the Gluon backward kernels ran: {sorted(handed)}"
    assert all(words is not None for words in handed.values()), "a Gluon backward kernel ran without the words"


# cycles of torch.cuda._sleep that hold one stream back: about 0.1 s at the H200's 1.98 GHz, against the
# microseconds the host takes to queue a backward and read its gradient
HOLD_CYCLES = 200_000_000


def _our_attention(heads=(4, 2, 2), length=512):
    """(q, k, v, options): GQA causal bfloat16 inputs of our attention, leaves that take gradients."""
    gen = torch.Generator(device="cuda").manual_seed(11)
    tensors = [torch.randn(1, h, length, 128, device="cuda", generator=gen, dtype=torch.bfloat16).requires_grad_()
               for h in heads]
    return (*tensors, dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=False))


@pytest.mark.parametrize("own_stream", [False, True], ids=["on-the-default-stream", "on-a-stream-of-its-own"])
def test_our_attention_backward_orders_its_two_streams(own_stream):
    """dQ's kernel runs on a side stream, forked after the preprocess and joined before backward returns.
    Each of the two is tested by holding one stream back on the device: the side stream, so without
    the join dq is read before its kernel wrote it; the caller's stream before the backward, so without
    the fork dQ's kernel reads dO and delta before the preprocess wrote them. Either way the read finds
    stale memory, not this call's gradient (on the GPU, values of -5.5 to 3.5 where dq's are under 0.06)."""
    from kernels.attention import triton_attention_backward as backward

    q, k, v, options = _our_attention()
    grads = [torch.randn(q.shape, device="cuda", dtype=q.dtype) for _ in range(2)]

    def dq(grad):
        return torch.autograd.grad(backward.TritonAttention.apply(q, k, v, options), q, grad)[0]

    caller = torch.cuda.Stream() if own_stream else torch.cuda.current_stream()
    caller.wait_stream(torch.cuda.current_stream())  # the inputs were made on the default stream
    with torch.cuda.stream(caller):
        expected = [dq(grad).clone() for grad in grads]
        torch.cuda.synchronize()
        with torch.cuda.stream(backward._side_stream(torch.cuda.current_stream())):
            torch.cuda._sleep(HOLD_CYCLES)
        side_held = dq(grads[0]).clone()
        out = backward.TritonAttention.apply(q, k, v, options)
        torch.cuda._sleep(HOLD_CYCLES)
        caller_held = torch.autograd.grad(out, q, grads[1])[0].clone()
    torch.cuda.synchronize()
    assert torch.equal(side_held, expected[0]), "dq read before dQ's kernel on the side stream wrote it"
    assert torch.equal(caller_held, expected[1]), "dQ's kernel ran before the preprocess it reads"


def test_our_attention_forward_and_backward_replay_from_a_cuda_graph():
    """A training step captured whole (forward, backward) into a CUDA graph, as torch.cuda.graph captures
    one: the side stream's fork and join are captured with it (an unjoined stream fails the capture),
    and a replay writes the eager call's gradients (the two kernels sum in a fixed order: equal bits)."""
    from kernels.attention.triton_attention_backward import TritonAttention

    q, k, v, options = _our_attention()
    grad = torch.randn(q.shape, device="cuda", dtype=q.dtype)

    def step():
        return torch.autograd.grad(TritonAttention.apply(q, k, v, options), (q, k, v), grad)

    eager = [g.clone() for g in step()]
    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm):
        step()
    torch.cuda.current_stream().wait_stream(warm)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for g in captured:
        g.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    for name, got, want in zip("qkv", captured, eager):
        assert torch.equal(got, want), f"d{name} replayed differs from the eager call's"


def _expert_problem(counts, dim, ffn, seed):
    """(rows, w13, w2, offsets) on the GPU in bfloat16 for experts of `counts` rows."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(sum(counts), dim, generator=gen).bfloat16().cuda()
    w13 = (torch.randn(len(counts), 2 * ffn, dim, generator=gen) / dim ** 0.5).bfloat16().cuda()
    w2 = (torch.randn(len(counts), dim, ffn, generator=gen) / ffn ** 0.5).bfloat16().cuda()
    return rows, w13, w2, torch.tensor(counts).cumsum(0).to(torch.int32).cuda()


def _assert_each_kernel_rounds_float64_once(counts, rows, w13, w2, hidden, out):
    """gate_up's hidden rows against float64 of rows, and down's output against float64 of those hidden
    rows: float32 sums rounded once to bfloat16, 2^-8 relative at most (a NaN left unwritten fails it)."""
    exact_hidden, exact_out = [], []
    for r, h, g, d in zip(rows.double().split(counts), hidden.double().split(counts), w13.double().unbind(0),
                          w2.double().unbind(0)):
        gate, up = (r @ g.T).chunk(2, dim=-1)
        exact_hidden.append(torch.nn.functional.silu(gate) * up)
        exact_out.append(h @ d.T)
    torch.testing.assert_close(hidden.double(), torch.cat(exact_hidden), rtol=2 ** -8, atol=1e-4)
    torch.testing.assert_close(out.double(), torch.cat(exact_out), rtol=2 ** -8, atol=1e-4)


def test_our_expert_gemms_compiled_match_float64_and_refuse_float32():
    """gate_up through the copy engine and down through pointers, compiled, at partial tiles (ffn 200: a
    128-column n-block and a partial one; an expert of 70 rows: a whole m-tile and a partial one) against
    float64; float32 refused in one line (its tiles would ask more shared memory than an SM has)."""
    from kernels.moe import triton_experts as te

    counts = [70, 0, 5, 64]
    rows, w13, w2, offsets = _expert_problem(counts, dim=256, ffn=200, seed=0)
    hidden = te.gate_up(rows, w13, offsets)
    out = te.down(hidden, w2, offsets)
    _assert_each_kernel_rounds_float64_once(counts, rows, w13, w2, hidden, out)
    assert not te.serves(rows.float(), w13.float(), w2.float())
    with pytest.raises(ValueError, match="16-bit"):
        te.gate_up(rows.float(), w13.float(), offsets)
    with pytest.raises(ValueError, match="16-bit"):
        te.down(hidden.float(), w2.float(), offsets)


def test_our_expert_gemms_split_by_load_match_float64():
    """Where experts average many rows (prefill), gate_up takes the hot experts (HOT_ROWS rows or more, on
    128-row tiles) and the rest in a launch each, into one buffer: compiled, every row written and within a
    rounding of float64, as is down of those rows; the layer's experts() is those launches exactly."""
    from kernels.moe import triton_experts as te

    counts, ffn = [300, 0, 5, te.HOT_ROWS, te.HOT_ROWS - 1, 64, 1, 260], 200
    assert sum(counts) >= te.MANY_ROWS * len(counts)
    rows, w13, w2, offsets = _expert_problem(counts, dim=256, ffn=ffn, seed=1)
    hidden = torch.full((sum(counts), ffn), float("nan"), dtype=torch.bfloat16, device="cuda")
    for least, most, tiles in te.SHARES:
        te.gate_up(rows, w13, offsets, tiles, serving=(least, most), out=hidden)
    out = te.down(hidden, w2, offsets)
    _assert_each_kernel_rounds_float64_once(counts, rows, w13, w2, hidden, out)
    assert torch.equal(te.experts(rows, w13, w2, offsets), out)


# the catalog's interval variants, a window and a prefix no tile divides, softcap with ALiBi added, ALiBi
# without the causal mask (its tile shifts reach slope x S, gluon_softmax.alibi_columns), and a
# cap of 2, under which tanh's derivative (1 - t^2 about 0.8 on these scores, 0.9996 under a cap of 50) moves
# the gradients past the tolerance (a review measured: without it dQ moved 0.012 at cap 50, within 0.036)
GLUON_VARIANTS = {"gqa_8": {}, "full": {}, "softcap_50": {}, "alibi": {}, "document": {},
                  "sliding_window_1024": dict(name="sliding_window_200", window=200),
                  "prefix_lm": dict(prefix=300), "softcap_50+alibi": dict(alibi=True), "full+alibi": dict(alibi=True),
                  "softcap_50+cap_2": dict(name="softcap_2", softcap=2.0)}


# the Gluon forward's tests: it runs on Hopper alone (elsewhere the Triton forward runs every case)
hopper = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                            reason="the Gluon forward is written for Hopper (sm_90)")


# float16 ALiBi: its slope's 16-bit parts go subnormal on the flattest heads (gluon_softmax.alibi_rows), in dQ's
# product as in the forward's
@hopper
@pytest.mark.parametrize("name,dtype", [(name, torch.bfloat16) for name in GLUON_VARIANTS] + [("alibi", torch.float16)],
                         ids=list(GLUON_VARIANTS) + ["alibi-fp16"])
def test_our_attention_through_the_gluon_forward_matches_float64(name, dtype, monkeypatch):
    """Our attention at head dim 128 where the Gluon kernels run it (kernels/attention/gluon_flash.py's
    forward, gluon_backward.py's dK/dV, gluon_dq.py's dQ): its output, and the gradients our
    backward recomputes from the forward's lse, against float64 autograd of the
    reference, within twice the error of the same reference in the inputs' dtype on the same inputs. Five row
    blocks of 128 (each ring slot used twice and more), grouped heads, two batches (the document mask's
    starts differ); both Gluon backward kernels must have run (a silent fallback to the Triton kernels
    fails). A kernel whose mbarriers never complete hangs here rather than fails: run it under a
    timeout (the lease scripts' steps are)."""
    from kernels.attention import gluon_backward, gluon_dq, triton_attention
    from kernels.attention.triton_attention_backward import TritonAttention
    from reference.attention import attention

    fam = family("attention")
    variant = dataclasses.replace(fam.variant(name.split("+")[0]), **GLUON_VARIANTS[name])
    shape = dataclasses.replace(fam.shape("llama-3-8b-s4k"), name="gpu-test", batch=2, q_len=640, kv_len=640)
    problem = fam.make_problem(variant, shape, device="cuda", dtype=dtype, seed=12, requires_grad=True)
    inputs = (problem.q, problem.k, problem.v)
    assert triton_attention.gluon_refusal(*inputs) is None
    assert gluon_backward.refusal(*inputs, *inputs) is None  # dO like q, dK and dV like k
    assert gluon_dq.refusal(*inputs, problem.q, problem.q) is None  # dO and dQ like q
    options = dict(causal=variant.causal, window=variant.window, prefix=variant.prefix, doc_start=problem.doc_start,
                   softcap=variant.softcap, alibi=variant.alibi)
    launched = []
    for module, launch in ((gluon_backward, "launch_dkdv"), (gluon_dq, "launch_dq")):
        def counted(*args, _launch=getattr(module, launch), _name=launch, **kwargs):
            launched.append(_name)
            return _launch(*args, **kwargs)
        monkeypatch.setattr(module, launch, counted)
    out = TritonAttention.apply(*inputs, options)
    grad = torch.randn(out.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(13), dtype=out.dtype)
    got = (out, *torch.autograd.grad(out, inputs, grad))
    assert sorted(launched) == ["launch_dkdv", "launch_dq"]

    def reference(dtype):
        tensors = [t.detach().to(dtype).requires_grad_() for t in inputs]
        out = attention(*tensors, mask_mod=variant.mask_mod(problem), score_mod=variant.score_mod(problem))
        return (out, *torch.autograd.grad(out, tensors, grad.to(dtype)))

    exact, low = reference(torch.float64), reference(dtype)
    for what, g, e, lo in zip(("out", "dq", "dk", "dv"), got, exact, low):
        error, reference_error = (g.double() - e).abs().max().item(), (lo.double() - e).abs().max().item()
        assert error <= 2 * reference_error, f"{what}: {error:.3g} against the 16-bit reference's {reference_error:.3g}"


@hopper
@pytest.mark.parametrize("dtype,heads", [(torch.bfloat16, (8, 2)), (torch.float16, (4, 4))], ids=["bf16-gqa", "fp16-mha"])
def test_the_gluon_forward_reads_a_blocks_layout_as_its_contiguous_copy(dtype, heads):
    """A block hands our attention its projections as (B, S, H, D) memory seen as (B, H, S, D): the Gluon
    forward takes them (4-D descriptors, any strides the copy engine reads) and gives the output and lse
    of the same tensors made contiguous, equal in bits."""
    from kernels.attention import gluon_flash, triton_attention

    gen = torch.Generator(device="cuda").manual_seed(14)
    views = [torch.randn(2, 384, h, 128, device="cuda", generator=gen, dtype=dtype).transpose(1, 2)
             for h in (heads[0], heads[1], heads[1])]
    assert not views[0].is_contiguous() and triton_attention.gluon_refusal(*views) is None
    lse_view, lse_copy = (torch.empty(2, heads[0], 384, device="cuda") for _ in range(2))
    out_view = gluon_flash.forward_launcher(*views, causal=True, lse=lse_view)()
    out_copy = gluon_flash.forward_launcher(*(t.contiguous() for t in views), causal=True, lse=lse_copy)()
    assert out_view.stride() == views[0].stride()  # allocated like q, which the backward's dQ layout follows
    assert torch.equal(out_view, out_copy) and torch.equal(lse_view, lse_copy)


@hopper
@pytest.mark.parametrize("cap", [50.0, 2.0], ids=["softcap_50", "softcap_2"])
def test_the_gluon_forward_without_a_running_max_matches_float64(cap, monkeypatch):
    """A softcap forward that fills no lse (inference's) runs exp2 without a running max, p summed as
    rounded to P V's operand (gluon_softmax.bounded_softcap): its output against float64 within twice the
    error of the same reference in bfloat16, the bound of the test above, at its shape; and, against float64
    on the query rows it folds the tanh's scale into (bfloat16(q x scale) / scale: gluon_softmax.fold_tanh_scale,
    an input's rounding, not the arithmetic's), within 1.25x the error of the same launch filling an lse
    (which keeps the max and folds nothing). Summing p unrounded passes the first bound (0.0156 against
    0.0275 modelled on the CPU at this shape) but not the second (1.77x the max's error, the rounded sum 1.07x:
    both modelled on q, before the fold). Against
    float64 on q itself the fold's output read 0.0101 where the max's read 0.00798 (1.27x; H200, session 34)."""
    from kernels.attention import gluon_flash
    from reference.attention import attention

    fam = family("attention")
    variant = dataclasses.replace(fam.variant("softcap_50"), name=f"softcap_{cap:g}", softcap=cap)
    shape = dataclasses.replace(fam.shape("llama-3-8b-s4k"), name="gpu-test", batch=2, q_len=640, kv_len=640)
    problem = fam.make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=12)
    chosen, real = [], gluon_flash.bounded_softcap
    monkeypatch.setattr(gluon_flash, "bounded_softcap", lambda *args: chosen.append(real(*args)) or chosen[-1])
    out = gluon_flash.forward_launcher(problem.q, problem.k, problem.v, causal=True, softcap=cap)()
    lse = torch.empty(problem.q.shape[:3], device="cuda")
    with_max = gluon_flash.forward_launcher(problem.q, problem.k, problem.v, causal=True, softcap=cap, lse=lse)()
    assert chosen == [True, False]
    exact, low = (attention(*(t.to(dtype) for t in (problem.q, problem.k, problem.v)),
                            mask_mod=variant.mask_mod(problem), score_mod=variant.score_mod(problem))
                  for dtype in (torch.float64, torch.bfloat16))
    error, reference_error = (out.double() - exact).abs().max().item(), (low.double() - exact).abs().max().item()
    assert error <= 2 * reference_error, f"out: {error:.3g} against the 16-bit reference's {reference_error:.3g}"
    max_error = (with_max.double() - exact).abs().max().item()
    scale = problem.q.shape[-1] ** -0.5 / cap  # the kernel's float32 division may differ by an ulp: a few q's roundings
    folded_q = (problem.q.float() * scale).bfloat16().double() / scale
    exact_folded = attention(folded_q, problem.k.double(), problem.v.double(), mask_mod=variant.mask_mod(problem),
                             score_mod=variant.score_mod(problem))
    arithmetic_error = (out.double() - exact_folded).abs().max().item()
    assert arithmetic_error <= 1.25 * max_error, f"out: {arithmetic_error:.3g} against {max_error:.3g} with the max"


@hopper
def test_the_gluon_forward_takes_every_work_item_once_a_launch():
    """The persistent Gluon forward's programs claim work items through a counter zeroed each launch
    (gluon_walk.claim): at the document mask's unequal walks and about 16 items a program (2048 items on the
    H200's 132 SMs), each launch, eager and replayed from a CUDA graph, fills every row's lse (set to NaN
    before) with our Triton forward's, and writes the first launch's output bit for bit (an item is one
    program's whole walk, whichever program claims it). A counter left at the last launch's count would
    give the second launch no items, its lse all NaN."""
    from kernels.attention import gluon_flash, triton_flash

    fam = family("attention")
    variant = fam.variant("document")
    shape = dataclasses.replace(fam.shape("llama-3-8b-s4k"), name="gpu-test", batch=4, q_len=2048, kv_len=2048)
    problem = fam.make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=15)
    inputs, options = (problem.q, problem.k, problem.v), dict(causal=True, doc_start=problem.doc_start)
    want_lse = torch.empty(problem.q.shape[:3], device="cuda")
    want = triton_flash.forward_launcher(*inputs, lse=want_lse, **options)()
    lse = torch.empty_like(want_lse)
    launch = gluon_flash.forward_launcher(*inputs, lse=lse, **options)
    outs = []
    for _ in range(3):
        lse.fill_(float("nan"))
        outs.append(launch())
        torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-3)
        torch.testing.assert_close(outs[-1], want, rtol=0, atol=2e-2)
        assert torch.equal(outs[-1], outs[0])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = launch()
    for _ in range(2):
        lse.fill_(float("nan"))
        captured.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-3)
        assert torch.equal(captured, outs[0])


@hopper
@pytest.mark.parametrize("documents", [False, True], ids=["causal", "documents"])
@pytest.mark.parametrize("batch,heads", [(3, (2, 1)), (1, (3, 3)), (2, (8, 2)), (2, (16, 1)), (1, (6, 1))],
                         ids=["3x2-query-heads-a-kv-head", "3-heads", "2x8-grouped-by-4", "2x16-grouped-by-16",
                              "6-grouped-by-6"])
def test_the_gluon_forward_walks_every_head_of_every_chunk(batch, heads, documents):
    """The persistent forward takes heads in chunks, the query heads of one KV head a chunk (gluon_walk._item; under
    the document mask the positions `document_items` lists, each with every pack of query heads, `_document_item`,
    packed 2, 1, 4, 8 and 2 here: gluon_walk.document_pack): 3 sequences of 2 query heads a KV head, 3 heads of
    their own (chunks of 1), 2 x 8 grouped 4 a KV head, 2 x 16 grouped 16 (two packs a KV head under the documents)
    and 6 grouped 6 (three packs of 2). Every row's lse (NaN before) and output equal our Triton forward's within
    bfloat16's rounding, so no head and no row block is left out or taken twice."""
    from kernels.attention import gluon_flash, triton_flash

    gen = torch.Generator(device="cuda").manual_seed(16)
    q, k, v = (torch.randn(batch, h, 384, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
               for h in (heads[0], heads[1], heads[1]))
    options = dict(causal=True, doc_start=document_starts(batch, 384, seed=16).cuda() if documents else None)
    want_lse, lse = (torch.full((batch, heads[0], 384), float("nan"), device="cuda") for _ in range(2))
    want = triton_flash.forward_launcher(q, k, v, lse=want_lse, **options)()
    got = gluon_flash.forward_launcher(q, k, v, lse=lse, **options)()
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-3)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2)


@hopper
@pytest.mark.parametrize("window,alibi,dtype", [(None, False, torch.bfloat16), (200, False, torch.bfloat16),
                                               (None, True, torch.bfloat16), (None, True, torch.float16)],
                         ids=["documents", "documents+window", "documents+alibi", "documents+alibi-fp16"])
def test_the_gluon_forward_stores_only_each_items_own_documents_rows(window, alibi, dtype):
    """The document forward's items start at their documents' starts (gluon_walk.document_items), so a
    document's last item holds rows of the next, which it must not store (a masked store, not the copy
    engine's box); with a window beside the documents, the items are the other masks' (128 rows a block).
    Documents of 1, 127, 128, 129, 1, 255 and 127 rows, and the reverse, in two sequences, grouped heads:
    every row's output and lse (NaN before) equal our Triton forward's within bfloat16's rounding. With ALiBi
    the lse takes back the bias the consumer's first row leaves out (gluon_softmax.alibi_columns) from an
    item's rows, which here start anywhere in a document."""
    from kernels.attention import gluon_flash, triton_flash

    def starts(lengths):
        return torch.cat([torch.full((n,), sum(lengths[:i]), dtype=torch.int32) for i, n in enumerate(lengths)])

    lengths = [1, 127, 128, 129, 1, 255, 127]
    doc_start = torch.stack([starts(lengths), starts(lengths[::-1])]).cuda()
    gen = torch.Generator(device="cuda").manual_seed(17)
    q, k, v = (torch.randn(2, h, 768, 128, device="cuda", generator=gen, dtype=dtype) for h in (8, 2, 2))
    want_lse, lse = (torch.full((2, 8, 768), float("nan"), device="cuda") for _ in range(2))
    options = dict(causal=True, doc_start=doc_start, window=window, alibi=alibi)
    want = triton_flash.forward_launcher(q, k, v, **options, lse=want_lse)()
    got = gluon_flash.forward_launcher(q, k, v, **options, lse=lse)()
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-3)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2)


@hopper
@pytest.mark.parametrize("softcap,filled", [(None, True), (50.0, True), (50.0, False)],
                         ids=["documents", "documents+softcap", "documents+softcap-bounded"])
def test_the_gluon_forward_walks_half_diagonals_first(softcap, filled):
    """Packed document items (4 query heads a KV head: 32 positions an item) whose positions lie in their
    diagonal key tile's first half take that tile first at half width (gluon_walk.takes_half_diagonal), the whole walk
    where it is the only tile: documents of 1 to 300 rows hold such items at walks of 1, 2 and 3 tiles. Output
    and lse (NaN before, where filled) equal our Triton forward's within bfloat16's rounding, under a softcap too,
    and under the softcap without an lse, whose row sums are the tensor cores' (gluon_softmax.issue_pv)."""
    from kernels.attention import gluon_flash, triton_flash
    from kernels.attention.gluon_walk import document_items

    def starts(lengths):
        return torch.cat([torch.full((n,), sum(lengths[:i]), dtype=torch.int32) for i, n in enumerate(lengths)])

    lengths = [300, 1, 33, 64, 65, 95, 210]
    doc_start = torch.stack([starts(lengths), starts(lengths[::-1])]).cuda()
    listed = document_items(doc_start, 32)
    first = listed[:int(listed[-1])].long()
    offsets = first % 768 - doc_start.flatten().long()[first]
    halves = offsets[offsets % 128 + 32 <= 64] // 128 + 1  # the walks of the items that take a half diagonal
    assert {1, 2, 3} <= set(halves.tolist())
    gen = torch.Generator(device="cuda").manual_seed(19)
    q, k, v = (torch.randn(2, h, 768, 128, device="cuda", generator=gen, dtype=torch.bfloat16) for h in (8, 2, 2))
    options = dict(causal=True, doc_start=doc_start, softcap=softcap)
    want_lse = torch.full((2, 8, 768), float("nan"), device="cuda")
    want = triton_flash.forward_launcher(q, k, v, **options, lse=want_lse)()
    lse = torch.full_like(want_lse, float("nan")) if filled else None
    got = gluon_flash.forward_launcher(q, k, v, **options, lse=lse)()
    if filled:
        torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-3)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2)


@hopper
def test_the_gluon_forward_takes_document_items_listed_once_and_refuses_a_wrong_list():
    """A training step lists the document walk's items once (triton_attention.document_work) and hands them
    to every forward: the output, lse and gradients equal a forward that lists its own, exactly (the items
    change which program takes a row block, never its values); a list of another length is refused in one
    line before any launch (the kernel would read past it), as is a list at other positions an item than
    the launch walks (here 2 query heads a KV head are packed: 64 positions an item, not 128)."""
    from kernels.attention import gluon_flash, triton_attention
    from kernels.attention.triton_attention_backward import TritonAttention

    gen = torch.Generator(device="cuda").manual_seed(23)
    doc_start = torch.tensor([0] * 300 + [300] * 212 + [512] * 256, dtype=torch.int32, device="cuda")[None]
    q, k, v = (torch.randn(1, h, 768, 128, device="cuda", generator=gen, dtype=torch.bfloat16).requires_grad_()
               for h in (4, 2, 2))
    options = dict(causal=True, doc_start=doc_start)
    items = triton_attention.document_work(q, k, v, options)
    assert items is not None and triton_attention._backend(q, k, v) == "gluon forward"
    grad = torch.randn(q.shape, device="cuda", generator=gen, dtype=torch.bfloat16)
    listed, own = TritonAttention.apply(q, k, v, options, items), TritonAttention.apply(q, k, v, options)
    torch.testing.assert_close(listed, own, rtol=0, atol=0)
    for got, want in zip(torch.autograd.grad(listed, (q, k, v), grad), torch.autograd.grad(own, (q, k, v), grad)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert items.rows == 64
    for wrong in (items._replace(listed=items.listed[:-1]), items._replace(rows=128)):
        with pytest.raises(ValueError, match="document walk's items"):
            gluon_flash.forward_launcher(q.detach(), k.detach(), v.detach(), causal=True, doc_start=doc_start,
                                         items=wrong)
