/*
 * The unicorn side of the trapped-region benchmark (examples/region_bench.rs): runs the same
 * machine code as the native and `of` runs — bench_fixed or bench_pointer, copied byte for byte
 * from the shared object built from loop.c to the same address inside unicorn — with the same
 * device, whose callbacks are C functions of that object registered with uc_mmio_map.
 *
 *   unicorn <loop.so> fixed|pointer <iterations> <dev_base> [plain]
 *
 * With "plain" the device's page is ordinary unicorn memory instead (the registers' bytes and
 * one read and one write per iteration are reported as the native run reports them): unicorn's
 * own cost of the loop, to which the callbacks add theirs.
 * Prints one line: "<ns per iteration> <result> <dev word 0> <dev word 1> <reads> <writes>
 * <memory word 0..3>", all but the first in hex, for the caller to compare with its own runs.
 * Before the timed runs, one run of 1,000 iterations fills unicorn's translation cache (then the
 * device and memory are reset), as the native and `of` runs are timed warm. The time is the
 * median of five runs of <iterations> each.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unicorn/unicorn.h>

#define PAGE 4096ull
#define MEM 0x20000000ull   /* the four words of ordinary memory */
#define STACK 0x30000000ull /* 64 KiB of stack */
#define STOP 0x40000000ull  /* the return address: emulation stops there */

static void check(uc_err e, const char *what) {
    if (e != UC_ERR_OK) {
        fprintf(stderr, "unicorn: %s: %s\n", what, uc_strerror(e));
        exit(2);
    }
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static const uint64_t MEM_INIT[4] = {1, 2, 3, 4};

/* One run of n iterations from the initial state; returns rax. */
static uint64_t run(uc_engine *uc, uint64_t entry, int pointer, uint64_t dev_base, uint64_t n,
                    void (*reset)(void), int plain) {
    reset();
    if (plain) {
        uint8_t regs[16] = {0};
        regs[4] = 1; /* status: ready, as bench_device_reset sets it */
        check(uc_mem_write(uc, dev_base, regs, sizeof regs), "reset the device page");
    }
    check(uc_mem_write(uc, MEM, MEM_INIT, sizeof MEM_INIT), "write memory");
    uint64_t rsp = STACK + 0x10000 - 64, ret = STOP;
    check(uc_mem_write(uc, rsp, &ret, 8), "push the return address");
    uint64_t mem = MEM;
    check(uc_reg_write(uc, UC_X86_REG_RSP, &rsp), "rsp");
    if (pointer) {
        check(uc_reg_write(uc, UC_X86_REG_RDI, &dev_base), "rdi");
        check(uc_reg_write(uc, UC_X86_REG_RSI, &mem), "rsi");
        check(uc_reg_write(uc, UC_X86_REG_RDX, &n), "rdx");
    } else {
        check(uc_reg_write(uc, UC_X86_REG_RDI, &mem), "rdi");
        check(uc_reg_write(uc, UC_X86_REG_RSI, &n), "rsi");
    }
    check(uc_emu_start(uc, entry, STOP, 0, 0), "emu_start");
    uint64_t rax;
    check(uc_reg_read(uc, UC_X86_REG_RAX, &rax), "rax");
    return rax;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && strcmp(argv[5], "plain") == 0)) {
        fprintf(stderr, "usage: %s <loop.so> fixed|pointer <iterations> <dev_base> [plain]\n",
                argv[0]);
        return 2;
    }
    int plain = argc == 6;
    int pointer = strcmp(argv[2], "pointer") == 0;
    uint64_t n = strtoull(argv[3], NULL, 0), dev_base = strtoull(argv[4], NULL, 0);
    void *so = dlopen(argv[1], RTLD_NOW);
    if (!so) {
        fprintf(stderr, "unicorn: %s\n", dlerror());
        return 2;
    }
    void *fn = dlsym(so, pointer ? "bench_pointer" : "bench_fixed");
    void *rd = dlsym(so, "uc_dev_read"), *wr = dlsym(so, "uc_dev_write");
    void (*reset)(void) = (void (*)(void))dlsym(so, "bench_device_reset");
    void (*state)(uint64_t *) = (void (*)(uint64_t *))dlsym(so, "bench_device_state");
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!fn || !rd || !wr || !reset || !state ||
        !dladdr1(fn, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || !sym->st_size) {
        fprintf(stderr, "unicorn: the loop's symbols are missing\n");
        return 2;
    }
    uint64_t entry = (uint64_t)(uintptr_t)fn;
    uint64_t code = entry & ~(PAGE - 1);
    uint64_t code_len = ((entry + sym->st_size + PAGE - 1) & ~(PAGE - 1)) - code;

    uc_engine *uc;
    check(uc_open(UC_ARCH_X86, UC_MODE_64, &uc), "open");
    /* The loop's own pages, at their own address, with their own bytes. */
    check(uc_mem_map(uc, code, code_len, UC_PROT_READ | UC_PROT_EXEC), "map code");
    check(uc_mem_write(uc, code, (const void *)(uintptr_t)code, code_len), "copy code");
    check(uc_mem_map(uc, MEM, PAGE, UC_PROT_READ | UC_PROT_WRITE), "map memory");
    check(uc_mem_map(uc, STACK, 0x10000, UC_PROT_READ | UC_PROT_WRITE), "map stack");
    check(uc_mem_map(uc, STOP, PAGE, UC_PROT_ALL), "map the stop page");
    if (plain) {
        check(uc_mem_map(uc, dev_base, PAGE, UC_PROT_READ | UC_PROT_WRITE), "map the device page");
    } else {
        check(uc_mmio_map(uc, dev_base, PAGE, (uc_cb_mmio_read_t)rd, NULL,
                          (uc_cb_mmio_write_t)wr, NULL),
              "mmio_map");
    }

    run(uc, entry, pointer, dev_base, 1000, reset, plain); /* warm the translation cache */
    /* The median of five timed runs (each from the initial state), as the Rust side does. */
    double times[5];
    uint64_t result = 0;
    for (int k = 0; k < 5; k++) {
        double t0 = now_ns();
        result = run(uc, entry, pointer, dev_base, n, reset, plain);
        times[k] = now_ns() - t0;
    }
    for (int i = 1; i < 5; i++)
        for (int j = i; j > 0 && times[j - 1] > times[j]; j--) {
            double t = times[j];
            times[j] = times[j - 1];
            times[j - 1] = t;
        }
    uint64_t dev[4], mem[4];
    state(dev);
    if (plain) {
        check(uc_mem_read(uc, dev_base, dev, 16), "read the device page");
        dev[2] = dev[3] = n;
    }
    check(uc_mem_read(uc, MEM, mem, sizeof mem), "read memory");
    printf("%.3f %" PRIx64 " %" PRIx64 " %" PRIx64 " %" PRIx64 " %" PRIx64 " %" PRIx64
           " %" PRIx64 " %" PRIx64 " %" PRIx64 "\n",
           times[2] / (double)n, result, dev[0], dev[1], dev[2], dev[3], mem[0], mem[1], mem[2],
           mem[3]);
    uc_close(uc);
    return 0;
}
