# One place for the install steps, so the README, CI and a fresh machine do the same thing.
PYTHON ?= python3

# torch first, pinned: with no torch installed a bare requirement pulls the newest CUDA build
# (several GB); 2.13.0 is the CPU build these machines carry. GPU runners keep their own torch.
setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[triton,test]"

quick: setup
	variantbench run --quick

test: setup
	TRITON_INTERPRET=1 VARIANTBENCH_DEVICE=cpu $(PYTHON) -m pytest -q -p no:cacheprovider

.PHONY: setup quick test
