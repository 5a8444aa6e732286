/*
 * The loop of the trapped-region benchmark (examples/region_bench.rs), built once into a
 * shared object and run natively, through `of` (server thread, in handler, patched) and under
 * unicorn: the same machine code everywhere.
 *
 * Each iteration reads a status register of a device, mixes four words of ordinary memory
 * (51 ordinary instructions with gcc -O2: loads, xor, multiply, rotate, shift, add, stores,
 * loop control) and writes a data register — the shape of a driver's inner loop. Two variants of the same body:
 *   bench_fixed:   the device at the fixed address DEV_BASE, as on a microcontroller
 *                  (`mov eax, dword ptr [DEV_BASE + 4]`: 7-byte absolute accesses);
 *   bench_pointer: the device's base in a register (`mov eax, dword ptr [rdi + 4]`).
 * The functions are self-contained (no calls, no data of their own), so unicorn runs them from
 * a copy of their bytes at the same address.
 *
 * The device, shared by every run: 16 bytes of registers that behave as memory, and counts of
 * reads and writes, with callbacks in `of`'s shape (of_dev_read/of_dev_write, struct
 * of_device) and in unicorn's (uc_dev_read/uc_dev_write, uc_mmio_map).
 */
#include <stdint.h>
#include <string.h>

#ifndef DEV_BASE
#error "build with -DDEV_BASE=<address>"
#endif

struct bench_device {
    uint8_t regs[16];
    uint64_t reads, writes;
};

static struct bench_device device;

static void dev_read(uint64_t offset, unsigned size, uint8_t *out) {
    for (unsigned i = 0; i < size && offset + i < sizeof device.regs; i++)
        out[i] = device.regs[offset + i];
    device.reads++;
}

static void dev_write(uint64_t offset, unsigned size, const uint8_t *data) {
    for (unsigned i = 0; i < size && offset + i < sizeof device.regs; i++)
        device.regs[offset + i] = data[i];
    device.writes++;
}

/* of's callbacks (struct of_device in include/of.h). */
void of_dev_read(void *ctx, uint64_t offset, uint32_t size, uint8_t *out) {
    (void)ctx;
    dev_read(offset, size, out);
}
void of_dev_write(void *ctx, uint64_t offset, uint32_t size, const uint8_t *data) {
    (void)ctx;
    dev_write(offset, size, data);
}

/* unicorn's callbacks (uc_cb_mmio_read_t / uc_cb_mmio_write_t: the engine is opaque here). */
uint64_t uc_dev_read(void *uc, uint64_t offset, unsigned size, void *user) {
    (void)uc;
    (void)user;
    uint64_t v = 0;
    dev_read(offset, size, (uint8_t *)&v);
    return v;
}
void uc_dev_write(void *uc, uint64_t offset, unsigned size, uint64_t value, void *user) {
    (void)uc;
    (void)user;
    dev_write(offset, size, (const uint8_t *)&value);
}

/* The device's state: its 16 register bytes as two words, reads, writes. */
void bench_device_state(uint64_t out[4]) {
    memcpy(out, device.regs, 16);
    out[2] = device.reads;
    out[3] = device.writes;
}

void bench_device_reset(void) {
    memset(&device, 0, sizeof device);
    device.regs[4] = 1; /* status: ready */
}

#define WORDS 4

#define BODY(dev)                                                                          \
    uint64_t h = 0x9E3779B97F4A7C15ull;                                                    \
    for (uint64_t i = 0; i < n; i++) {                                                     \
        uint32_t status = (dev)[1];                                                        \
        h ^= status;                                                                       \
        for (int k = 0; k < WORDS; k++) {                                                  \
            uint64_t x = mem[k] ^ h;                                                       \
            x *= 0xFF51AFD7ED558CCDull;                                                    \
            h = ((h << 23) | (h >> 41)) + x;                                               \
            mem[k] = x ^ (x >> 29);                                                        \
        }                                                                                  \
        (dev)[2] = (uint32_t)h;                                                            \
    }                                                                                      \
    return h

uint64_t bench_fixed(uint64_t *mem, uint64_t n) {
    BODY((volatile uint32_t *)DEV_BASE);
}

uint64_t bench_pointer(volatile uint32_t *dev, uint64_t *mem, uint64_t n) {
    BODY(dev);
}
