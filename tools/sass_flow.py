"""Uniform registers a warpgroup MMA reads where some path from the kernel's entry wrote none: a check of ptxas's
output that no timing or test at one layout makes.

Why (session 38): doc-narrow's half-width diagonal tile, a branch taken by some work items, issued S through the
same query tile as the walk after it. The PTX computes the query tile's descriptors in each block; ptxas 12.8
(Triton 3.6.0's, sm_90) computed `base + 2` (the second k-step's) once, in the branch, and the walk after the join
read it from uniform registers UR32/UR33 the other path never wrote: compute-sanitizer on an H200 reported an
out-of-range shared address at that HGMMA (`_attention_forward+0x2c30`), with 2 x 8 heads packed 4 a KV head
(tools/probe_doc_narrow.py). Session 27 met the same class in the ones tiles' descriptors (gluon_rings.ones_tiles).
A variant of the branch compiled right by chance (items at offset 0 alone), so only reading the SASS tells.

The check: nvdisasm's listing cut into basic blocks (labels, branches, exits), uniform registers definitely written
on every path from the entry, each from registers so written (a must-analysis to its fixed point), and every
HGMMA's descriptor registers (`_descriptors`) read where one of them is not."""

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z0-9_]+(?:\.[A-Za-z0-9_]+)*)\s*([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`?\((\.L_x_\d+)\)")


@dataclass
class Instruction:
    address: int
    predicated: bool
    opcode: str
    operands: list
    targets: list  # a branch's labels (an indirect branch's from nvdisasm's BRANCH_TARGETS note)


@dataclass
class Block:
    label: str | None
    instructions: list = field(default_factory=list)
    successors: list = field(default_factory=list)


def _operands(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def parse(listing):
    """nvdisasm's listing (`-c`) as basic blocks, in order, each with its successors' indices."""
    blocks = [Block(None)]
    for line in listing.splitlines():
        label = _LABEL.match(line)
        if label:
            if blocks[-1].instructions or blocks[-1].label:
                blocks.append(Block(None))
            blocks[-1].label = label.group(1)
            continue
        found = _LINE.search(line)
        if not found:
            continue
        address, predicate, opcode, operands = found.groups()
        listed = re.search(r"BRANCH_TARGETS ([^\"*]*)", line)
        targets = [t.strip() for t in listed.group(1).split(",")] if listed else _TARGET.findall(operands)
        blocks[-1].instructions.append(Instruction(int(address, 16), bool(predicate), opcode, _operands(operands),
                                                   targets))
        if opcode.split(".")[0] in ("BRA", "EXIT", "RET", "BRX", "JMX"):
            blocks.append(Block(None))
    blocks = [block for block in blocks if block.instructions or block.label]
    at = {block.label: i for i, block in enumerate(blocks) if block.label}
    for i, block in enumerate(blocks):
        last = block.instructions[-1] if block.instructions else None
        kind = last.opcode.split(".")[0] if last else None
        if kind in ("BRA", "BRX", "JMX"):
            if not last.targets or any(target not in at for target in last.targets):
                raise ValueError(f"a branch at {last.address:#x} to {last.targets or 'no label'}: not all in the "
                                 f"listing")
            block.successors.extend(at[target] for target in last.targets)
        falls_through = kind not in ("BRA", "BRX", "JMX", "EXIT", "RET") or last.predicated
        if falls_through and i + 1 < len(blocks):
            block.successors.append(i + 1)
    return blocks


def _registers(operand, wide):
    """The uniform registers an operand names (URZ, the zero register, none; a 64-bit operand two)."""
    found = {int(n) for n in re.findall(r"\bUR(\d+)\b", operand)}
    return found | {n + 1 for n in found} if wide else found


def _step(defined, instruction):
    """The uniform registers defined after an instruction: its destination is where every uniform register it
    reads is (a value computed from an unwritten register is itself unwritten). A predicated write counts as a
    write: ptxas reads such a register under the same predicate (`@!UP2 UIADD3 UR10, ...` then `@!UP2 USHF.L.U32
    UR11, UR10, ...`), and the branches, not the predicates, are what this check is for."""
    if not instruction.operands or not re.fullmatch(r"UR\d+", instruction.operands[0]):
        return defined
    wide = any(part in ("64", "WIDE") for part in instruction.opcode.split(".")[1:])
    destination = _registers(instruction.operands[0], wide)
    sources = set().union(*(_registers(operand, wide) for operand in instruction.operands[1:]))
    return defined | destination if sources <= defined else defined - destination


def _descriptors(instruction):
    """The uniform registers an HGMMA reads its operands' descriptors from: gdesc[URn] names four, n and n + 1
    A's, n + 2 and n + 3 B's; where A is in registers (`HGMMA ... R88, R24, gdesc[UR16].tnspB, ...`) only
    B's (ptxas zeroes UR16 there and writes the next k-step's B into UR18 and UR19)."""
    if not instruction.opcode.startswith("HGMMA"):
        return set()
    registers = set()
    for operand in instruction.operands:
        found = re.match(r"gdesc\[UR(\d+)\]", operand)
        if found:
            n = int(found.group(1))
            a_in_registers = re.fullmatch(r"R\d+", instruction.operands[1]) is not None
            registers |= set(range(n + 2 if a_in_registers else n, n + 4))
    return registers


def unwritten_descriptor_reads(listing):
    """[(address, opcode, registers)]: each HGMMA whose descriptor registers some path from the entry leaves
    unwritten, with those registers; [] where ptxas's uniform registers hold on every path."""
    blocks = parse(listing)
    everything = set(range(256))
    into = [set() if i == 0 else set(everything) for i in range(len(blocks))]
    predecessors = [[] for _ in blocks]
    for i, block in enumerate(blocks):
        for j in block.successors:
            predecessors[j].append(i)
    out = [set(everything) for _ in blocks]
    changed = True
    while changed:
        changed = False
        for i, block in enumerate(blocks):
            if i:
                into[i] = set.intersection(*(out[p] for p in predecessors[i])) if predecessors[i] else set()
            written = into[i]
            for instruction in block.instructions:
                written = _step(written, instruction)
            if written != out[i]:
                out[i], changed = written, True
    found = []
    for i, block in enumerate(blocks):
        written = into[i]
        for instruction in block.instructions:
            missing = _descriptors(instruction) - written
            if missing:
                found.append((instruction.address, instruction.opcode, sorted(missing)))
            written = _step(written, instruction)
    return found
