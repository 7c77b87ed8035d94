"""Compile our Gluon forward (kernels/attention/gluon_flash.py) for Hopper (sm_90) without a GPU:
    /tmp/t36/bin/python tools/compile_gluon_sm90.py     (Triton 3.6.0, the lent GPU's; see compile_forward_sm90.py)
At llama-3-8b-s4k's specialisation, for each mask and score function the catalog's variants use:
registers, spilled bytes, shared memory (sm90_cubin) and the counts of the SASS instructions that matter to
the schedule (warpgroup MMAs, their waits, CTA barriers, MUFU exp2). Exits 1 if a compile fails or would not launch,
or if a warpgroup MMA reads descriptor registers some path leaves unwritten (sass_flow.py: ptxas's miscompile that
session 38 met).
"""

import re
import sys
from collections import Counter
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels.attention import gluon_flash, gluon_selection  # noqa: E402
import sass_flow  # noqa: E402
import sm90_cubin  # noqa: E402

SHOWN = ("HGMMA", "WARPGROUP", "BAR", "SYNCS", "MUFU", "UTMALDG", "UTMASTG")


# the variants' compile-time switches (every other one False)
CASES = {"causal": dict(CAUSAL=True), "full": {}, "softcap": dict(CAUSAL=True, SOFTCAP=True, BOUNDED=True),
         "softcap+lse": dict(CAUSAL=True, SOFTCAP=True),  # a launch for a backward keeps the max
         "alibi": dict(CAUSAL=True, ALIBI=True), "softcap+alibi": dict(CAUSAL=True, SOFTCAP=True, ALIBI=True),
         "window": dict(CAUSAL=True, WINDOW=True), "document": dict(CAUSAL=True, DOCUMENTS=True),
         "document-pack4": dict(CAUSAL=True, DOCUMENTS=True, PACK=4),  # gqa_8's: 4 query heads an item
         "document-pack8": dict(CAUSAL=True, DOCUMENTS=True, PACK=8),
         "document-pack4+softcap": dict(CAUSAL=True, DOCUMENTS=True, PACK=4, SOFTCAP=True, BOUNDED=True),
         "document-pack4+softcap+lse": dict(CAUSAL=True, DOCUMENTS=True, PACK=4, SOFTCAP=True),
         "prefix": dict(CAUSAL=True, PREFIX=True),
         "document+window": dict(CAUSAL=True, DOCUMENTS=True, WINDOW=True),  # the document walk of the rest
         "selection": dict(CAUSAL=True, SELECTION=True)}  # DSA's (gluon_selection.py)
SWITCHES = ("CAUSAL", "WINDOW", "PREFIX", "DOCUMENTS", "SOFTCAP", "ALIBI", "BOUNDED", "SELECTION")


def compiled(switches):
    layout = gluon_flash.descriptor_layout(torch.bfloat16)
    pack = switches.get("PACK", 1)  # query heads a document item holds (gluon_walk.document_pack)
    rows = f"{pack}, {gluon_flash.BLOCK_M // 2 // pack}"
    keys = f"1, {gluon_flash.BLOCK_N}"
    tile = {"q_desc": rows, "o_desc": rows, "k_desc": keys, "v_desc": keys}
    kernel = gluon_flash._attention_forward
    constexprs = dict({name: switches.get(name, False) for name in SWITCHES}, STAGES=gluon_flash.STAGES,
                      CONSUMER_REGISTERS=gluon_flash.CONSUMER_REGISTERS,
                      PRODUCER_REGISTERS=gluon_flash.PRODUCER_REGISTERS)
    documents = switches.get("DOCUMENTS")
    # the launcher's pointers: without documents, DocStart and Items are q and Claims the lse (none read)
    pointers = {"Out": "*bf16", "Lse": "*fp32", "Claims": "*i32" if documents else "*fp32",
                "DocStart": "*i32" if documents else "*bf16", "Items": "*i32" if documents else "*bf16",
                "Selection": "*i32" if switches.get("SELECTION") else "*bf16"}
    signature = {name: f"tensordesc<bf16[1, {tile[name]}, 128],{layout!r}>" if name in tile
                 else pointers[name] if name in pointers else "fp32" if name in ("sm_scale", "softcap")
                 else "constexpr" if name in constexprs else "i32"
                 for name in kernel.arg_names}
    source = GluonASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs={})
    return triton.compile(source, target=sm90_cubin.HOPPER,
                          options={"num_warps": gluon_flash.WARPS, "maxnreg": gluon_flash.MAX_REGISTERS})


# the consumer's scores as _attention_forward and _dq lay them out (64 x BLOCK_N) and dK/dV's S^T (64 keys x 64
# query rows), and gluon_selection's QUADS and KEY_QUADS with each basis's column 8 i + 2 q + b joined back:
# selected()'s reshape moves no data where they are one layout
def _joined(quads):
    return gl.DistributedLinearLayout(
        **{name: [[row, 8 * i + 2 * q + b] for row, i, q, b in getattr(quads, name)]
           for name in ("reg_bases", "lane_bases", "warp_bases")},
        block_bases=[], shape=[quads.shape[0], 8 * quads.shape[1]])


SCORE_ROWS, SCORE_KEYS = gl.constexpr(gluon_selection.ROWS.value), gl.constexpr(gluon_flash.BLOCK_N)
KEY_BLOCK = gl.constexpr(gluon_selection.QUERY_BLOCK.value)
SCORES = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                instr_shape=[16, gluon_flash.BLOCK_N, 16]))
KEY_SCORES = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                    instr_shape=[16, KEY_BLOCK.value, 16]))
QUADS_JOINED = gl.constexpr(_joined(gluon_selection.QUADS.value))
KEY_QUADS_JOINED = gl.constexpr(_joined(gluon_selection.KEY_QUADS.value))


@gluon.jit
def _quads_are_the_scores_layout(X):
    gl.static_assert(gl.to_linear_layout(SCORES, [SCORE_ROWS, SCORE_KEYS]) == QUADS_JOINED,
                     "gluon_selection.QUADS is not the accumulator's layout: selected() would move the bits")
    gl.static_assert(gl.to_linear_layout(KEY_SCORES, [SCORE_ROWS, KEY_BLOCK]) == KEY_QUADS_JOINED,
                     "gluon_selection.KEY_QUADS is not S^T's layout: selected_keys() would move the bits")


def quads_check():
    """Compile a kernel that only asserts, through this Triton's own to_linear_layout, that QUADS and KEY_QUADS are
    the scores' layouts with their columns split (the CPU test checks QUADS against a copy printed by Triton
    3.6.0)."""
    source = GluonASTSource(fn=_quads_are_the_scores_layout, signature={"X": "*fp32"}, constexprs={}, attrs={})
    return triton.compile(source, target=sm90_cubin.HOPPER, options={"num_warps": 4})


def _arrives_without_partition_sync(ptx):
    """How many mbarrier arrives in the PTX do not follow a `bar.sync N, 128` (a consumer warpgroup's) or a
    `bar.warp.sync` (the one-warp producer's, whose arrive is its first lane's) within 8 lines: the
    kernel's empty barriers count one arrival a consumer and the query tiles' one from the producer,
    which holds while Gluon lowers an arrive to a sync of the partition and one thread's arrive (Triton
    3.6.0), not a promise of its API."""
    lines = ptx.splitlines()
    arrives = [i for i, line in enumerate(lines) if "mbarrier.arrive.shared" in line]
    return sum(not any(re.search(r"bar\.sync\s+\d+, 128;|bar\.warp\.sync", line) for line in lines[max(0, i - 8):i])
               for i in arrives)


def report(label, build):
    """Compile through build(), print one line (resources and the schedule's SASS counts, or why it fails)
    and return 1 if it fails: a compiler error, a launch it would refuse, or an mbarrier arrive the arrival
    counts do not hold for (`_arrives_without_partition_sync`), or a warpgroup MMA reading descriptor registers
    some path leaves unwritten (`sass_flow.unwritten_descriptor_reads`)."""
    try:
        binary = build()
    except Exception as error:  # noqa: BLE001 - every compiler failure is one line here
        print(f"  FAIL {label}: {type(error).__name__}: {str(error).strip().splitlines()[-1]}", flush=True)
        return 1
    used = sm90_cubin.resources(binary)
    unsynced = _arrives_without_partition_sync(binary.asm["ptx"])
    if unsynced:
        print(f"  FAIL {label}: {unsynced} mbarrier.arrive not right after its partition's sync: the arrival "
              f"counts (one a consumer, one from the producer) no longer hold", flush=True)
    listing = sm90_cubin.sass_listing(binary.asm["cubin"])  # nvdisasm once: the check's and the counts'
    try:
        unwritten = sass_flow.unwritten_descriptor_reads(listing)
    except ValueError as error:  # a listing sass_flow cannot cut into blocks: no verdict, so a failure
        print(f"  FAIL {label}: its SASS could not be checked: {error}", flush=True)
        return 1
    for address, opcode, registers in unwritten:
        print(f"  FAIL {label}: {opcode} at {address:#x} reads descriptor registers "
              f"{', '.join(f'UR{r}' for r in registers)} that some path leaves unwritten (sass_flow.py)", flush=True)
    counts = Counter(op.split(".")[0] for op in sm90_cubin.listing_opcodes(listing))
    shown = {op: n for op, n in sorted(counts.items()) if op.startswith(SHOWN)}
    failed = bool(unsynced) or bool(unwritten) or used.refusal() is not None
    print(f"  {'FAIL' if failed else 'ok':4} {label}: {used}; {shown}", flush=True)
    return int(failed)


def main():
    print(f"triton {triton.__version__}, target sm_{sm90_cubin.HOPPER.arch}")
    failed = sum(report(f"_attention_forward {case}", lambda switches=switches: compiled(switches))
                 for case, switches in CASES.items())
    try:
        quads_check()
        print("  ok   gluon_selection.QUADS and KEY_QUADS are the scores' layouts, columns split", flush=True)
    except Exception as error:  # noqa: BLE001 - a failed assertion is a compiler error: one line here
        print(f"  FAIL gluon_selection's layouts: {str(error).strip().splitlines()[-1]}", flush=True)
        failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
