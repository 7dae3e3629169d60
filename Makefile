# relapse — the commands a developer and CI use. `make test` is the README's test command.

CARGO ?= cargo

.PHONY: all build test crash lint deploy-check fmt bench fuzz demo flg clean

all: build

build:
	$(CARGO) build --release

# Every test: unit tests (measurement under paused time), the injector and probe tests against
# real processes and sockets, and the end-to-end tests of the CLI against the demo target.
test:
	$(CARGO) test --workspace

# The crash test's long run: kill -9 mid-fault, 200 rounds per fault kind (make test runs 5).
CRASH_ROUNDS ?= 200
crash:
	RELAPSE_CRASH_ROUNDS=$(CRASH_ROUNDS) $(CARGO) test --test crash -- --nocapture

# The Kubernetes manifests, validated offline against the Kubernetes schema (needs kubectl and
# PyPI's kubernetes-validate; .ci/run installs both).
deploy-check:
	deploy/kubernetes/check

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --bench measure
	$(CARGO) bench -p relapse-fs --bench fs

# The parsers under libFuzzer, FUZZ_SECONDS each (needs `cargo install cargo-fuzz`): the
# scenario format, and the db_proxy's PostgreSQL and MySQL framing. cargo-fuzz wants nightly
# flags; RUSTC_BOOTSTRAP lets the machine's stable toolchain take them.
FUZZ_SECONDS ?= 60
fuzz:
	mkdir -p fuzz/corpus/scenario fuzz/corpus/pg_framing fuzz/corpus/mysql_framing
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run scenario fuzz/corpus/scenario fuzz/seeds -- -max_total_time=$(FUZZ_SECONDS)
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run pg_framing fuzz/corpus/pg_framing fuzz/seeds-pg -- -max_total_time=$(FUZZ_SECONDS)
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run mysql_framing fuzz/corpus/mysql_framing fuzz/seeds-mysql -- -max_total_time=$(FUZZ_SECONDS)

# The embedded demo target, standalone, until Ctrl-C.
demo:
	$(CARGO) run --release -- demo

# The README's first command: the FLG scenario end to end against the demo target.
flg:
	$(CARGO) run --release -- run scenarios/flg-healthcheck-hang.toml

clean:
	$(CARGO) clean
