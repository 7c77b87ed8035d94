"""Which implementation serves a fused block's piece (kernels/block/choice.py): on one GPU the machine's
first choice is kept and later processes prepare that one alone; split blocks keep none. The GPU is
stood in for by letting the CPU remember (`choice.remembers`)."""

import pytest
import torch

from kernels import tuned_choices
from kernels.block import choice
from variantbench.block_shapes import PieceAttentionShape
from variantbench.catalog import family
from variantbench.catalog.attention import make_problem as attention_problem

BLOCK = family("block")


@pytest.fixture
def piece(tmp_path, monkeypatch):
    """llama-3-8b's attention piece at a tiny shape, choices filed under tmp_path, remembered on the CPU,
    and a record of which implementations were prepared."""
    monkeypatch.setattr(tuned_choices, "CHOICES_DIR", tmp_path)
    monkeypatch.setattr(choice, "remembers", lambda device: True)
    variant = BLOCK.variant("llama-3-8b").attention
    config = BLOCK.make_problem(BLOCK.variant("llama-3-8b"), BLOCK.shape("tiny-prefill-b2-s48"), device="cpu",
                                dtype=torch.float32, seed=1).config
    shape = PieceAttentionShape("t", "tiny", 2, 16, 16, "cpu", heads=config.attention)
    problem = attention_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1)
    prepared = []
    for implementation in family("attention").implementations:
        if implementation.fused and hasattr(implementation.load(), "prepare_function"):
            module = implementation.load()
            original = module.prepare_function

            def spy(v, p, original=original, name=implementation.name):
                prepared.append(name)
                return original(v, p)

            monkeypatch.setattr(module, "prepare_function", spy)
    return variant, shape, problem, (problem.q, problem.k, problem.v), prepared


def test_the_first_choice_is_kept_and_later_processes_prepare_only_it(piece):
    variant, shape, problem, inputs, prepared = piece
    _, first = choice.fastest_piece("attention", variant, shape, problem, inputs, False)
    assert first == "sdpa" and prepared == ["sdpa"]  # on a CPU the first that runs
    path = choice.choice_path(family("attention"), variant, shape, inputs[0].device, False, inputs[0].dtype)
    assert tuned_choices.recalled(path) == "sdpa"
    tuned_choices.CHOICES_DIR.joinpath(path.name).write_text('{"config": "flex", "key": {}}')  # as a GPU chose
    prepared.clear()
    _, again = choice.fastest_piece("attention", variant, shape, problem, inputs, False)
    assert again == "flex" and prepared == ["flex"]  # SDPA, ours: not prepared at all


def test_a_choice_is_kept_per_training_mode_and_piece_shape(piece):
    variant, shape, problem, inputs, _ = piece
    fam, device, dtype = family("attention"), inputs[0].device, inputs[0].dtype
    paths = {choice.choice_path(fam, variant, shape, device, False, dtype),
             choice.choice_path(fam, variant, shape, device, True, dtype),
             choice.choice_path(fam, variant, PieceAttentionShape("t", "tiny", 2, 32, 32, "cpu", heads=shape.heads),
                                device, False, dtype),
             choice.choice_path(fam, variant, shape, device, False, torch.bfloat16)}
    assert len(paths) == 4


def test_a_kept_choice_that_no_longer_runs_is_chosen_again(piece, monkeypatch):
    variant, shape, problem, inputs, prepared = piece
    path = choice.choice_path(family("attention"), variant, shape, inputs[0].device, False, inputs[0].dtype)
    tuned_choices.keep(path, "flex", {})
    def refuses(v, p):
        raise RuntimeError("out of shared memory today")

    monkeypatch.setattr(family("attention").implementation("flex").load(), "prepare_function", refuses)
    _, name = choice.fastest_piece("attention", variant, shape, problem, inputs, False)
    assert name == "sdpa" and prepared == ["sdpa"]


def test_split_blocks_keep_no_choice(piece):
    """A split block's ranks time together (agree sums over them): a rank that read a choice another
    rank had just filed would skip a collective the others run."""
    variant, shape, problem, inputs, prepared = piece
    choice.fastest_piece("attention", variant, shape, problem, inputs, False, lambda times: times)
    assert list(tuned_choices.CHOICES_DIR.iterdir()) == []


def test_the_blocks_record_names_the_choice_inside_its_attention_piece():
    from kernels.block.fused import _with_inner_choice

    def piece(backend=None):
        fn = lambda: None  # noqa: E731
        if backend is not None:
            fn.backend = backend
        return fn

    assert _with_inner_choice("sdpa", piece("CUDNN_ATTENTION")) == "sdpa CUDNN_ATTENTION"  # MLA's names the backend
    assert _with_inner_choice("sdpa", piece("sdpa FLASH_ATTENTION")) == "sdpa FLASH_ATTENTION"  # GQA's, prefixed
    assert _with_inner_choice("triton", piece("triton")) == "triton"
    assert _with_inner_choice("fla", piece()) == "fla"


def test_a_kept_choice_depends_on_every_module_beside_the_implementations(tmp_path):
    # the triton MoE layer's expert GEMMs live beside triton_moe.py, the module the catalog names
    (tmp_path / "layer.py").write_text("from . import experts\n")
    (tmp_path / "experts.py").write_text("TILES = 64\n")
    before = tuned_choices.package_hash(tmp_path / "layer.py")
    (tmp_path / "experts.py").write_text("TILES = 128\n")
    assert tuned_choices.package_hash(tmp_path / "layer.py") != before
