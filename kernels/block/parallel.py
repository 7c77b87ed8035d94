"""Blocks split over ranks, Megatron's way, through the collectives' ranks (kernels/comms/nccl.py).

tensor: each rank holds 1/N of the query heads and their KV heads (1/N of them, or, where a model has
  fewer KV heads than ranks, a copy of the one its query heads read), 1/N of the MLP's hidden size and
  of every expert's. q, k, v and the MLP's up projection are split by output rows (column-parallel),
  the attention output and down projections by input columns (row-parallel); an all-reduce sums the
  partial outputs after each row-parallel product: two a block.
sequence: the same weights, but between the products each rank holds 1/N of the tokens: the norms and
  residual adds run on its slice, an all-gather of the normed slices comes before each
  column-parallel product, and a reduce-scatter replaces each all-reduce (the same bytes; the norms'
  work is split). Our blocks are (batch, tokens, dim), so each collective goes through a
  (tokens, batch, dim) copy where batch > 1; Megatron keeps that layout throughout.

Every rank builds the whole problem from the case's seed and keeps its share (`share`); rank 0 is the
benchmark's own process, the others are got once (kernels/comms/ranks.py: started here, or torchrun
workers) and told what to prepare and run. Every rank's check output comes back to rank 0: under
tensor parallelism each must equal rank 0's (an all-reduce leaves the same sum on every rank), under
sequence parallelism the slices make the whole output the block family's check compares with the
reference.
"""

import dataclasses
from collections.abc import Callable

import torch
import torch.distributed as dist

from kernels.block import fused
from kernels.comms import nccl
from kernels.comms.ranks import local_device
from variantbench.catalog import family, lookup
from variantbench.catalog.comms import missing_ranks, world_size

SHARD = "kernels.block.parallel:Shard"


def heads_of(config, rank, ranks):
    """(query heads, first KV head, KV heads) of `rank`: query heads in N equal runs, each with the KV
    heads its queries read."""
    heads = config.n_heads // ranks
    group = config.n_heads // config.n_kv_heads
    return heads, rank * heads // group, max(1, heads // group)


def unsupported(variant, shape, mode):
    config = shape.config(variant.model)
    why = missing_ranks(shape.device, "a split block")
    if why:
        return why
    ranks = world_size(shape.device)
    if variant.depth_capacity is not None:
        return "mixture-of-depths picks tokens per sequence; it is not split over ranks here"
    if config.mla or config.linear:
        return "latent and linear attention are not split over ranks here"
    group = config.n_heads // config.n_kv_heads
    if config.n_heads % ranks or (config.n_kv_heads % ranks and ranks % config.n_kv_heads):
        return f"{config.n_heads} query heads on {config.n_kv_heads} KV heads do not split over {ranks} ranks"
    if config.n_heads // ranks < group and group % (config.n_heads // ranks):
        return f"a rank's {config.n_heads // ranks} query heads would read part of a KV head's group of {group}"
    ffn = config.moe_config.ffn_dim if config.moe_config else config.ffn_dim
    if ffn % ranks:
        return f"an MLP of {ffn} does not split over {ranks} ranks"
    split = lookup(SPLITS, mode, "split")
    if split.cuda_only and shape.device != "cuda":
        return "torch's symmetric-memory operators have CUDA kernels only"
    if split.splits_tokens and (shape.phase == "decode" or shape.q_len % ranks):
        return f"{shape.q_len} new tokens do not split over {ranks} ranks"
    return None


def _rows(tensor, start, count, dim=0):
    return tensor.narrow(dim, start, count).contiguous()


def _up_rows(w13, ffn, start, count, gated, dim):
    """A rank's rows of an up projection holding gate then up (gated) or only up."""
    if not gated:
        return _rows(w13, start, count, dim)
    return torch.cat([_rows(w13, start, count, dim), _rows(w13, ffn + start, count, dim)], dim=dim)


def share(problem, variant, rank, ranks, mode):
    """This rank's share of a block problem (a BlockProblem of its heads, MLP slice and tokens)."""
    c, p = problem.config, problem
    heads, first_kv, kv_heads = heads_of(c, rank, ranks)
    d = c.head_dim
    gated = variant.mlp in ("swiglu", "geglu")
    local = dict(
        wq=_rows(p.wq, rank * heads * d, heads * d), wk=_rows(p.wk, first_kv * d, kv_heads * d),
        wv=_rows(p.wv, first_kv * d, kv_heads * d), wo=_rows(p.wo, rank * heads * d, heads * d, dim=1))
    ffn = c.ffn_dim // ranks
    if p.moe is not None:
        m, expert_ffn = p.moe, p.moe.config.ffn_dim // ranks
        shared = {}
        if m.shared13 is not None:
            shared_ffn = m.shared2.shape[1] // ranks
            shared = dict(shared13=_up_rows(m.shared13, m.shared2.shape[1], rank * shared_ffn, shared_ffn, True, 0),
                          shared2=_rows(m.shared2, rank * shared_ffn, shared_ffn, dim=1))
        local["moe"] = dataclasses.replace(
            m, config=dataclasses.replace(m.config, ffn_dim=expert_ffn), **shared,
            w13=_up_rows(m.w13, m.config.ffn_dim, rank * expert_ffn, expert_ffn, True, 1),
            w2=_rows(m.w2, rank * expert_ffn, expert_ffn, dim=2))
    else:
        local["w13"] = _up_rows(p.w13, c.ffn_dim, rank * ffn, ffn, gated, 0)
        local["w2"] = _rows(p.w2, rank * ffn, ffn, dim=1)
    if p.k_cache is not None:
        local["k_cache"], local["v_cache"] = (_rows(t, first_kv, kv_heads, dim=1) for t in (p.k_cache, p.v_cache))
    if lookup(SPLITS, mode, "split").splits_tokens:
        tokens = p.x.shape[1] // ranks
        local["x"] = _rows(p.x, rank * tokens, tokens, dim=1)
    config = dataclasses.replace(c, n_heads=heads, n_kv_heads=kv_heads, ffn_dim=ffn)
    return dataclasses.replace(p, config=config, **local)


def _all_reduce(t):
    dist.all_reduce(t)
    return t


def _gather_tokens(ranks):
    def gather(t):  # (B, s, dim) -> (B, N s, dim)
        slab = t.transpose(0, 1).contiguous()
        out = slab.new_empty((slab.shape[0] * ranks, *slab.shape[1:]))
        dist.all_gather_into_tensor(out, slab)
        return out.transpose(0, 1)

    return gather


def _scatter_tokens(ranks):
    def reduce(t):  # (B, S, dim) partial sums -> (B, S / N, dim) summed
        slab = t.transpose(0, 1).contiguous()
        out = slab.new_empty((slab.shape[0] // ranks, *slab.shape[1:]))
        dist.reduce_scatter_tensor(out, slab)
        return out.transpose(0, 1)

    return reduce


def _agree(times):
    """Every rank's candidate times summed (inf where any rank refused one): one choice on every rank,
    where each rank's own fastest could differ (a rank that runs another backend is an imbalance
    the split's figures would show as inefficiency)."""
    summed = torch.tensor(times, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(summed)
    return summed.tolist()


def _gather_products(ranks):
    """Every rank's tokens through this rank's column shards, each rank's slab multiplied as it
    arrives: one broadcast per rank, all issued at once (NCCL runs them in order on its own stream),
    this rank's own slab multiplied first while the others travel. Megatron's all-gather/GEMM overlap
    decomposed by source rank; the same sums as gathering first."""
    def products(h, weights):  # h (B, s, dim) -> [(B, N s, out) for each weight]
        rank = dist.get_rank()
        slab = h.transpose(0, 1).contiguous()  # (s, B, dim): whole rows per rank, as _gather_tokens
        slabs = [slab if source == rank else torch.empty_like(slab) for source in range(ranks)]
        arrivals = [dist.broadcast(slabs[source], src=source, async_op=True) for source in range(ranks)]
        rows = slab.shape[0] * slab.shape[1]
        outs = [slab.new_empty((ranks * rows, w.shape[0])) for w in weights]
        for source in [rank] + [r for r in range(ranks) if r != rank]:
            if source != rank:
                arrivals[source].wait()  # on CUDA the compute stream waits, not the host
            for out, w in zip(outs, weights):
                torch.mm(slabs[source].view(rows, -1), w.t(), out=out[source * rows:(source + 1) * rows])
        return [out.view(ranks * slab.shape[0], slab.shape[1], -1).transpose(0, 1) for out in outs]

    return products


def _product_reduce(ranks):
    """A row-parallel product summed into this rank's tokens, token slab by token slab: each
    destination's slab multiplied, then reduced onto it (in flight while the next slab multiplies).
    Every rank issues the reduces in destination order: collectives pair up by their order of issue,
    and a rank starting with another destination deadlocks the group. Megatron's GEMM/reduce-scatter
    overlap decomposed by destination."""
    def reduced(a, w):  # a (B, S, k) -> (B, S / N, dim) summed over the ranks
        tokens = a.shape[1] // ranks
        parts, sends = [], []
        for destination in range(ranks):
            parts.append(a[:, destination * tokens:(destination + 1) * tokens] @ w.t())
            sends.append(dist.reduce(parts[-1], dst=destination, async_op=True))
        for send in sends:
            send.wait()
        return parts[dist.get_rank()]

    return reduced


def _symm_mem_products(fused_all_gather_matmul):
    """torch's symmetric-memory all-gather/matmul (torch.ops.symm_mem, CUDA kernels only): the gather
    split into per-rank copies through peer memory, each slab multiplied as it lands. Gathered along
    the tokens (dim 1), never dim 0, so torch takes no NVLink-multicast path, which the lent machines
    keep off (../shared/GPU.md)."""
    def products(h, weights):  # h (B, s, dim) -> [(B, N s, out)], tokens rank by rank as _gather_tokens
        _, outs = fused_all_gather_matmul(h, [w.t() for w in weights], 1, dist.group.WORLD.group_name,
                                          return_A=False)
        return outs

    return products


def _symm_mem_reduce(fused_matmul_reduce_scatter):
    """torch's symmetric-memory matmul/reduce-scatter: the product made slab by slab, each reduced onto
    its destination through peer memory while the next multiplies."""
    def reduced(a, w):  # a (B, S, k) -> (B, S / N, dim) summed over the ranks
        return fused_matmul_reduce_scatter(a, w.t(), "sum", 1, dist.group.WORLD.group_name)

    return reduced


def _symm_mem_split(ranks):
    import torch.distributed._symmetric_memory  # noqa: F401  (defines the torch.ops.symm_mem operators)

    ops = torch.ops.symm_mem
    return fused.Split(gather=_gather_tokens(ranks), reduce=_scatter_tokens(ranks), token_share=ranks, agree=_agree,
                       gather_products=_symm_mem_products(ops.fused_all_gather_matmul),
                       product_reduce=_symm_mem_reduce(ops.fused_matmul_reduce_scatter))


@dataclasses.dataclass(frozen=True)
class SplitMode:
    """How a block splits over ranks: whether each rank holds 1/N of the tokens between the products
    (sequence parallel), its fused.Split for a number of ranks, and whether it runs only on CUDA."""

    splits_tokens: bool
    make: Callable
    cuda_only: bool = False


SPLITS = {
    "tensor": SplitMode(False, lambda ranks: fused.Split(gather=lambda t: t, reduce=_all_reduce, agree=_agree)),
    "sequence": SplitMode(True, lambda ranks: fused.Split(
        gather=_gather_tokens(ranks), reduce=_scatter_tokens(ranks), token_share=ranks, agree=_agree)),
    # the same split, its all-gathers and reduce-scatters overlapped with the products beside them (the
    # MoE's own gather and reduce-scatter stay whole: the grouped GEMMs take every token at once). Its
    # collectives alone are the plain split's: their share is what the overlap has to hide.
    "sequence_overlapped": SplitMode(True, lambda ranks: fused.Split(
        gather=_gather_tokens(ranks), reduce=_scatter_tokens(ranks), token_share=ranks, agree=_agree,
        gather_products=_gather_products(ranks), product_reduce=_product_reduce(ranks))),
    # the same overlap through torch's symmetric memory (issue 18): its fused operators have CUDA
    # kernels only; tests/test_overlap.py runs their wiring through torch's own gloo fallbacks.
    "sequence_symm_mem": SplitMode(True, _symm_mem_split, cuda_only=True),
}


def split_of(mode, ranks):
    return lookup(SPLITS, mode, "split").make(ranks)


def collectives_alone(mode, ranks, batch, tokens, dim, device, dtype):
    """A call running the split block's collectives alone, on buffers of the sizes they move in it:
    two all-reduces of the (B, S, dim) partial outputs (tensor), or two all-gathers of (B, S / N, dim)
    and two reduce-scatters of (B, S, dim) (sequence)."""
    split = split_of(mode, ranks)
    gen = torch.Generator(device).manual_seed(17)
    partial = [torch.randn(batch, tokens, dim, generator=gen, device=device).to(dtype) for _ in range(2)]
    mine = [torch.randn(batch, tokens // split.token_share, dim, generator=gen, device=device).to(dtype)
            for _ in range(2)]

    def call():  # the all-reduce works in place: its buffer grows N-fold a call, which no timing sees
        for part, slice_ in zip(partial, mine):
            split.gather(slice_)
            split.reduce(part)
        return partial[0]

    call.backend = f"{mode}-parallel collectives alone"
    return call


class Shard:
    """One rank's split block (the rank processes' `prepare` makes one from its spec): `check()` runs it
    once and returns its output on the CPU; `run(n)` runs it n times. With `collectives`, only the
    collectives the block runs (`collectives_alone`), for their share of its time."""

    def __init__(self, rank, ranks, device, variant, shape, seed, dtype, mode, collectives=False):
        fam = family("block")
        self.variant, shape = fam.variant(variant), fam.shape(shape)
        self.device = local_device(device)
        if collectives:
            config = shape.config(self.variant.model)
            self.call = collectives_alone(mode, ranks, shape.batch, shape.q_len, config.dim, self.device, dtype)
        else:
            whole = fam.make_problem(self.variant, shape, device=self.device, dtype=dtype, seed=seed)
            self.call = fused.build(self.variant, share(whole, self.variant, rank, ranks, mode), split_of(mode, ranks))
        self.backend = self.call.backend

    def check(self):
        return self.call().detach().to("cpu")

    def run(self, count):
        for _ in range(count):
            self.call()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _on_every_rank(spec, key, ranks, device):
    """(this rank's Shard, every rank's check output) of `spec`, prepared on every rank."""
    return nccl.prepared_everywhere(key, {"maker": SHARD, **spec},
                                    lambda: Shard(rank=0, ranks=ranks, device=device, **spec))


def _everywhere(mine, key):
    def call():
        nccl.send(("run", key, 1))
        return mine.call()

    return call


def prepare_split(variant, problem, mode):
    from variantbench.cases import Mismatch

    device = problem.device.type
    ranks = world_size(device)
    nccl.peers(ranks, device)
    spec = {"variant": variant.name, "shape": problem.shape.name, "seed": problem.seed, "dtype": problem.x.dtype,
            "mode": mode}
    key = f"block/{mode}/{variant.name}/{problem.shape.name}/{problem.seed}"
    mine, outputs = _on_every_rank(spec, key, ranks, device)
    if mode == "tensor":
        for rank, out in enumerate(outputs[1:], 1):
            if not torch.equal(out, outputs[0]):
                raise Mismatch(f"rank {rank}'s output differs from rank 0's after the all-reduce "
                               f"(max {(out - outputs[0]).abs().max().item():.3g})")
    problem.check_outputs = outputs
    call = _everywhere(mine, key)
    alone, _ = _on_every_rank({**spec, "collectives": True}, key + "/collectives", ranks, device)
    call.collectives = _everywhere(alone, key + "/collectives")
    call.ranks = ranks
    call.backend = f"{mode} parallel over {ranks} ranks; {mine.backend}"
    return call
