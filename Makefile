# C and assembly front end for of.
#
#   make joy / hello / c-tests    build libof.a and run examples/example.s, hello.c, examples/c
#   make install PREFIX=/opt/of   install libof.a, libof.so, of.h and lib/pkgconfig/of.pc
#   make uninstall PREFIX=…       remove them again (and the directories that leaves empty)
#
# CARGO_TARGET_DIR is honoured; DESTDIR is prepended to every installed path (staging).
SHELL := /bin/bash
CARGO ?= cargo
CC ?= cc
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
LIBOF := $(CARGO_TARGET_DIR)/release/libof.a
LIBOF_SO := $(CARGO_TARGET_DIR)/release/libof.so
BUILD := $(CARGO_TARGET_DIR)/c
# The libraries the Rust standard library inside libof.a needs, as rustc reports them for this
# very build (`--print native-static-libs`; cargo replays the note when the build is fresh).
# Read when a recipe that uses it runs, i.e. after `libof` wrote the file.
NATIVE_STATIC_LIBS := $(BUILD)/native-static-libs
LDLIBS = $(shell cat $(NATIVE_STATIC_LIBS) 2>/dev/null)

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# The package version (`…#of@0.2.0`), asked when of.pc is written.
VERSION = $(shell $(CARGO) pkgid -p of | sed 's/.*[@#]//')
# of.pc names its directories relative to ${prefix} where they lie under it (so that
# `pkg-config --define-prefix` can relocate an installed tree).
PC_LIBDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCLUDEDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))

.PHONY: joy libof clean hello c-tests install uninstall

# libof.a (staticlib) and libof.so (cdylib), and rustc's list of native libraries. One shell, with
# files of its own until the final rename, so that concurrent makes (tests/c_abi.rs) do not mix
# their logs; the status is cargo's (pipefail), its output shown as it comes.
RUSTC_ARGS := rustc --release --lib -p of --crate-type staticlib,cdylib -- --print native-static-libs
libof: | $(BUILD)
	@set -eo pipefail; log=$(BUILD)/cargo-rustc.$$$$; trap 'rm -f $$log $$log.libs' EXIT; \
	echo "$(CARGO) $(RUSTC_ARGS)"; \
	$(CARGO) $(RUSTC_ARGS) 2>&1 | tee $$log; \
	sed -n 's/^note: native-static-libs: //p' $$log > $$log.libs; \
	test -s $$log.libs || { echo "make: rustc printed no native-static-libs note" >&2; exit 1; }; \
	mv $$log.libs $(NATIVE_STATIC_LIBS)

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
	    echo "== $$name $$opt, site patching on (OF_PATCH=1)"; OF_PATCH=1 $(BUILD)/$$name$$opt; \
	  done; \
	done

# of.pc from of.pc.in: paths, version, and Libs.private = the native libraries above.
$(BUILD)/of.pc: of.pc.in libof | $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(PC_LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(LDLIBS)|g' of.pc.in > $@

install: libof $(BUILD)/of.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(LIBOF) $(DESTDIR)$(LIBDIR)/libof.a
	install -m 755 $(LIBOF_SO) $(DESTDIR)$(LIBDIR)/libof.so
	install -m 644 include/of.h $(DESTDIR)$(INCLUDEDIR)/of.h
	install -m 644 $(BUILD)/of.pc $(DESTDIR)$(PKGCONFIGDIR)/of.pc

# Removes the four files, then each of the three directories if that left it empty (rmdir
# never removes a directory that still holds something).
uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libof.a $(DESTDIR)$(LIBDIR)/libof.so \
	  $(DESTDIR)$(INCLUDEDIR)/of.h $(DESTDIR)$(PKGCONFIGDIR)/of.pc
	@for d in $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR); do \
	  if [ -d "$$d" ] && rmdir "$$d" 2>/dev/null; then echo "rmdir $$d"; fi; \
	done
