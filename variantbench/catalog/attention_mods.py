"""The attention family's mask and score functions, in attention-gym's four-argument form:
`mask(b, h, q_idx, kv_idx) -> bool` and `score(score, b, h, q_idx, kv_idx) -> score`, built from a
variant's fields (variantbench.catalog.attention) or from a plug-in's own functions of positions.

Positions: a problem's queries are the last q_len of its kv_len positions, so query index i sits at
key position i + offset, offset = kv_len - q_len (0 at prefill, kv_len - 1 at decode).
"""


import torch


def and_masks(*masks):
    def mask(b, h, q_idx, kv_idx):
        visible = masks[0](b, h, q_idx, kv_idx)
        for m in masks[1:]:
            visible = visible & m(b, h, q_idx, kv_idx)
        return visible

    return mask


def or_masks(*masks):
    def mask(b, h, q_idx, kv_idx):
        visible = masks[0](b, h, q_idx, kv_idx)
        for m in masks[1:]:
            visible = visible | m(b, h, q_idx, kv_idx)
        return visible

    return mask


def causal_mask(offset):
    def causal(b, h, q_idx, kv_idx):
        return q_idx + offset >= kv_idx

    return causal


def sliding_window_mask(window, offset):
    """Window counts the query itself: a query sees `window` keys in all, itself and window-1 before."""

    def sliding_window(b, h, q_idx, kv_idx):
        return q_idx + offset - kv_idx < window

    return sliding_window


def prefix_mask(prefix):
    """Keys in the first `prefix` positions are visible to every query (bidirectional prefix)."""

    def prefix_lm(b, h, q_idx, kv_idx):
        return kv_idx < prefix

    return prefix_lm


def same_document_mask(doc_start, offset):
    """doc_start: (B, Skv) the first position of each position's document. With causal this is
    exactly "same document": a key at or after the query's document start and not after the query."""

    def same_document(b, h, q_idx, kv_idx):
        return kv_idx >= doc_start[b, q_idx + offset]

    return same_document


def mask_at_positions(own, offset):
    """A plug-in's own mask function, written on positions (`q_pos` is the query's position among the
    keys), as the function of query indices the implementations call: one serves prefill and decode."""

    def positioned(b, h, q_idx, kv_idx):
        return own(b, h, q_idx + offset, kv_idx)

    positioned.__name__ = own.__name__
    return positioned


def score_at_positions(own, offset):
    def positioned(score, b, h, q_idx, kv_idx):
        return own(score, b, h, q_idx + offset, kv_idx)

    positioned.__name__ = own.__name__
    return positioned


def softcap_score(cap):
    def softcap(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)

    return softcap


def alibi_score(n_heads, offset, device):
    # ALiBi's geometric slopes, head h (0-based): 2^(-8 (h + 1) / H).
    slopes = torch.exp2(-8.0 * torch.arange(1, n_heads + 1, device=device, dtype=torch.float32) / n_heads)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - (q_idx + offset))

    return alibi


# The number after each of these name parts is that field: sliding_window_1024 is window=1024,
# gqa_8 kv_heads=8, softcap_50 softcap=50, prefix_lm_9 prefix=9. Checked when an entry is made.
