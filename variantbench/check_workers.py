"""A case's check as one line, never a raise (`check_one`), and many cases' on spawned worker processes
(`check_many`): what `variantbench check` and `run`'s precheck report (variantbench.checking), and `run` for a failed
benchmark its precheck did not check (runner). Cases are resolved, prepared and checked by variantbench.cases; this
module runs them and turns each outcome into a line."""

import time
from dataclasses import dataclass

from variantbench import cases
from variantbench.catalog import Unsupported


@dataclass(frozen=True)
class CheckResult:
    case: str
    status: str  # ok | mismatch | error | skip
    line: str  # what `variantbench check` prints for it
    out_of_memory: bool = False
    context_lost: bool = False  # a sticky CUDA error (an illegal address): this process's GPU is unusable
    unpreparable: str = ""  # why its prepare found it cannot run here (UnsupportedWhenPrepared), if so


def _cuda_usable() -> bool:
    """Whether this process's CUDA context survived: after an illegal memory access every later call
    raises (the H200 saw Flex read past a page pool, and the next empty_cache raise)."""
    import torch

    try:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # other worker processes share the card
        return True
    except Exception:  # noqa: BLE001 - any CUDA error here means the context is gone
        return False


def check_one(case, backward=True) -> CheckResult:
    """Prepare (compile, autotune) and check one case, and its gradients where it has a backward
    (unless `backward` is False); any failure becomes one line, never a raise."""
    t0 = time.perf_counter()
    try:
        _, _, result = cases.prepare_checked(case)
        # Grad mode is part of what compiles (Flex guards on it): the forward timed alone and the one
        # under the timed backward are two builds, and each is checked.
        if backward and not cases.backward_unsupported(case):
            _, _, result = cases.prepare_checked(case, requires_grad=True)
    except cases.Mismatch as why:
        return CheckResult(case.name, "mismatch", f"MISMATCH  {why}")
    except Unsupported as why:
        return CheckResult(case.name, "skip", f"{'skip':9} {case.name}: {why}",
                           unpreparable=str(why) if isinstance(why, cases.UnsupportedWhenPrepared) else "")
    except Exception as error:  # noqa: BLE001 - a crash is reported as one line; the other cases go on
        oom = "out of memory" in str(error).lower()
        return CheckResult(case.name, "error", f"{'OOM' if oom else 'ERROR':9} {case.name}: {type(error).__name__}: "
                                               f"{cases.first_line(error)}", out_of_memory=oom,
                           context_lost=case.device == "cuda" and not _cuda_usable())
    finally:
        if case.device == "cuda":
            _cuda_usable()
    via = f"  via {result['backend']}" if result["backend"] else ""
    grads = " ".join(f"{key[len('max_error_'):]} {value:.1e}" for key, value in result.items()
                     if key.startswith("max_error_d"))
    at = f" ({result['gradients_at']})" if "gradients_at" in result else ""
    grads = f"; gradients {grads}{at}" if grads else ""
    return CheckResult(
        case.name, "ok",
        f"ok        {case.name}  max error {result['max_error']:.2e} <= {result['tolerance']:.2e}{grads}{via}  "
        f"({time.perf_counter() - t0:.1f}s)",
    )


_lost_by = None  # in a worker process: the case after which its CUDA context was unusable


def _check_key(key, backward) -> CheckResult:
    """check_one in a worker process: cases travel as names (their closures do not pickle). A worker
    whose GPU context a case broke checks nothing more: it hands its later cases back to be re-run
    in a fresh process, so only the case that broke it fails."""
    global _lost_by
    case = cases.resolve(*key)
    if _lost_by is not None:
        return CheckResult(case.name, "retry", f"{case.name}: handed back ({_lost_by} broke its worker's GPU context)")
    result = check_one(case, backward)
    if result.context_lost:
        _lost_by = case.name
    return result


def check_many(selected, jobs, report, backward=True):
    """check_one for every case, calling report(CheckResult) as each finishes; returns the results.

    With jobs > 1 the cases run in that many spawned processes: preparing is mostly compilation
    (a cold FlexAttention compile takes 10-20 s of CPU, its check milliseconds of GPU), so it scales
    with cores, and the compile and autotune caches it fills on disk make the suite's own setups
    fast. Implementations that autotune run afterwards one at a time, so no other process's kernels
    disturb the config timings they choose from (the choice is cached, then timed by the suite), and
    so do collectives, whose every case takes every GPU (8 workers would start 8 NCCL groups); so
    do cases that ran out of memory beside the others (on an H100, 8 workers checking llama-3-8b-s16k
    next to an 8 GiB reference left 13 cases without memory): only an OOM alone is reported.
    A worker that dies (a crash, a kill) fails the cases it had, each with one line.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    results = []

    def done(result):
        results.append(result)
        report(result)

    if jobs <= 1:
        lost_by = None
        for case in selected:
            if lost_by is not None:
                done(CheckResult(case.name, "error", f"{'ERROR':9} {case.name}: not checked: {lost_by} broke this "
                                                     "process's GPU context (an illegal memory access)"))
                continue
            done(check_one(case, backward))
            lost_by = case.name if results[-1].context_lost else None
        return results
    rounds = [([c for c in selected if not c.implementation.runs_alone], jobs),
              ([c for c in selected if c.implementation.runs_alone], 1)]
    while rounds:
        batch, workers = rounds.pop(0)
        if not batch:
            continue
        again, alone = [], []
        # spawn, not fork: a forked CUDA context is unusable, and the parent may hold one.
        with ProcessPoolExecutor(max_workers=min(workers, len(batch)), mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(_check_key, (c.family, c.variant.name, c.implementation.name, c.shape.name, c.device),
                            backward): c
                for c in batch
            }
            for future in as_completed(futures):
                case = futures[future]
                try:
                    result = future.result()
                    if result.status == "retry":
                        again.append(case)  # a fresh pool, once this one has exited
                    elif workers > 1 and result.out_of_memory:
                        alone.append(case)
                    else:
                        done(result)
                except BrokenProcessPool:
                    done(CheckResult(case.name, "error", f"{'ERROR':9} {case.name}: a worker process died "
                                                         "(crash or kill); `--jobs 1` shows which case"))
        # the handed-back cases first, at the same width; out-of-memory ones alone, before the
        # implementations that always run alone
        rounds[:0] = [(again, workers), (alone, 1)]
    return results
