/* pointers.c — plain C on page-0 pointers, compiled at every optimisation level, checked
 * against the same code on an ordinary array (the CPU is the oracle).
 *
 * Compiled with -ffixed-r12 ... -ffixed-r15 (see the Makefile's C_FIXED): the compiler never
 * uses r12..r15, so the map bytes 0x60..0x80 are registers that only this program's page-0
 * accesses change. Every operation is applied twice through the same C code: once to a
 * volatile pointer into the map, once to a volatile pointer into `mirror`. The compiler chooses
 * the instructions (mov, add, xor, shl, cmp, movzx, setcc, ... at each size and alignment).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "of.h"

static uint8_t mirror_bytes[32] __attribute__((aligned(16)));

#define MAP ((volatile uint8_t *)(uintptr_t)OF_R12)
#define MIR ((volatile uint8_t *)mirror_bytes)

#define U64(base, off) (*(volatile uint64_t *)((base) + (off)))
#define U32(base, off) (*(volatile uint32_t *)((base) + (off)))
#define U16(base, off) (*(volatile uint16_t *)((base) + (off)))
#define U8(base, off) (*(volatile uint8_t *)((base) + (off)))

/* One round of operations on `b` (the map or the mirror); returns a value computed from reads
 * so comparisons and branches are exercised too. */
static __attribute__((noinline)) uint64_t work(volatile uint8_t *b, uint64_t seed) {
    uint64_t acc = 0;
    U64(b, 0) = seed;
    U64(b, 8) = ~seed;
    U64(b, 16) = seed * 0x9E3779B97F4A7C15ULL;
    U64(b, 24) = seed ^ 0xA5A5A5A5A5A5A5A5ULL;
    U32(b, 4) += (uint32_t)seed;            /* unaligned-in-register: high half of r12 */
    U16(b, 7) ^= 0xBEEF;                    /* straddles r12 and r13 */
    U8(b, 9) <<= 3;
    U64(b, 3) += 0x1234;                    /* straddling qword */
    U32(b, 13) -= (uint32_t)(seed >> 7);    /* straddling dword */
    U16(b, 30) |= 0x8001;
    U8(b, 17) &= 0x5A;
    U64(b, 24) >>= (seed & 63);
    for (int i = 0; i < 16; i++) {
        U8(b, i) += (uint8_t)i;
        if (U8(b, 31 - i) > U8(b, i)) acc += U8(b, 31 - i);
        else acc ^= U16(b, i);
    }
    acc += U32(b, 21) == U32(b, 22);
    acc += (int64_t)U64(b, 8) < 0 ? 1 : 7;
    acc += (uint64_t)(int16_t)U16(b, 11);   /* movsx */
    acc += (uint64_t)U8(b, 27);             /* movzx */
    acc *= U64(b, 16) | 1;
    return acc;
}

int main(void) {
    if (map_registers() != 0) return 2;
    int failures = 0;
    uint64_t seed = 0x0123456789ABCDEFULL;
    for (int round = 0; round < 200; round++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t a = work(MAP, seed);
        uint64_t b = work(MIR, seed);
        uint8_t image[32];
        for (int i = 0; i < 32; i++) image[i] = MAP[i];
        if (a != b || memcmp(image, mirror_bytes, 32) != 0) {
            if (failures++ < 5) {
                printf("round %d: result %#llx vs %#llx\n", round, (unsigned long long)a,
                       (unsigned long long)b);
                for (int i = 0; i < 32; i++) printf("%02x%s", image[i], i % 8 == 7 ? " " : "");
                printf("(map)\n");
                for (int i = 0; i < 32; i++) printf("%02x%s", mirror_bytes[i], i % 8 == 7 ? " " : "");
                printf("(mirror)\n");
            }
        }
    }
    printf("pointers: 200 rounds, %d mismatches: %s\n", failures, failures ? "MISMATCH" : "ok");
    return failures ? 1 : 0;
}
