"""The run's progress log: lines the benchmark processes (and the collectives' ranks they start)
append while asv runs, which `variantbench run` echoes as they come. asv itself reports a benchmark
only once its whole grid is done."""

import contextlib
import faulthandler
import os

# A build still going after this long gets every thread's Python stack written to the log, again each
# period, so a stalled case says where it stalls while asv waits out its timeout (an H200 pair's
# collectives once sat 420 s with no word). The longest healthy build measured is a first
# FlexAttention compile at 16k tokens, about 60 s on an H100 host.
STALL_DUMP_S = 120


def log_path():
    run_dir = os.environ.get("VARIANTBENCH_RUN_DIR")
    return os.path.join(run_dir, "progress.log") if run_dir else None


def progress(line):
    path = log_path()
    if path:
        # One short append per line: atomic on POSIX, so lines from successive processes never mix.
        with open(path, "a") as log:
            log.write(line + "\n")


@contextlib.contextmanager
def stall_dumps():
    """faulthandler's watchdog is a C thread: it dumps even while the work blocks holding the GIL.
    Its dump starts "Timeout (0:02:00)!"; the stalled case is the one after the last ready line.

    Not under the Triton interpreter (TRITON_INTERPRET=1, the CPU run), where a healthy build is
    slow Python: dsa_topk_2048 at tiny-s128 took 119 s to build on a 2-core CPU, and with another
    run beside it the dump at 120 s, reading that busy thread's frames, crashed the benchmark
    (SIGSEGV) where it was merely slow (session 13)."""
    path = log_path()
    if path is None or os.environ.get("TRITON_INTERPRET") == "1":
        yield
        return
    with open(path, "a") as log:
        faulthandler.dump_traceback_later(STALL_DUMP_S, repeat=True, file=log)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
