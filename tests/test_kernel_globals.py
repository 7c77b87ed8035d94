"""Our Triton kernels reach no plain Python global the GPU compiler refuses. The interpreter (every
CPU test) reads any global; the compiler accepts only `tl.constexpr` ones and raises NameError at the
first launch on a GPU, as the backward's LOG2E did on the H200 (2026-11-28). Checked on the source."""

import ast
import importlib
import inspect
import pkgutil
import textwrap

import pytest
import triton.language as tl

import kernels

PLAIN = (bool, int, float, str)


def kernel_modules():
    for info in pkgutil.walk_packages(kernels.__path__, "kernels."):
        if not info.ispkg:
            yield info.name


def jitted(module):
    """(name, Python function) of each Triton-jitted function the module defines: a JITFunction, or
    under TRITON_INTERPRET=1 an InterpretedFunction, maybe wrapped by an Autotuner; each keeps `.fn`."""
    for name, value in vars(module).items():
        fn = value
        while not inspect.isfunction(fn) and hasattr(fn, "fn"):
            fn = fn.fn
        if fn is not value and inspect.isfunction(fn) and type(value).__module__.startswith("triton") \
                and fn.__module__ == module.__name__:
            yield name, fn


def plain_globals_read(fn, module):
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    local = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    local |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return sorted(name for name in read - local
                  if isinstance(vars(module).get(name), PLAIN) and not isinstance(vars(module)[name], tl.constexpr))


def test_the_walk_finds_our_kernels():
    found = {f"{m}.{n}" for m in kernel_modules() for n, _ in jitted(importlib.import_module(m))}
    assert "kernels.attention.triton_backward_kernels._dq_kernel" in found
    assert len(found) > 10


@pytest.mark.parametrize("module_name", list(kernel_modules()))
def test_jitted_functions_read_only_constexpr_globals(module_name):
    module = importlib.import_module(module_name)
    bad = {name: plain_globals_read(fn, module) for name, fn in jitted(module)}
    assert not {k: v for k, v in bad.items() if v}, f"{module_name}: make these tl.constexpr or pass them in: {bad}"


def test_the_check_sees_a_plain_global(tmp_path, monkeypatch):
    (tmp_path / "plain_global_kernel.py").write_text(textwrap.dedent('''
        import triton
        import triton.language as tl
        SCALE = 2.0
        @triton.jit
        def scaled(X):
            x = tl.load(X)
            tl.store(X, x * SCALE)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("plain_global_kernel")
    assert [plain_globals_read(fn, module) for _, fn in jitted(module)] == [["SCALE"]]


def test_the_compiled_only_paths_are_left_to_compiled_kernels():
    """tanh.approx.f32 is inline PTX and the interpreter sums 16-bit dots wrongly: under TRITON_INTERPRET=1
    (every CPU test) our kernels take their portable paths, and the switch is a constexpr the compiler
    accepts."""
    import os

    from kernels import interpreter

    assert isinstance(interpreter.COMPILED, tl.constexpr)
    assert bool(interpreter.COMPILED) == (os.environ.get("TRITON_INTERPRET", "0") != "1")
