# The front door. `make run` and `make test` do all set-up on a fresh Debian 12 machine.
BUILD ?= build
JOBS ?= $(shell nproc)
APP ?= examples/showcase
ARGS ?=

.PHONY: all setup configure build run test bench soak fuzz clean format

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

bench: build
	@NIMBUS_BENCH=1 bash scripts/setup.sh
	bash bench/run.sh
	bash bench/workers.sh
	bash bench/queue.sh
	bash bench/mqtt.sh
	$(BUILD)/bench/timer_jitter_bench
	$(BUILD)/bench/stream_bench

# One host under SOAK_MINUTES=30 of mixed load, a worker killed every minute; appends to bench/RESULTS.md.
soak:
	bash bench/soak.sh

# Fuzz the cron parser with libFuzzer (needs clang: apt-get install clang). FUZZ_SECONDS=60.
FUZZ_SECONDS ?= 60
fuzz:
	@mkdir -p $(BUILD)/fuzz
	clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -DNIMBUS_FUZZ_MAIN -Isrc \
	  fuzz/cron_fuzz.cpp src/core/cron.cpp -o $(BUILD)/fuzz/cron_fuzz
	$(BUILD)/fuzz/cron_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=128

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD)
