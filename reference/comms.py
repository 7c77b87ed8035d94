"""Collectives as math: single-process functions over the list of every rank's tensor, in rank
order, returning the list of every rank's result. The correctness oracle of the comms family."""

import torch


def all_reduce(xs):
    total = torch.stack(xs).sum(0)
    return [total.clone() for _ in xs]


def all_gather(xs):
    gathered = torch.cat(xs)
    return [gathered.clone() for _ in xs]


def reduce_scatter(xs):
    return list(torch.stack(xs).sum(0).chunk(len(xs)))


def all_to_all(xs, splits):
    """splits[src][dst]: how many of rank src's elements (in order) go to rank dst; rank dst receives
    its pieces from every source in rank order."""
    pieces = [x.split(row) for x, row in zip(xs, splits)]
    return [torch.cat([pieces[src][dst] for src in range(len(xs))]) for dst in range(len(xs))]


def ep_dispatch_combine(xs, splits):
    """Expert-parallel round trip: dispatch each rank's routed rows to the ranks holding their
    experts (all-to-all), apply the expert (here: multiply by the expert rank + 1, so a row sent to
    the wrong rank comes back wrong), combine back to the source (the inverse all-to-all)."""
    arrived = all_to_all(xs, splits)
    processed = [rows * (rank + 1) for rank, rows in enumerate(arrived)]
    back = [list(zip(*splits))[dst] for dst in range(len(xs))]  # transposed: what dst returns to each src
    return all_to_all(processed, [list(row) for row in back])


# A catalog entry's `op` names one of these; the catalog checks its names against this table.
OPS = {"all_reduce": all_reduce, "all_gather": all_gather, "reduce_scatter": reduce_scatter,
       "all_to_all": all_to_all, "ep_dispatch_combine": ep_dispatch_combine}


def op(name):
    """The collective of that name; an unknown name raises with the known ones."""
    try:
        return OPS[name]
    except KeyError:
        raise ValueError(f"unknown collective {name!r}; known: {', '.join(OPS)}") from None


def run(name, xs, splits):
    """The collective `name` over every rank's input; `splits` for the all-to-alls, else None."""
    return op(name)(xs) if splits is None else op(name)(xs, splits)


def prepare(variant, problem):
    """The math as an implementation, in one process over every rank's input: rank 0's result. Only
    on the CPU grid (see the catalog): it moves no data between devices, so it is no floor for a
    collective on GPUs."""

    def bound(numel):
        """The op over every rank's inputs of that size, inputs drawn once, outside any timed call."""
        xs, splits = problem.rank_inputs(numel), problem.splits(numel)
        return lambda: run(variant.op, xs, splits)

    problem.check_outputs = bound(problem.check_numel())()
    full = bound(problem.numel)

    def call():
        return full()[0]

    return call
