/* memcpy_snapshot.c — the C library's own memcpy/memset/memcmp on map bytes.
 *
 * glibc picks an AVX2 memcpy here (vmovdqu ymm loads), so copying 0x90 bytes from address 0
 * snapshots rax..r15, rip and rflags into a buffer (0xa0 bytes: the fs/gs bases too; both are
 * done). What the snapshot must
 * equal is what the registers held when glibc's load instructions ran, inside memcpy:
 *   - rbx, rbp, r12..r15: callee-saved (System V ABI), so exactly the values put there just
 *     before the call;
 *   - rsp: the rsp at the call minus 8 (the return address; memcpy is a leaf that pushes
 *     nothing);
 *   - rip: an address inside the C library (the instruction after the load that read the rip
 *     slot) — the program prints the 16 bytes before it so the Rust test (tests/vector_c.rs)
 *     can check it is a vector load;
 *   - fs base: the thread pointer (arch_prctl(ARCH_GET_FS)); gs base: 0;
 *   - rflags: bit 1 and IF set, no system flags (RF, VM, ...).
 * memcpy((void *)0x68, &x, 8) sets r13, memcpy((void *)8, &x, 8) sets rcx, 16 bytes to 0 set
 * rax:rcx; memset on r12's bytes; memcmp of r12..r15 against a
 * buffer (glibc's AVX2 memcmp compares with vpcmpeqb ymm, [mem]).
 *
 * Build: make c-tests (compiled with -fno-builtin so the calls really go to glibc), or
 * tests/vector_c.rs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "of.h"

/* Everything the asm blocks touch is a global addressed rip-relative, so pushes inside the
 * blocks cannot shift it, and the calls go through pointers the compiler cannot elide. */
void *(*volatile g_copy)(void *, const void *, size_t) = memcpy;
void *(*volatile g_fill)(void *, int, size_t) = memset;
int (*volatile g_compare)(const void *, const void *, size_t) = memcmp;
uint64_t g_want[6] = {0x1111111111111111ULL, 0x1212121212121212ULL, 0x1313131313131313ULL,
                      0x1414141414141414ULL, 0x1515151515151515ULL, 0x1616161616161616ULL};
uint64_t g_snap[20];
uint64_t g_rsp_at_call;
uint64_t g_len; /* bytes copied from address 0: 0x90 (rax .. rflags) or 0xa0 (.. gs base) */
uint64_t g_x = 0x0123456789abcdefULL, g_r13_after, g_r12_after;
uint64_t g_pair[2] = {0x0a0b0c0d0e0f1011ULL, 0x2122232425262728ULL}, g_rcx_after, g_rax_after;
uint64_t g_expect[4] = {0x2121212121212121ULL, 0x2222222222222222ULL, 0x2323232323232323ULL,
                        0x2424242424242424ULL};
int g_equal = -1, g_differ = -1;

#define CLOBBERS                                                                              \
    "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",    \
        "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

/* Known values in rbx, rbp and r12..r15, then memcpy(g_snap, 0, g_len), nothing between;
 * checks the snapshot. Returns 1 if it matches. */
static int snapshot_by_memcpy(uint64_t len) {
    memset(g_snap, 0, sizeof g_snap);
    g_len = len;
    __asm__ volatile(
        "push %%rbx\n\t"                       /* rbx and rbp are callee-saved: keep the caller's */
        "push %%rbp\n\t"
        "movq g_want+0(%%rip), %%rbx\n\t"
        "movq g_want+8(%%rip), %%r12\n\t"
        "movq g_want+16(%%rip), %%r13\n\t"
        "movq g_want+24(%%rip), %%r14\n\t"
        "movq g_want+32(%%rip), %%r15\n\t"
        "movq g_want+40(%%rip), %%rbp\n\t"
        "leaq g_snap(%%rip), %%rdi\n\t"        /* destination: an ordinary buffer */
        "xorl %%esi, %%esi\n\t"                /* source: address 0, the map */
        "movq g_len(%%rip), %%rdx\n\t"         /* 0x90 or 0xa0 bytes */
        "movq %%rsp, g_rsp_at_call(%%rip)\n\t" /* the call is 16-byte aligned: two pushes */
        "call *g_copy(%%rip)\n\t"
        "pop %%rbp\n\t"
        "pop %%rbx\n\t"
        ::: CLOBBERS);
    uint64_t *snap = g_snap;
    uint64_t fs = 0;
    syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &fs);
    Dl_info where;
    int in_libc = dladdr((void *)snap[OF_RIP / 8], &where) != 0 && where.dli_fname &&
                  strstr(where.dli_fname, "libc.so") != NULL;
    uint64_t rflags = snap[OF_RFLAGS / 8];
    int ok = snap[OF_RBX / 8] == g_want[0] && snap[OF_R12 / 8] == g_want[1] &&
             snap[OF_R13 / 8] == g_want[2] && snap[OF_R14 / 8] == g_want[3] &&
             snap[OF_R15 / 8] == g_want[4] && snap[OF_RBP / 8] == g_want[5] &&
             snap[OF_RSP / 8] == g_rsp_at_call - 8 && in_libc && (rflags & 0x202) == 0x202 &&
             (rflags & ~0xfd7ULL) == 0 &&
             (len > OF_FS_BASE ? snap[OF_FS_BASE / 8] == fs && snap[OF_GS_BASE / 8] == 0
                               : snap[OF_FS_BASE / 8] == 0 && snap[OF_GS_BASE / 8] == 0);
    printf("memcpy(buf, 0, %#llx) snapshot: rbx=%#llx rbp=%#llx r12=%#llx r13=%#llx r14=%#llx r15=%#llx "
           "rsp=%#llx (call at %#llx) fs=%#llx gs=%#llx rflags=%#llx rip=%#llx in %s: %s\n",
           (unsigned long long)len, (unsigned long long)snap[3], (unsigned long long)snap[5], (unsigned long long)snap[12],
           (unsigned long long)snap[13], (unsigned long long)snap[14],
           (unsigned long long)snap[15], (unsigned long long)snap[4],
           (unsigned long long)g_rsp_at_call, (unsigned long long)snap[18],
           (unsigned long long)snap[19], (unsigned long long)rflags,
           (unsigned long long)snap[16], in_libc ? where.dli_fname : "(not the C library)",
           ok ? "ok" : "MISMATCH");
    if (in_libc) {
        const unsigned char *p = (const unsigned char *)snap[OF_RIP / 8] - 16;
        printf("bytes before rip:");
        for (int i = 0; i < 16; i++) printf(" %02x", p[i]);
        printf("\n");
    }
    return ok;
}

int main(void) {
    if (map_registers() != 0) return 2;
    int ok = snapshot_by_memcpy(0x90);
    ok &= snapshot_by_memcpy(0xa0);

    /* memset(&r12 in the map, 0xab, 8), observed through r12 itself. */
    __asm__ volatile(
        "movl $0x60, %%edi\n\t"
        "movl $0xab, %%esi\n\t"
        "movl $8, %%edx\n\t"
        "call *g_fill(%%rip)\n\t"
        "movq %%r12, g_r12_after(%%rip)\n\t"
        ::: CLOBBERS);
    int ok2 = g_r12_after == 0xababababababababULL;
    printf("memset r12: %#llx: %s\n", (unsigned long long)g_r12_after, ok2 ? "ok" : "MISMATCH");

    /* memcpy((void *)0x68, &g_x, 8) sets r13. */
    __asm__ volatile(
        "movl $0x68, %%edi\n\t"
        "leaq g_x(%%rip), %%rsi\n\t"
        "movl $8, %%edx\n\t"
        "call *g_copy(%%rip)\n\t"
        "movq %%r13, g_r13_after(%%rip)\n\t"
        ::: CLOBBERS);
    int ok4 = g_r13_after == g_x;
    printf("memcpy into r13: %#llx: %s\n", (unsigned long long)g_r13_after, ok4 ? "ok" : "MISMATCH");

    /* memcpy((void *)8, &g_x, 8) sets rcx: the issue's own example. glibc's 8..15-byte path
     * loads the value into rcx itself, so this one is not discriminating on its own ... */
    __asm__ volatile(
        "movl $8, %%edi\n\t"
        "leaq g_x(%%rip), %%rsi\n\t"
        "movl $8, %%edx\n\t"
        "call *g_copy(%%rip)\n\t"
        "movq %%rcx, g_rcx_after(%%rip)\n\t"
        ::: CLOBBERS);
    int ok5 = g_rcx_after == g_x;
    printf("memcpy((void *)8, &x, 8) sets rcx: %#llx: %s\n", (unsigned long long)g_rcx_after,
           ok5 ? "ok" : "MISMATCH");

    /* ... so also 16 bytes into rax:rcx, which glibc copies with one xmm load and one xmm
     * store (vmovdqu [rdi], xmm0): rcx changes only through the map, and rax (memcpy's return
     * value, set to dst on entry) is overwritten by the same store. (Not rcx:rdx: rdx is
     * memcpy's length, and its second store's address uses it after the first store changed
     * it, exactly as if the CPU's rdx were memory.) */
    __asm__ volatile(
        "xorl %%edi, %%edi\n\t"
        "leaq g_pair(%%rip), %%rsi\n\t"
        "movl $16, %%edx\n\t"
        "call *g_copy(%%rip)\n\t"
        "movq %%rax, g_rax_after(%%rip)\n\t"
        "movq %%rcx, g_rcx_after(%%rip)\n\t"
        ::: CLOBBERS);
    int ok6 = g_rax_after == g_pair[0] && g_rcx_after == g_pair[1];
    printf("memcpy((void *)0, pair, 16) sets rax:rcx: %#llx:%#llx: %s\n",
           (unsigned long long)g_rax_after, (unsigned long long)g_rcx_after,
           ok6 ? "ok" : "MISMATCH");

    /* memcmp of r12..r15 (map 0x60..0x80) against a buffer holding the same values. */
    __asm__ volatile(
        "movq g_expect+0(%%rip), %%r12\n\t"
        "movq g_expect+8(%%rip), %%r13\n\t"
        "movq g_expect+16(%%rip), %%r14\n\t"
        "movq g_expect+24(%%rip), %%r15\n\t"
        "movl $0x60, %%edi\n\t"
        "leaq g_expect(%%rip), %%rsi\n\t"
        "movl $32, %%edx\n\t"
        "call *g_compare(%%rip)\n\t"
        "movl %%eax, g_equal(%%rip)\n\t"
        "movq $0x99, %%r13\n\t"              /* now r13 differs */
        "movl $0x60, %%edi\n\t"
        "leaq g_expect(%%rip), %%rsi\n\t"
        "movl $32, %%edx\n\t"
        "call *g_compare(%%rip)\n\t"
        "movl %%eax, g_differ(%%rip)\n\t"
        ::: CLOBBERS);
    int ok3 = g_equal == 0 && g_differ != 0;
    printf("memcmp on map bytes: equal=%d differ=%d: %s\n", g_equal, g_differ, ok3 ? "ok" : "MISMATCH");
    return ok && ok2 && ok3 && ok4 && ok5 && ok6 ? 0 : 1;
}
