"""A token-level top-k (DSA) through SDPA: each query's selected keys and values gathered into a batch
of one-query calls. The catalog runs it nightly (full tier): at llama-3-8b-s4k it takes 401 ms a call
on an H200 against 12.9 ms for our token-sparse kernel (ec6ebbf), about 30 s of the default tier's
10 minutes with its precheck. Until then it was `sdpa`'s token path: its history under that name ends
at ec6ebbf.
"""

import torch
import torch.nn.functional as F

from variantbench.catalog import Unsupported

# Keys gathered per query take (B, Hkv, queries, k, D) twice (keys and values): queries go in chunks of
# at most this many bytes (a 16k-token llama-3-8b sequence gathers 68 GB for 2048 keys a query).
GATHER_BYTES = 2**30


def prepare(variant, problem):
    """Chunk by chunk of queries, the keys past a short query's selection masked."""
    from variantbench.catalog.token_selection import selected_indices

    q, k, v = problem.q, problem.k, problem.v
    batch, n_q_heads, q_len, dim = q.shape
    indices, valid = selected_indices(problem.selection, variant.topk_tokens)
    width = indices.shape[-1]
    chunk = max(1, GATHER_BYTES // (2 * batch * k.shape[1] * width * dim * k.element_size()))
    rows_of = torch.arange(batch, device=q.device)[:, None, None]

    def call():
        out = torch.empty_like(q)
        for start in range(0, q_len, chunk):
            rows = slice(start, min(start + chunk, q_len))
            picked = indices[:, rows]
            n = picked.shape[1]
            keys = k.transpose(1, 2)[rows_of, picked].flatten(0, 1).transpose(1, 2)  # (B n, Hkv, k, D)
            values = v.transpose(1, 2)[rows_of, picked].flatten(0, 1).transpose(1, 2)
            queries = q[:, :, rows].transpose(1, 2).reshape(batch * n, n_q_heads, 1, dim)
            mask = valid[:, rows].reshape(batch * n, 1, 1, width)
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, enable_gqa=True)
            out[:, :, rows] = attended.view(batch, n, n_q_heads, dim).transpose(1, 2)
        return out

    call()
    call.backend = f"gathered keys, {chunk} queries a chunk"
    return call


def prepare_function(variant, problem):
    raise Unsupported("SDPA's token selection gathers its problem's own keys; it serves no block")
