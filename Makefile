# `make demo` and `make test` work on a fresh clone: each target sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_DIR   := tests/interop
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
ISOLATED   := scripts/isolated

.PHONY: demo test lint bench soak fuzz venv node mosquitto chromium nftables clean

demo: $(PY_STAMP)
	$(ISOLATED) $(BIN)/peermesh demo

# pytest exits 5 when it collects nothing; that is not a failure of the suite's code.
test: $(PY_STAMP) $(NODE_STAMP) mosquitto chromium nftables
	$(ISOLATED) $(BIN)/pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(PY_STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(PY_STAMP) $(NODE_STAMP) mosquitto nftables
	$(ISOLATED) $(BIN)/python -m bench $(BENCH_ARGS)

# 500 join/leave cycles, then a 10-peer room for 10 minutes: leaked tasks, fds, RSS slope
# and connections left (bench/soak.py). About 15 minutes; SOAK_ARGS="--cycles 50 --minutes 1".
soak: $(PY_STAMP)
	$(ISOLATED) $(BIN)/python -m bench.soak $(SOAK_ARGS)

# Every fuzz target (tests/fuzz) for FUZZ_RUNS inputs, one after another; a table at the end.
FUZZ_RUNS ?= 1000000
fuzz: $(PY_STAMP)
	$(ISOLATED) $(BIN)/python -m tests.fuzz all --runs $(FUZZ_RUNS)

venv: $(PY_STAMP)
node: $(NODE_STAMP)

# The MQTT tests run a real mosquitto broker; install it when missing (Debian/Ubuntu).
mosquitto:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto)

# The browser interop tests run Trystero in Debian's Chromium (tests/interop/browserpeer.mjs).
chromium:
	@command -v chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The fault tests and the loss benchmark drop UDP with nftables, inside their own network
# namespace (tests/nft.py).
nftables:
	@command -v nft >/dev/null || [ -x /usr/sbin/nft ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables)

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	touch $@

# --ignore-scripts: bittorrent-tracker pulls in node-datachannel, whose install script
# downloads a binary (impossible offline); its server never loads it. @roamhq/wrtc ships
# its binary inside a registry package and needs no script.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
