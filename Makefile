# One place for the install steps, so the README, CI and a fresh machine do the same thing.
PYTHON ?= python3

# torch first, pinned: with no torch installed a bare requirement pulls the newest CUDA build
# (several GB); 2.13.0 is the CPU build these machines carry. GPU runners keep their own torch.
setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[triton,test$$(command -v nvidia-smi >/dev/null && echo ,gpu,peers)]"

quick: setup
	variantbench run --quick

# Debian's Chromium for the report's browser tests (tests/test_report.py); they skip, saying so, where
# it cannot be installed.
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
	  || echo "chromium could not be installed: the browser tests will skip"

test: setup browser
	TRITON_INTERPRET=1 VARIANTBENCH_DEVICE=cpu $(PYTHON) -m pytest -q -p no:cacheprovider

.PHONY: setup quick browser test
