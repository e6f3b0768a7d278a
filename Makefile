# The front door. `make run` and `make test` do all set-up on a fresh Debian 12 machine.
BUILD ?= build
JOBS ?= $(shell nproc)
APP ?= examples/showcase
ARGS ?=

.PHONY: all setup configure build run test bench soak fuzz fuzz-build fuzz-smoke clean format

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

configure: setup $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

run: configure
	cmake --build $(BUILD) -j $(JOBS) --target nimbus
	$(BUILD)/nimbus start $(APP) $(ARGS)

# Every test twice: the release-like build, then AddressSanitizer + UBSan (leaks included).
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNIMBUS_SANITIZE=ON
	cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && ctest --output-on-failure -j $(JOBS) --timeout 300
	$(MAKE) fuzz-smoke

bench: build
	@NIMBUS_BENCH=1 bash scripts/setup.sh
	bash bench/run.sh
	bash bench/workers.sh
	bash bench/queue.sh
	bash bench/queue_pg.sh
	bash bench/queue_redis.sh
	bash bench/deploy.sh
	bash bench/tracing.sh
	$(BUILD)/bench/trace_bench
	bash bench/cluster_pg.sh
	bash bench/durable.sh
	bash bench/gateway.sh
	bash bench/mqtt.sh
	$(BUILD)/bench/timer_jitter_bench
	$(BUILD)/bench/stream_bench

# One host under SOAK_MINUTES=30 of mixed load, a worker killed every minute; appends to bench/RESULTS.md.
soak:
	bash bench/soak.sh

# libFuzzer targets for every parser that reads outside input (docs/fuzzing.md), built with
# clang in $(BUILD)-fuzz. `make fuzz` runs each for FUZZ_SECONDS (60); `make test` runs each
# for FUZZ_SMOKE_SECONDS (8) over its committed corpus. One fuzzer at a time.
FUZZ_BUILD ?= $(BUILD)-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 8
FUZZ_TARGETS ?= cron frame manifest route blob_path mqtt_topic admin stream http

$(FUZZ_BUILD)/build.ninja:
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNIMBUS_FUZZ=ON -DBUILD_TESTING=OFF \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++

fuzz-build: setup $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets

fuzz: fuzz-build
	bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	FUZZ_SEED=1 bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD)
