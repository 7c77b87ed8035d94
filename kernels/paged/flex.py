"""FlexAttention reading the page pool itself: the page table turned into a BlockMask whose key blocks
are pages (a sequence's full pages as full blocks, its last partly filled page as a partial one),
over the whole pool as one key sequence shared by the batch. The mask function says which pool
positions are a sequence's keys; the fused kernel calls it on the partial page only, the CPU's unfused
path on every position."""

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from kernels.attention.flex import compiled_flex


def page_block_mask(problem):
    p, size = problem, problem.page_size
    pool_pages = p.k_pool.shape[2] // size
    pages = (p.seq_lens + size - 1) // size
    owner = torch.full((pool_pages,), -1, dtype=torch.int32, device=p.device)
    logical = torch.zeros(pool_pages, dtype=torch.int32, device=p.device)
    for b in range(p.batch):
        used = p.page_table[b, :int(pages[b])].long()
        owner[used] = b
        logical[used] = torch.arange(used.numel(), dtype=torch.int32, device=p.device)
    lens = p.seq_lens

    def own_keys(b, h, q_idx, kv_idx):
        page = kv_idx // size
        return (owner[page] == b) & (logical[page] * size + kv_idx % size < lens[b])

    full = (lens // size).to(torch.int32)
    partial = (lens % size != 0).to(torch.int32)
    # The fused kernels index the full blocks' list with the partial list's strides and length, so
    # both are the page table's shape: the partial page first, the rest unread (a (B, 1, 1, 1) partial
    # list read every full block as the first page: max error 0.9 on the H200, and past the pool).
    partial_pages = p.page_table.clone()
    partial_pages[:, 0] = p.page_table.gather(1, full.clamp(max=p.page_table.shape[1] - 1)[:, None].long())[:, 0]
    return BlockMask.from_kv_blocks(
        partial.view(-1, 1, 1), partial_pages.view(p.batch, 1, 1, -1), full.view(-1, 1, 1),
        p.page_table.view(p.batch, 1, 1, -1), BLOCK_SIZE=(128, size), mask_mod=own_keys,
        seq_lengths=(1, p.k_pool.shape[2]), compute_q_blocks=False)


def prepare(variant, problem):
    p = problem
    block_mask = page_block_mask(p)
    flex = compiled_flex if p.device.type == "cuda" else flex_attention

    # A key block is one page: inductor's key tile must divide it (torch 2.13 clamps its default to the
    # block; asked for outright, no version's default can read past a page into its pool neighbours).
    options = {"BLOCK_N": p.page_size}

    def call():
        return flex(p.q, p.k_pool, p.v_pool, block_mask=block_mask, enable_gqa=True, kernel_options=options)

    call()
    return call
