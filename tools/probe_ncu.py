"""One launch of our Gluon forward (kernels/attention/gluon_flash.py) per variant, for Nsight Compute to
read its hardware counters: the question a timing cannot answer, *which* of the SM's pipes or waits a
variant pays for (alibi read 1.11-1.13x our causal in sessions 29-31, the documents 1.30 per useful FLOP,
and five guesses at them measured nothing).

    ncu --profile-from-start off --clock-control none --set full -o REPORT python tools/probe_ncu.py VARIANT
    python tools/probe_ncu.py --summary DIR          (the exported pages of tools/ncu_forward.sh, side by side)

The inputs are tools/probe_gluon_forward.py's (llama-3-8b-s4k, bfloat16, random normal: never zeros). Each
variant compiles and runs twice outside the profiled range, then once inside it (cudaProfilerStart/Stop),
so the report holds that variant's steady launch alone. --clock-control none leaves the clocks as a timing
sees them (the device's METHOD.md); the SM clock is among the figures the summary prints.
"""

import argparse
import gzip
import re
import sys
from io import StringIO
from pathlib import Path

import pandas as pd

TOOLS = Path(__file__).resolve().parent
KERNEL = "_attention_forward"  # gluon_flash's kernel, the one launch a variant profiled
# the figures a forward's cost hides in: time and clock, the pipes' shares of their peaks (tensor cores for
# the products, XU for exp2 and conversions, FMA and ALU for the scores), issue, and where warps wait
SUMMARY = [r"^gpu__time_duration\.sum$", r"^smsp__cycles_elapsed\.avg\.per_second$",
           r"^sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active$",
           r"^sm__pipe_.*cycles_active\.avg\.pct_of_peak_sustained_active$",
           r"^smsp__issue_active\.avg\.pct_of_peak_sustained_active$", r"^smsp__inst_executed\.sum$",
           r"^smsp__average_warp_latency_issue_stalled_.*\.ratio$", r"^smsp__pcsamp_warps_issue_stalled_.*$",
           r"^launch__registers_per_thread$", r"^l1tex__data_bank_conflicts_pipe_lsu.*\.sum$"]


def fail(message):
    """Bad input: one line, exit 2 (DESIGN.md's code for it), nothing written."""
    print(f"probe_ncu: {message}", file=sys.stderr)
    sys.exit(2)


def numbers(column):
    """ncu's figures as numbers: its pages write thousands with commas; what is not a number is NaN."""
    return pd.to_numeric(column.astype(str).str.replace(",", ""), errors="coerce")


def profile(names):
    import torch
    sys.path.insert(0, str(TOOLS.parent))
    sys.path.insert(0, str(TOOLS))
    from kernels.attention import gluon_flash
    from probe_gluon_forward import BATCH, DIM, KV_HEADS, Q_HEADS, SEQ, VARIANTS
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        fail(f"no variant {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not torch.cuda.is_available():
        fail("no CUDA device")
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(BATCH, Q_HEADS, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
    for name in names:
        options = {key: value.cuda() if torch.is_tensor(value) else value for key, value in VARIANTS[name].items()}
        kv_heads = options.pop("kv_heads", KV_HEADS)
        k, v = (torch.randn(BATCH, kv_heads, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
                for _ in range(2))
        launch = gluon_flash.forward_launcher(q, k, v, **options)
        for _ in range(2):  # compiled, and the clocks up, outside the profiled range
            launch()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        out = launch()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
        print(f"probe_ncu: {name} launched once under the profiler, |out| max {out.abs().max().item():.3f}",
              flush=True)


def read_raw(path):
    """ncu's raw page (--page raw --csv): a header row, a units row, one row a kernel."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise ValueError(f"{path}: no ncu raw page (no header row)")
    table = pd.read_csv(StringIO("\n".join(lines[start:])), thousands=",")
    return table.iloc[1:]  # the units row


def kernel_row(path):
    """Our forward's row of a raw page (a range can hold other kernels), or a ValueError naming the page."""
    try:
        rows = read_raw(path)
        ours = rows[rows["Kernel Name"].astype(str).str.contains(KERNEL)]
    except (KeyError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not an ncu raw page ({type(error).__name__}: {error})") from error
    if ours.empty:
        raise ValueError(f"{path}: no row of {KERNEL}")
    return ours.iloc[-1]


def summary(folder):
    """Each variant's raw page (FOLDER/VARIANT/raw.csv), the SUMMARY figures side by side, and each
    source page's (FOLDER/VARIANT/source.csv) instructions that the most warp samples stalled at."""
    variants = sorted(p.parent.name for p in Path(folder).glob("*/raw.csv"))
    if not variants:
        fail(f"no */raw.csv under {folder}")
    columns = {}
    for name in variants:
        try:
            row = kernel_row(Path(folder) / name / "raw.csv")
        except ValueError as error:
            fail(error)
        columns[name] = {metric: row[metric] for metric in row.index
                         if any(re.match(pattern, metric) for pattern in SUMMARY)}
    table = pd.DataFrame(columns).apply(numbers).dropna(how="all")
    table = table[(table.max(axis=1) > 0)]
    shown = {"display.max_rows": 400, "display.max_columns": 20, "display.width": 250, "display.max_colwidth": 90,
             "display.float_format": "{:.4g}".format}
    with pd.option_context(*(item for pair in shown.items() for item in pair)):
        print(table.sort_index())
    for name in variants:
        # (the pages kept under reports/truth are gzipped)
        for source in (Path(folder) / name / "source.csv", Path(folder) / name / "source.csv.gz"):
            if source.exists():
                hot_instructions(name, source)


def hot_instructions(name, path, top=25):
    # one section a profiled kernel, each under its "Kernel Name" line (the documents' range also holds the
    # zeroing of their claim counter, when ncu is not told to keep the forward alone)
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    sections = text.split('"Kernel Name",')
    ours = [section for section in sections if section.startswith(f'"{KERNEL}')]
    if not ours:
        print(f"\n{name}: {path.name} has no SASS table of {KERNEL}")
        return
    table = pd.read_csv(StringIO(ours[-1].split("\n", 1)[1]), thousands=",")
    samples = next((c for c in table.columns if c.startswith("Warp Stall Sampling (All")), None)
    if samples is None:
        print(f"\n{name}: no warp stall sampling column in {path.name}: {list(table.columns)[:12]}")
        return
    table[samples] = numbers(table[samples]).fillna(0)
    total = table[samples].sum()
    print(f"\n{name}: {len(table)} SASS instructions, {total:.0f} warp samples; the {top} most stalled at")
    for _, row in table.nlargest(top, samples).iterrows():
        print(f"  {row[samples] / total:6.1%}  {row['Address']}  {row['Source']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="tools/probe_gluon_forward.py's VARIANTS")
    parser.add_argument("--summary", metavar="DIR", help="print the exported pages under DIR instead")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        profile(args.variants or ["causal", "alibi"])
