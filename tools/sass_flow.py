"""Uniform registers a warpgroup MMA reads where some path from the kernel's entry wrote none: a check of ptxas's
output that no timing or test at one layout makes.

Why (session 38): doc-narrow's half-width diagonal tile, a branch taken by some work items, issued S through the
same query tile as the walk after it. The PTX computes the query tile's descriptors in each block; ptxas 12.8
(Triton 3.6.0's, sm_90) computed `base + 2` (the second k-step's) once, in the branch, and the walk after the join
read it from uniform registers UR32/UR33 the other path never wrote: compute-sanitizer on an H200 reported an
out-of-range shared address at that HGMMA (`_attention_forward+0x2c30`), with 2 x 8 heads packed 4 a KV head
(tools/probe_doc_narrow.py). Session 27 met the same class in the ones tiles' descriptors (gluon_rings.ones_tiles).
A variant of the branch compiled right by chance (items at offset 0 alone), so only reading the SASS tells.

The check: nvdisasm's listing cut into basic blocks (labels, branches, calls, exits), the registers holding a value
on every path from the entry (a must-analysis to its fixed point: a uniform register once written from registers
that do; a vector register from the entry on, unless written from a uniform one that does not, so a value through
`IMAD.U32 R6, RZ, RZ, UR5` and `R2UR UR9, R6` keeps its state), and every HGMMA reachable from the entry whose
descriptor registers (`_descriptors`) one path leaves unwritten.

What it cannot see: a register every path writes but one path wrote for something else (a stale value, not an
unwritten one: had ptxas used UR32 earlier, the same miscompile would pass); a predicated write counts as a write
(ptxas reads such a register under the same predicate, and a stricter rule flags 32 reads of main's softcap+lse
alone), so an if-converted form of the bug passes; HGMMA alone is checked (no FP8 or integer MMAs here)."""

import re
from dataclasses import dataclass, field

_REGISTER = re.compile(r"\b(U?R)(\d+)\b")  # URZ and RZ, the zero registers, are not registers here
# one instruction line of nvdisasm -c: its address, predicate, opcode (with its suffixes) and operands
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z0-9_]+(?:\.[A-Za-z0-9_]+)*)\s*([^;]*);")
_LABEL = re.compile(r"^\s*([.$\w]+):\s*$")  # .L_x_5:, and a callee's $__internal_0_$__cuda_...:
_TARGET = re.compile(r"`\(([^)`]+)\)")


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
            if any(block.label == label.group(1) for block in blocks):
                raise ValueError(f"label {label.group(1)} twice in the listing")
            if blocks[-1].instructions or blocks[-1].label:
                blocks.append(Block(None))
            blocks[-1].label = label.group(1)
            continue
        found = INSTRUCTION.search(line)
        if not found:
            continue
        address, predicate, opcode, operands = found.groups()
        listed = re.search(r"BRANCH_TARGETS ([^\"*]*)", line)
        targets = [t.strip() for t in listed.group(1).split(",")] if listed else _TARGET.findall(operands)
        blocks[-1].instructions.append(Instruction(int(address, 16), bool(predicate), opcode, _operands(operands),
                                                   targets))
        if opcode.split(".")[0] in ("BRA", "EXIT", "RET", "BRX", "JMX", "CALL"):
            blocks.append(Block(None))
    blocks = [block for block in blocks if block.instructions or block.label]
    at = {block.label: i for i, block in enumerate(blocks) if block.label}
    for i, block in enumerate(blocks):
        last = block.instructions[-1] if block.instructions else None
        kind = last.opcode.split(".")[0] if last else None
        if kind in ("BRA", "BRX", "JMX", "CALL"):  # a call's callee starts from the caller's registers
            if not last.targets or any(target not in at for target in last.targets):
                raise ValueError(f"a branch at {last.address:#x} to {last.targets or 'no label'}: not all in the "
                                 f"listing")
            block.successors.extend(at[target] for target in last.targets)
        falls_through = kind not in ("BRA", "BRX", "JMX", "EXIT", "RET") or last.predicated
        if falls_through and i + 1 < len(blocks):
            block.successors.append(i + 1)
    return blocks


def _pairs(instruction):
    """Which of an instruction's operands are 64-bit register pairs: all under .64; under .WIDE (`UIMAD.WIDE.U32
    d, a, b, c`, d = a x b + c) the destination and the addend alone."""
    parts, n = instruction.opcode.split(".")[1:], len(instruction.operands)
    if "64" in parts:
        return [True] * n
    if "WIDE" in parts:
        return [i in (0, 3) for i in range(n)]
    return [False] * n


def _registers(operand, pair):
    """The registers an operand names, as "UR5" or "R6" (the next one too where it is a pair)."""
    return {f"{kind}{int(n) + i}" for kind, n in _REGISTER.findall(operand) for i in range(2 if pair else 1)}


def _step(holding, instruction):
    """The registers holding a value after an instruction (`unwritten_descriptor_reads`): its destination does where
    every register it reads does. A predicated write counts as a write (see the module's note)."""
    if not instruction.operands or not re.fullmatch(r"U?R\d+", instruction.operands[0]):
        return holding
    pairs = _pairs(instruction)
    destination = _registers(instruction.operands[0], pairs[0])
    sources = set().union(*(_registers(operand, pair) for operand, pair in zip(instruction.operands[1:], pairs[1:])))
    return holding | destination if sources <= holding else holding - destination


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
            registers |= {f"UR{r}" for r in range(n + 2 if a_in_registers else n, n + 4)}
    return registers


def unwritten_descriptor_reads(listing):
    """[(address, opcode, registers)]: each HGMMA reachable from the entry whose descriptor registers (uniform
    register numbers) some path from the entry leaves unwritten; [] where they hold on every path."""
    blocks = parse(listing)
    vector = {f"R{n}" for n in range(256)}
    everything = vector | {f"UR{n}" for n in range(256)}
    predecessors = [[] for _ in blocks]
    for i, block in enumerate(blocks):
        for j in block.successors:
            predecessors[j].append(i)
    reached, frontier = {0}, [0]
    while frontier:
        for j in blocks[frontier.pop()].successors:
            if j not in reached:
                reached.add(j)
                frontier.append(j)
    into = [set(vector) if i == 0 else set(everything) for i in range(len(blocks))]
    out = [set(everything) for _ in blocks]
    changed = True
    while changed:
        changed = False
        for i, block in enumerate(blocks):
            if i:
                into[i] = set.intersection(*(out[p] for p in predecessors[i])) if predecessors[i] else set(everything)
            holding = into[i]
            for instruction in block.instructions:
                holding = _step(holding, instruction)
            if holding != out[i]:
                out[i], changed = holding, True
    found = []
    for i in sorted(reached):
        holding = into[i]
        for instruction in blocks[i].instructions:
            missing = _descriptors(instruction) - holding
            if missing:
                found.append((instruction.address, instruction.opcode, sorted(int(r[2:]) for r in missing)))
            holding = _step(holding, instruction)
    return found
