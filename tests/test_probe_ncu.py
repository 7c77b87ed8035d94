"""tools/probe_ncu.py's reading of Nsight Compute's exported pages, on the CPU: the raw page's figures come
from our forward's row (a range can hold other kernels: the documents' claim counter is zeroed in it), and
the SASS page's most stalled instructions from our forward's section, gzipped or not. The counters need a
GPU; what the summary says of them is only as right as this reading."""

import gzip
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import probe_ncu  # noqa: E402

RAW = '''==PROF== Connected to process 1
"ID","Kernel Name","gpu__time_duration.sum","smsp__inst_executed.sum","dram__bytes.sum"
"","","nsecond","inst","byte"
"0","_attention_forward","{time}","{inst}","7"
"1","void at::native::vectorized_elementwise_kernel<4, FillFunctor<int>>","1,536","9","4"
'''
SOURCE = '''"Kernel Name","_attention_forward",
"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)"
"0x20","      MUFU.EX2 R1, R2","1,200","9"
"0x30","      HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ","300","1"
"0x40","      FFMA R3, R3, UR5, R7","0","0"
"Kernel Name","void at::native::vectorized_elementwise_kernel<4>",
"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)"
"0x10","      STG.E [R2], RZ","5,000","10"
'''


def pages(folder, name, time, inst, zipped):
    (folder / name).mkdir(parents=True)
    (folder / name / "raw.csv").write_text(RAW.format(time=time, inst=inst))
    if zipped:
        (folder / name / "source.csv.gz").write_bytes(gzip.compress(SOURCE.encode()))
    else:
        (folder / name / "source.csv").write_text(SOURCE)


def test_the_summary_reads_our_forwards_row_and_section_of_each_variants_pages(tmp_path, capsys):
    pages(tmp_path, "causal", "841,000", "281,700,000", zipped=False)
    pages(tmp_path, "alibi", "965,200", "355,200,000", zipped=True)
    probe_ncu.summary(tmp_path)
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("gpu__", "smsp__"))}
    assert [float(x) for x in table["gpu__time_duration.sum"]] == [965200, 841000]  # alibi, causal: sorted
    assert [float(x) for x in table["smsp__inst_executed.sum"]] == [3.552e8, 2.817e8]
    assert "dram__bytes.sum" not in out  # not a SUMMARY figure
    for name in ("alibi", "causal"):  # our section's 1500 samples, not the fill kernel's 5000
        assert f"{name}: 3 SASS instructions, 1500 warp samples" in out
    assert "80.0%" in out and "MUFU.EX2" in out and "STG.E" not in out


def test_a_page_that_is_not_ncus_or_lacks_our_forward_is_one_line_and_exit_2(tmp_path, capsys):
    import pytest

    for name, text in (("garbled", "no header here\n1,2,3\n"),
                       ("other-kernel", RAW.replace('"_attention_forward"', '"_dkdv"').format(time="1", inst="1")),
                       ("no-kernel-column", '"ID","gpu__time_duration.sum"\n"","ns"\n"0","5"\n')):
        folder = tmp_path / name
        (folder / "causal").mkdir(parents=True)
        (folder / "causal" / "raw.csv").write_text(text)
        with pytest.raises(SystemExit) as stop:
            probe_ncu.summary(folder)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("probe_ncu: ") and "raw.csv" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as stop:
        probe_ncu.summary(tmp_path / "nothing")
    assert stop.value.code == 2 and "no */raw.csv" in capsys.readouterr().err
