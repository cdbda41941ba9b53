# v2a — two commands do all the set-up on a fresh machine:
#   make demo   installs what it needs (Azurite), builds v2a and runs the demo
#   make test   installs what it needs and runs every test, scenario and check
GO      ?= go
SEED    ?= 42
BIN     := bin/v2a
AZURITE := sim/azurite
AZURITE_BIN := $(AZURITE)/node_modules/.bin/azurite-blob
# The scenario make determinism replays: replication with vcsim and Azurite in the loop.
DET_SCENARIO ?= registration

.PHONY: all demo test tools build bench lint determinism mutants rewrite fuzz clean

all: build

## tools: install what the project needs that Go does not (Azurite, pinned by package-lock.json)
tools: $(AZURITE_BIN)

$(AZURITE_BIN): $(AZURITE)/package.json $(AZURITE)/package-lock.json
	@command -v npm >/dev/null || { echo "make tools: npm is needed to install Azurite (apt-get install nodejs npm)"; exit 2; }
	npm ci --prefix $(AZURITE) --no-audit --no-fund --loglevel=error
	@touch $@

## build: build the v2a binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/v2a

## demo: run the demonstration scenario (SEED=N to change the seed)
demo: tools build
	./$(BIN) demo --seed $(SEED)

## test: lint, every Go test (with Azurite and vcsim in the loop), the determinism check and the mutant suite
test: tools lint
	$(GO) test -timeout 20m ./...
	$(MAKE) --no-print-directory determinism
	$(MAKE) --no-print-directory mutants

## mutants: plant each bug of harness/testdata/mutants/*.patch in a copy of the tree and demand that
##          its named check fails in its named scenario (MUTANTS=REGEXP picks some, MUTANT_JOBS=N)
MUTANTS     ?=
MUTANT_JOBS ?= 2
mutants: tools build
	./$(BIN) mutants --jobs $(MUTANT_JOBS) $(if $(MUTANTS),--run '$(MUTANTS)')

## lint: formatting and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './sim/azurite/node_modules/*')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## determinism: the same scenario and seed give the same trace hash; another seed, another hash
determinism: tools build
	@a=$$(./$(BIN) run $(DET_SCENARIO) --seed 7 --trace none --quiet | tail -n 1); \
	 b=$$(./$(BIN) run $(DET_SCENARIO) --seed 7 --trace none --quiet | tail -n 1); \
	 c=$$(./$(BIN) run $(DET_SCENARIO) --seed 8 --trace none --quiet | tail -n 1); \
	 echo "seed 7, run 1: $$a"; echo "seed 7, run 2: $$b"; echo "seed 8:        $$c"; \
	 case "$$a" in trace-sha256:\ [0-9a-f]*) ;; *) echo "determinism: no trace hash"; exit 1;; esac; \
	 [ "$$a" = "$$b" ] || { echo "determinism: FAILED, seed 7 gave two different traces"; exit 1; }; \
	 [ "$$a" != "$$c" ] || { echo "determinism: FAILED, seeds 7 and 8 gave the same trace"; exit 1; }; \
	 echo "determinism: ok"

## bench: benchmarks with allocations (reference measurements print beside each)
bench: tools
	$(GO) test -run '^$$' -bench . -benchmem ./...

## rewrite: regenerate the expected outputs of the scenario scripts (review the diff)
rewrite: tools
	$(GO) test ./scenarios/ -rewrite

## fuzz: run every fuzzer in the tree (each `func FuzzX` in a _test.go file), FUZZTIME each
# The list is found, not kept: a new fuzzer is covered the day it lands. go
# test -fuzz takes one fuzzer per run, hence the loop.
FUZZTIME ?= 30s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' --exclude-dir=node_modules '^func Fuzz' impl sim harness cmd); do \
	  for fz in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "fuzz: $$fz in ./$$(dirname $$f) for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$${fz}\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f)/; \
	  done; \
	done

clean:
	rm -rf bin $(AZURITE)/node_modules
