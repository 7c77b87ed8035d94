"""Each SDPA backend's gradients against float64, at a causal shape of chosen head dims: whether a
backend's backward can be trusted where its forward is the fastest (kernels/attention/sdpa.py
`fastest` picks by the forward alone).

    python3 tools/probe_sdpa_backward.py --heads 16 --tokens 4096 --qk-dim 192 --v-dim 128

MLA's decompressed prefill (DeepSeek-V3: keys 192 wide, values 128) is the default. The yardstick is
the math backend in the same dtype: a fused backend whose error is many times its is wrong.
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def gradients(q, k, v, out_grad, backend):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(backend):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return (out, *torch.autograd.grad(out, (q, k, v), out_grad.to(out.dtype)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--qk-dim", type=int, default=192)
    parser.add_argument("--v-dim", type=int, default=128)
    parser.add_argument("--transposed-grad", action="store_true",
                        help="the output's gradient a (B, H, S, D) view of (B, S, H, D) storage, as a block's is")
    parser.add_argument("--after-contiguous", action="store_true",
                        help="each backend's backward first once with a contiguous gradient, at the same shapes "
                             "(a plan cached by q, k and v alone would be reused for the transposed one)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("probe_sdpa_backward: needs a CUDA GPU; none is visible")
    gen = torch.Generator("cuda").manual_seed(0)
    shape = (args.batch, args.heads, args.tokens)
    q, k = (torch.randn(*shape, args.qk_dim, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in "qk")
    v = torch.randn(*shape, args.v_dim, generator=gen, device="cuda", dtype=torch.bfloat16)
    out_grad = torch.randn(*shape, args.v_dim, generator=gen, device="cuda")
    if args.transposed_grad:
        out_grad = out_grad.transpose(1, 2).contiguous().transpose(1, 2)
    exact = gradients(q.double(), k.double(), v.double(), out_grad.double(), SDPBackend.MATH)
    print(f"causal, batch {args.batch}, {args.heads} heads, {args.tokens} tokens, q/k {args.qk_dim} wide, "
          f"v {args.v_dim}, bfloat16{', gradient transposed' if args.transposed_grad else ''}"
          f"{', after a contiguous one' if args.after_contiguous else ''}; max error against float64 (out, dq, dk, dv):")
    for backend in (SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.FLASH_ATTENTION):
        try:
            if args.after_contiguous:
                gradients(q, k, v, out_grad.contiguous(), backend)
            got = gradients(q, k, v, out_grad, backend)
        except RuntimeError as error:
            print(f"  {backend.name:20s} refused: {str(error).splitlines()[0][:100]}")
            continue
        errors = "  ".join(f"{(g.double() - e).abs().max().item():9.3g}" for g, e in zip(got, exact))
        print(f"  {backend.name:20s} {errors}")


if __name__ == "__main__":
    main()
