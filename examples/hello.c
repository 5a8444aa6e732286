/* hello.c — arithmetic through the register map from C.
 *
 * Build and run: make hello. Every access below is one instruction with a page-0 operand,
 * written as GCC extended asm so the compiler knows which registers it changes (a plain
 * `*(volatile uint64_t *)0x40 = 1` also works, but the compiler is free to keep its own values
 * in r8 around it, so only asm with clobbers makes register effects meaningful).
 */
#include <stdint.h>
#include <stdio.h>
#include "of.h"

int main(void) {
    if (map_registers() != 0) return 2;
    uint64_t r12_value, sum;
    /* r12 = 40 through the map, r12 += 2 through the map, then read r12 through the map into
     * r13 (each line one page-0 instruction). */
    __asm__ volatile(
        "movq $40, 0x60\n\t"   /* r12 = 40 */
        "addq $2, 0x60\n\t"    /* r12 += 2 */
        "movq 0x60, %%r13\n\t" /* r13 = r12 */
        "movq %%r13, %0\n\t"
        "movq %%r12, %1\n\t"
        : "=r"(sum), "=r"(r12_value)
        :
        : "r12", "r13", "cc");
    /* Byte-wise view: bytes 1..2 of r8 (offset 0x41) as a 16-bit value. */
    uint64_t r8_after;
    __asm__ volatile(
        "movabsq $0x1122334455667788, %%r8\n\t"
        "addw $0x0101, 0x41\n\t" /* r8 bytes 1..2: 0x6677 + 0x0101 = 0x6778 */
        "movq %%r8, %0\n\t"
        : "=r"(r8_after)
        :
        : "r8", "cc");
    /* A volatile pointer read of rsp: within a few KiB of a local variable's address. */
    /* (GCC 12 warns about constant low addresses under -Warray-bounds; the pointer is laundered
     * through an empty asm so that the read is a plain load at 0x20 without the warning.) */
    volatile uint64_t *rsp_slot = (volatile uint64_t *)OF_RSP;
    __asm__("" : "+r"(rsp_slot));
    uint64_t local = 0;
    uint64_t sp = *rsp_slot;
    uint64_t here = (uint64_t)(uintptr_t)&local;
    int ok = sum == 42 && r12_value == 42 && r8_after == 0x1122334455677888ULL &&
             sp <= here + 4096 && here - sp < 65536;
    printf("r12 = %llu, r8 = %#llx, rsp = %#llx (local at %#llx): %s\n",
           (unsigned long long)sum, (unsigned long long)r8_after, (unsigned long long)sp,
           (unsigned long long)here, ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}
