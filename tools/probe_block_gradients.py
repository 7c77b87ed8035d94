"""Where a block's gradient check fails: every gradient's error against its tolerance (the check stops
at the first), and for an MoE block how many of the compared rows each side routed to other experts
than the float64 reference did, and how many of those the check compares (routing is discrete: a
near-tie decided the other way swaps an expert's whole contribution, gradients included; the check
leaves such rows out, reference/block.py routing_decided).

    python3 tools/probe_block_gradients.py deepseek-v3 fused prefill-b4-s4k

Runs the check as `variantbench check` does (cases.check_gradients, on the gradient check's stand-in
shape where the family names one), with the MoE routers wrapped to record their choices.
"""

import argparse
import dataclasses
import sys

import torch

import reference.moe as reference_moe
from kernels.moe import grouped_mm, triton_moe
from variantbench import cases
from variantbench.catalog import Unsupported, family

routed = []  # (who, tokens routed, experts (T, k)) in call order


def recording(module, name, who):
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        experts, weights = original(*args, **kwargs)
        x = next(a for a in args if isinstance(a, torch.Tensor))
        routed.append((who(x), x.shape[0], experts.detach().long().sort(-1).values.cpu()))
        return experts, weights

    setattr(module, name, wrapped)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant")
    parser.add_argument("implementation")
    parser.add_argument("shape")
    args = parser.parse_args()
    fam = family("block")
    try:
        variant, shape, impl = fam.variant(args.variant), fam.shape(args.shape), fam.implementation(args.implementation)
    except Unsupported as unknown:
        sys.exit(f"probe_block_gradients: {unknown}")
    stand_in = fam.gradient_check_shape(variant, shape)
    shape = stand_in[0] if stand_in else shape
    print(f"{variant.name} {impl.name} at {shape.name}" + (f" ({stand_in[1]})" if stand_in else ""))
    recording(reference_moe, "route", lambda x: f"reference {str(x.dtype).split('.')[-1]}")
    recording(triton_moe, "route", lambda x: "implementation (triton router)")
    recording(grouped_mm, "_route", lambda x: "implementation (grouped_mm router)")
    problem = fam.make_problem(variant, shape, device=shape.device, dtype=torch.bfloat16,
                               seed=cases.SEED + cases.CHECK_SEED_OFFSET, requires_grad=True)
    case = dataclasses.make_dataclass("Case", ["family", "variant", "implementation", "shape"])(
        "block", variant, impl, shape)
    call = impl.load().prepare(variant, problem)
    routed.clear()  # the choice's timing calls
    compared = cases.check_gradients(case, problem, call)
    for name, c in compared.items():
        print(f"  d{name:20s} {'ok ' if c['ok'] else 'BAD'}  error {c['max_error']:10.4g}  tolerance "
              f"{c['tolerance']:10.4g}  bf16 reference's error {c['reference_error']:10.4g}")
    picked, decided = problem.check_rows.positions, problem.check_rows.decided  # set by the check
    picked, decided = picked.cpu(), decided[..., 0].flatten().cpu()
    print(f"  routing decided at {int(decided.sum())} of {decided.numel()} compared rows (the others compare as zeros)")
    exact = next((e for who, _, e in routed if who == "reference float64"), None)
    if exact is None:
        return print("no MoE routing recorded")
    batch = problem.x.shape[0]
    for who, tokens, experts in routed:
        if tokens == batch * shape.q_len:  # every token: the compared rows' choices
            experts = experts.view(batch, shape.q_len, -1)[:, picked].reshape(exact.shape)
        if experts.shape != exact.shape:
            print(f"  {who}: {tuple(experts.shape)} routed, not comparable")
            continue
        differ = (experts != exact).any(-1)
        print(f"  {who}: {int(differ.sum())} of {differ.numel()} rows routed otherwise than float64's, "
              f"{int((differ & decided).sum())} of them decided")


if __name__ == "__main__":
    main()
