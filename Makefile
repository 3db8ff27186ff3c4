# The two commands: `make demo` and `make test`. Everything goes through CMake in build/.
BUILD ?= build
JOBS ?= 2
SEEDS ?= 5000

.PHONY: all deps build install quiet-build test demo sim-long soak-load restart-soak chaos bench bench-persist bench-kv bench-trace bench-peers bench-http bench-tls asan tsan clean format

# cmake --build runs make inside this make: without this, every nested make announces each
# directory it enters and leaves.
MAKEFLAGS += --no-print-directory

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j 1

# The programs, the client library (shared and static), its headers, squall-client.pc, the CMake
# package and the Python binding under PREFIX (default /usr/local).
PREFIX ?= /usr/local
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

# The build for the demo shows only what went wrong: its whole output goes to $(BUILD)/build.log,
# which is printed if the build fails.
quiet-build: deps
	@mkdir -p $(BUILD)
	@echo "building squall in $(BUILD)/ (output in $(BUILD)/build.log)"
	@{ cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo && \
	   cmake --build $(BUILD) -j $(JOBS); } >$(BUILD)/build.log 2>&1 || \
	  { cat $(BUILD)/build.log; echo "the build failed: see above ($(BUILD)/build.log)"; exit 1; }
	@grep -i 'warning' $(BUILD)/build.log || true

demo: quiet-build
	@scripts/demo $(BUILD)

# Many more simulation seeds than `make test` runs.
sim-long: build
	@$(BUILD)/test_sim_mcast --seeds $(SEEDS)
	@$(BUILD)/test_sim_view --seeds $(SEEDS)
	@$(BUILD)/test_sim_group --seeds $(SEEDS)

bench: build
	@$(BUILD)/bench/mcast-bench --squalld $(BUILD)/squalld

# Persistent against atomic delivery and the disk's fdatasync (logs under DATA_DIR, default /tmp).
bench-persist: build
	@$(BUILD)/bench/mcast-bench --persist --data-dir $(or $(DATA_DIR),/tmp) --squalld $(BUILD)/squalld

# Key-value put, get and conditional put on three local members, against a loopback TCP echo
# (THREADS, SECONDS_PER_CASE: see bench/kv-bench.sh).
bench-kv: build
	@BUILD_DIR=$(BUILD) bench/kv-bench.sh

# Where the time of one key-value call goes, stage by stage (SECONDS_PER_CASE: see kv-bench.sh).
bench-trace: build
	@BUILD_DIR=$(BUILD) bench/kv-bench.sh --trace

# The same load against squall, etcd, ZooKeeper and Redis, 3 members each on 127.0.0.1 (installs
# the three and their client libraries first; SYSTEMS, CASES, CLIENTS, SIZES, SECONDS_PER_CASE:
# see bench/peers/run.sh). peers-bench is built only when those libraries are there.
# What TLS costs on the client port: kv-bench on a plain and a TLS group, alternating
# (SECONDS_PER_CASE, ROUNDS, CASES: see bench/tls-bench.sh).
bench-tls: build
	@BUILD_DIR=$(BUILD) bench/tls-bench.sh

# HTTP get and put against the binary protocol, 1 client, in the same run (needs libcurl).
bench-http:
	@scripts/install-deps --bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@BUILD_DIR=$(BUILD) bench/http-bench.sh

bench-peers:
	@scripts/install-deps --bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@BUILD_DIR=$(BUILD) bench/peers/run.sh

# The stability test with a long load phase (LOAD_SECONDS, default 600) beside CPU and disk hogs:
# no view change and no failed operation, then the stalls and the rejoin (not in test).
soak-load: build
	@LOAD_SECONDS=$(or $(LOAD_SECONDS),600) tests/integration/stability.sh $(abspath $(BUILD))/squalld \
	  $(abspath $(BUILD))/squall $(abspath $(BUILD))/kv_check $(abspath $(BUILD))/bench/kv-bench

# Whole-group crashes and restarts from a majority, ROUNDS times, with a writer (not in test).
restart-soak: build
	@BUILD_DIR=$(BUILD) tests/soak/restart-soak.sh $(or $(ROUNDS),10) $(SEED)

# The fault-injection suite (tests/chaos): MEMBERS (3 or 5) real members in network namespaces,
# a nemesis for DURATION seconds (default 600) from SEED (random by default), then the checks.
# Needs root. A short run of it is in `make test` (integration/chaos).
chaos: build
	@python3 tests/chaos/chaos.py --bin $(abspath $(BUILD)) --members $(or $(MEMBERS),3) \
	  --duration $(or $(DURATION),600) $(if $(SEED),--seed $(SEED)) $(if $(OUT),--out $(OUT))

# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSQ_SANITIZE=asan+ubsan >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && SQ_TEST_HEARTBEAT_MS=2000 ctest --output-on-failure -j 1

# The test suite under ThreadSanitizer (see tests/tsan.supp for the one suppression and why).
tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DSQ_SANITIZE=tsan >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	@cd build-tsan && SQ_TEST_HEARTBEAT_MS=3000 SQ_TEST_LARGE_BYTES=8388608 TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=1" ctest --output-on-failure -j 1

format:
	@clang-format -i include/*.h src/*.[ch] src/*/*.[ch] src/transport/*/*.[ch] tests/*/*.c bench/*.c bench/*/*.c

clean:
	rm -rf $(BUILD) build-asan build-tsan
