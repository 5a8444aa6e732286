/*
 * of.h — memory-mapped registers for amd64 (Linux), C and assembly interface.
 *
 * After map_registers() returns 0, page 0 of the process (addresses 0..4096) behaves as a
 * byte-addressable image of the *calling thread's* registers: every thread sees its own
 * registers at the same addresses. Any instruction whose memory operand lands in the map
 * faults, and of's SIGSEGV handler emulates it against the interrupted thread's registers.
 *
 * Semantics (SPEC §2): little-endian; an access of any size (1, 2, 4, 8, 16, 32 bytes) at any
 * offset works on exactly the bytes it covers (memory semantics: a 4-byte store at OF_RAX keeps
 * the high half of rax). Reads of OF_RIP give the address of the next instruction; a store to
 * it is a jump. OF_RFLAGS reads give what pushfq would push; stores change only
 * CF PF AF ZF SF DF OF. fs/gs bases are read only. Bytes 0xa0..0x100 and 0x204..0x1000 are not
 * registers: touching them kills the process with SIGSEGV (after one diagnostic line).
 *
 * map_registers() is idempotent and thread-safe; call it once from any thread (each thread
 * that calls it also gets a 64 KiB alternate signal stack if it had none or a smaller one).
 *
 * Link (after `make install`):  cc prog.c $(pkg-config --cflags --libs of)          (libof.so)
 *   or statically:  cc prog.c $(pkg-config --static --define-variable=of_lib=:libof.a --cflags --libs of)
 * From the source tree: cc prog.c -Iinclude target/release/libof.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 */
#ifndef OF_H
#define OF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Installs of's SIGSEGV/SIGBUS handler. Returns 0 on success, -1 on failure (after printing
 * the reason to stderr). The original crate's unprefixed name, kept for assembly users. */
int map_registers(void);

/* The same as map_registers(), under a prefixed name. */
int of_map_registers(void);

/* Site patching (off by default; OF_PATCH=1 in the environment at installation turns it on):
 * a page-0 instruction that keeps faulting at one address is rewritten into a jump to
 * generated code doing the same to the real registers, without a fault. on != 0 turns it on,
 * 0 off; returns 1 if patching is on afterwards, else 0. Call after map_registers(). */
int of_set_patching(int on);

/* Tracing: one line per emulated instruction (thread id, rip, bytes, the instruction, the
 * registers and flags it changed, fault or run-ahead) to file descriptor fd (2: stderr), or
 * off for fd < 0. OF_TRACE=1 (stderr) or OF_TRACE=FILE (appended) does it at installation. */
void of_set_trace_fd(int fd);

/* The fault path's counters since installation (OF_STATS=1 prints them at exit). */
struct of_site {
    uint64_t rip;   /* the faulting instruction (0: unused entry) */
    uint64_t count; /* faults there */
};
struct of_stats {
    uint64_t faults;                /* SIGSEGV/SIGBUS signals the handler saw */
    uint64_t faults_emulated;       /* faults whose instruction was emulated */
    uint64_t runahead_instructions; /* further instructions emulated by run-ahead */
    uint64_t passed_on;             /* faults passed on to the previous handler */
    uint64_t exceptions;            /* #DE, #GP, #XM, #PF raised as the CPU would */
    uint64_t refused;               /* map accesses refused (the diagnostic, then SIGSEGV) */
    uint64_t icache_hits;           /* decoded-instruction cache hits */
    uint64_t icache_misses;         /* and misses */
    uint64_t patched;               /* sites patched (site patching) */
    uint64_t patch_refused;         /* sites site patching left on the fault path */
    struct of_site sites[8];        /* the busiest fault sites, busiest first */
};
void of_stats(struct of_stats *out);

/* Trapped regions (SPEC §7): len bytes with no access rights whose every access is emulated
 * and served by a device: read(ctx, offset, size, out) fills out[0..size], write(ctx, offset,
 * size, data) takes data[0..size]; offset is in bytes from the region's start, size is the
 * access's (1, 2, 4, 8, 16, 32 or 64; a string instruction's element size). One call per
 * operand access: a read-modify-write is one read then one write; an access straddling two of
 * the device's registers is one access of its size at its offset. Every instruction touching
 * a region holds one lock (the bus) for all its accesses: a locked one is never interleaved
 * with another access, and threads are served one instruction at a time.
 *
 * of_region_create: a region at addr (page-aligned and free; NULL: anywhere) of len bytes,
 * served by *device (copied) on a server thread of its own (the callbacks may allocate, lock,
 * print; the faulting thread waits), or, with OF_REGION_IN_HANDLER in flags, in the fault
 * handler itself (faster; callbacks must then be async-signal-safe). Returns NULL with errno
 * set on failure (EINVAL, EEXIST: addr taken, ENOMEM: 64 regions exist, or mmap's). The
 * callbacks must not access a region themselves. of_region_destroy waits until no instruction
 * uses the region, stops its server and unmaps it. Calls map_registers() if needed. */
struct of_device {
    void (*read)(void *ctx, uint64_t offset, uint32_t size, uint8_t *out);
    void (*write)(void *ctx, uint64_t offset, uint32_t size, const uint8_t *data);
    void *ctx;
};
#define OF_REGION_IN_HANDLER 1
struct of_region;
struct of_region *of_region_create(void *addr, size_t len, const struct of_device *device,
                                   int flags);
void *of_region_base(const struct of_region *region);
void of_region_destroy(struct of_region *region);

/* Byte offsets of the registers in page 0. */
#define OF_RAX 0x00
#define OF_RCX 0x08
#define OF_RDX 0x10
#define OF_RBX 0x18
#define OF_RSP 0x20
#define OF_RBP 0x28
#define OF_RSI 0x30
#define OF_RDI 0x38
#define OF_R8 0x40
#define OF_R9 0x48
#define OF_R10 0x50
#define OF_R11 0x58
#define OF_R12 0x60
#define OF_R13 0x68
#define OF_R14 0x70
#define OF_R15 0x78
#define OF_RIP 0x80
#define OF_RFLAGS 0x88
#define OF_FS_BASE 0x90 /* read only */
#define OF_GS_BASE 0x98 /* read only */
#define OF_XMM(n) (0x100 + 16 * (n))
#define OF_MXCSR 0x200
/* General-purpose register number n (x86 encoding order: 0 = rax ... 15 = r15). */
#define OF_GPR(n) (8 * (n))

#ifdef __cplusplus
}
#endif

#endif /* OF_H */
