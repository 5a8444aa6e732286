# C and assembly front end for of. `make joy` builds libof.a and runs examples/example.s.
CARGO ?= cargo
CC ?= cc
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
LIBOF := $(CARGO_TARGET_DIR)/release/libof.a
# What the Rust standard library inside libof.a needs (cargo rustc -- --print native-static-libs).
LDLIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
BUILD := $(CARGO_TARGET_DIR)/c

.PHONY: joy libof clean hello c-tests

libof:
	$(CARGO) build --release --workspace --lib

$(BUILD):
	mkdir -p $(BUILD)

joy: libof | $(BUILD)
	$(CC) -o $(BUILD)/example examples/example.s $(LIBOF) $(LDLIBS)
	$(BUILD)/example

hello: libof | $(BUILD)
	$(CC) -O2 -Wall -Iinclude -fno-delete-null-pointer-checks -o $(BUILD)/hello examples/hello.c $(LIBOF) $(LDLIBS)
	$(BUILD)/hello

clean:
	rm -rf $(BUILD)

# C programs under examples/c, each at several optimisation levels; any failure fails the target.
C_PROGRAMS := $(wildcard examples/c/*.c)
# r12..r15 belong to the programs' page-0 accesses, never to the compiler (pointers.c).
C_FIXED := -ffixed-r12 -ffixed-r13 -ffixed-r14 -ffixed-r15 -Wno-array-bounds
OPT_LEVELS := -O0 -O1 -O2 -O3 -Os

c-tests: libof | $(BUILD)
	@set -e; for src in $(C_PROGRAMS); do \
	  name=$$(basename $$src .c); \
	  for opt in $(OPT_LEVELS); do \
	    $(CC) $$opt -Wall -fno-builtin -fno-delete-null-pointer-checks $(C_FIXED) -Iinclude -pthread \
	      -o $(BUILD)/$$name$$opt $$src $(LIBOF) $(LDLIBS); \
	    echo "== $$name $$opt"; $(BUILD)/$$name$$opt; \
	  done; \
	done
