"""tools/sass_flow.py: the check that every warpgroup MMA's descriptor registers are written on every path, on
listings shaped as nvdisasm prints ptxas's sm_90 output (session 38's miscompile, cut down)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import sass_flow  # noqa: E402


def listing(*lines):
    """nvdisasm -c's shape: `/*addr*/ [pred] OPCODE operands ;` and `.L_x_N:` labels, addresses 16 apart."""
    out, address = [], 0
    for line in lines:
        if line.endswith(":"):
            out.append(line)
        else:
            out.append(f"        /*{address:04x}*/                   {line} ;")
            address += 16
    return "\n".join(out)


# the doc-narrow shape: a branch some items take issues S from the query tile (its descriptor base + 2 into
# UR32/UR33); after the join the walk's S reads UR32/UR33, which the other path never wrote
BRANCH_LINES = [
    "S2UR UR4, SR_CTAID.X",
    "USGXT.U32 UR8, UR4, 0xe",
    "UMOV UR16, UR8",
    "UMOV UR17, 0x40000040",
    "UMOV UR18, UR8",
    "UMOV UR19, 0x40000040",
    "@P0 BRA `(.L_x_5)",
    "UIADD3 UR32, UP0, UR8, 0x2, URZ",
    "UIADD3.X UR33, URZ, 0x40000040, URZ, UP0, !UPT",
    "HGMMA.64x64x16.F32.BF16 R24, gdesc[UR16], RZ, !UPT",
    ".L_x_5:",
    "UMOV UR40, UR32",
    "UMOV UR41, UR33",
    "UIADD3.64 UR42, UR18, 0x2, URZ",
    "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR40], R24",
    "EXIT",
]
SKIPPED_BRANCH = listing(*BRANCH_LINES)


def test_a_descriptor_written_only_in_a_branch_is_found_through_the_moves_after_the_join():
    found = sass_flow.unwritten_descriptor_reads(SKIPPED_BRANCH)
    assert found == [(0xd0, "HGMMA.64x128x16.F32.BF16", [40, 41])]


def test_descriptors_written_before_the_branch_hold_on_both_paths():
    branch = BRANCH_LINES.index("@P0 BRA `(.L_x_5)")
    written_first = BRANCH_LINES[:branch] + BRANCH_LINES[branch + 1:branch + 3] + BRANCH_LINES[branch:]
    assert sass_flow.unwritten_descriptor_reads(listing(*written_first)) == []


def test_a_value_set_in_an_earlier_trip_of_a_loop_is_not_written_on_the_first():
    """The item loop: the branch's registers survive into the next item, but the first item that skips the
    branch reads them unwritten (the case that crashed: not every path into the join writes them)."""
    looped = listing(
        "S2UR UR4, SR_CTAID.X",
        "UMOV UR20, UR4",
        ".L_x_1:",
        "@P0 BRA `(.L_x_2)",
        "UMOV UR36, UR4",
        "UMOV UR37, UR4",
        ".L_x_2:",
        "UMOV UR38, UR4",
        "UMOV UR39, UR4",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR36], R24",
        "@P1 BRA `(.L_x_1)",
        "EXIT",
    )
    assert sass_flow.unwritten_descriptor_reads(looped) == [(0x70, "HGMMA.64x128x16.F32.BF16", [36, 37])]


def test_with_a_in_registers_only_the_b_descriptor_counts():
    """`HGMMA ... R88, R24, gdesc[UR16].tnspB`: ptxas zeroes UR16 and keeps B in UR18 and UR19."""
    b_only = listing(
        "S2UR UR4, SR_CTAID.X",
        "UIADD3 UR18, UP0, UR4, 0x80, URZ",
        "UIADD3.X UR19, URZ, 0x40000040, URZ, UP0, !UPT",
        "HGMMA.64x128x16.F32.BF16 R88, R24, gdesc[UR16].tnspB, RZ, !UPT",
        "EXIT",
    )
    assert sass_flow.unwritten_descriptor_reads(b_only) == []
    assert sass_flow.unwritten_descriptor_reads(b_only.replace("R88, R24, gdesc", "R88, gdesc")) == [
        (0x30, "HGMMA.64x128x16.F32.BF16", [16, 17])]


def test_a_64_bit_write_defines_both_registers_and_an_indirect_branch_reaches_each_target():
    """`UIADD3.64 UR22, ...` writes UR22 and UR23; BRX's targets come from nvdisasm's BRANCH_TARGETS note, so a
    partition reached only through it is checked too."""
    dispatched = "\n".join([
        listing("ULDC.64 UR4, c[0x0][0x208]", "UIADD3.64 UR22, UR4, 0x4, URZ"),
        "        /*0020*/                   BRX R10 -0x30                    "
        "(*\"BRANCH_TARGETS .L_x_2,.L_x_3\"*);",
        ".L_x_2:",
        "        /*0030*/                   UMOV UR20, UR22 ;",
        "        /*0040*/                   UMOV UR21, UR23 ;",
        "        /*0050*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR20], RZ, !UPT ;",
        "        /*0060*/                   EXIT ;",
        ".L_x_3:",
        "        /*0070*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR28], RZ, !UPT ;",
        "        /*0080*/                   EXIT ;",
    ])
    assert sass_flow.unwritten_descriptor_reads(dispatched) == [(0x70, "HGMMA.64x128x16.F32.BF16", [28, 29, 30, 31])]


def test_a_branch_to_a_label_the_listing_lacks_is_refused():
    with pytest.raises(ValueError, match="not all in the listing"):
        sass_flow.parse(listing("@P0 BRA `(.L_x_9)", "EXIT"))


def test_a_value_through_a_vector_register_keeps_its_state():
    """ptxas moves values between the register files (`IMAD.U32 R6, RZ, RZ, UR5` ... `R2UR UR9, R6`): an unwritten
    uniform register copied out and back is still unwritten; a vector register from the entry on holds a value."""
    through = listing(
        "S2R R2, SR_TID.X",
        "@P0 BRA `(.L_x_1)",
        "UMOV UR5, 0x40",
        ".L_x_1:",
        "IMAD.U32 R6, RZ, RZ, UR5",
        "R2UR UR8, R6",
        "R2UR UR9, R2",
        "UMOV UR10, UR9",
        "UMOV UR11, UR9",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], RZ, !UPT",
        "EXIT",
    )
    assert sass_flow.unwritten_descriptor_reads(through) == [(0x80, "HGMMA.64x128x16.F32.BF16", [8])]


def test_a_wide_multiply_reads_its_factors_as_single_registers_and_its_addend_as_a_pair():
    """`UIMAD.WIDE.U32 d, a, b, c` is d = a x b + c with d and c 64-bit: a's and b's next registers are not read
    (counted as read, main's causal reads 77 registers unwritten through them); c's is."""
    def wide(addend):
        return listing("S2UR UR4, SR_CTAID.X", "S2UR UR6, SR_CTAID.Y", "UMOV UR8, UR4", "UMOV UR9, UR4",
                       f"UIMAD.WIDE.U32 UR16, UR4, UR6, {addend}", "UMOV UR18, UR4", "UMOV UR19, UR4",
                       "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR16], RZ, !UPT", "EXIT")

    assert sass_flow.unwritten_descriptor_reads(wide("UR8")) == []
    assert sass_flow.unwritten_descriptor_reads(wide("UR6")) == [(0x70, "HGMMA.64x128x16.F32.BF16", [16, 17])]


def test_a_callee_starts_from_its_callers_registers_and_a_label_twice_is_refused():
    called = "\n".join([
        listing("S2UR UR4, SR_CTAID.X", "CALL.REL.NOINC `($__internal_0_$__cuda_slowpath)", "EXIT"),
        "$__internal_0_$__cuda_slowpath:",
        "        /*0030*/                   UMOV UR16, UR4 ;",
        "        /*0040*/                   UMOV UR17, UR4 ;",
        "        /*0050*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR16], RZ, !UPT ;",
        "        /*0060*/                   RET.REL.NODEC R24 `(_attention_forward) ;",
    ])
    assert sass_flow.unwritten_descriptor_reads(called) == [(0x50, "HGMMA.64x128x16.F32.BF16", [18, 19])]
    with pytest.raises(ValueError, match="twice"):
        sass_flow.parse(listing(".L_x_1:", "NOP", ".L_x_1:", "EXIT"))


def test_the_block_after_a_predicated_branch_is_reached_by_falling_through():
    """`@P0 BRA` may not be taken: the block after it runs, and its HGMMA's unwritten registers are reported."""
    fallen = listing("S2UR UR4, SR_CTAID.X", "@P0 BRA `(.L_x_9)", "UMOV UR16, UR4", "UMOV UR17, UR4",
                     "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR16], RZ, !UPT", ".L_x_9:", "EXIT")
    assert sass_flow.unwritten_descriptor_reads(fallen) == [(0x40, "HGMMA.64x128x16.F32.BF16", [18, 19])]


def test_a_register_of_a_wide_load_reads_as_written():
    """Vector registers hold a value from the entry on unless written from an unwritten uniform one: the check
    does not model every multi-register destination (`LDS.128 R4` writes R4-R7), and the fourth of them moved
    into a descriptor is not an unwritten read."""
    loaded = listing("S2UR UR4, SR_CTAID.X", "LDS.128 R4, [UR4]", "R2UR UR16, R7", "R2UR UR17, R7", "R2UR UR18, R7",
                     "R2UR UR19, R7", "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR16], RZ, !UPT", "EXIT")
    assert sass_flow.unwritten_descriptor_reads(loaded) == []
