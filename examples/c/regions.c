/*
 * Trapped regions from C (of.h: of_region_create): a device that behaves as 256 bytes of
 * memory, in a region served on a server thread and in one served in the fault handler.
 * The same accesses go to the region and to a plain buffer (the shadow); afterwards the
 * values read and the device's bytes must equal the shadow's. Also checked: one device call
 * per access, of the access's size at its offset (a 4-byte store at offset 3 is one write of
 * 4 bytes at 3); `lock xadd` from several threads gives exact totals; glibc's memcpy and
 * memset (whatever vector code this CPU selects) work on the region.
 *
 * Prints "regions: <n> checks, <k> wrong: ok" (or FAILED) and exits 0 only when k is 0.
 */
#include "of.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define SIZE 256
#define THREADS 4
#define INCREMENTS 2000

struct memdev {
    uint8_t bytes[SIZE];
    /* The last call: offset, size, and whether it was a write; and calls so far. */
    uint64_t last_offset;
    uint32_t last_size;
    int last_write;
    uint64_t calls;
};

/* Async-signal-safe (plain stores only), so the same device serves both modes. */
static void mem_read(void *ctx, uint64_t offset, uint32_t size, uint8_t *out) {
    struct memdev *d = ctx;
    for (uint32_t i = 0; i < size; i++)
        out[i] = d->bytes[offset + i];
    d->last_offset = offset;
    d->last_size = size;
    d->last_write = 0;
    d->calls++;
}

static void mem_write(void *ctx, uint64_t offset, uint32_t size, const uint8_t *data) {
    struct memdev *d = ctx;
    for (uint32_t i = 0; i < size; i++)
        d->bytes[offset + i] = data[i];
    d->last_offset = offset;
    d->last_size = size;
    d->last_write = 1;
    d->calls++;
}

/* The device changes `dev` behind the compiler's back (inside a volatile access, as hardware
 * would): reads of the device's state after an access go through this barrier. */
#define DEVICE_SYNC() __asm__ volatile("" ::: "memory")

static int checks, wrong;

static void check(int ok, const char *what, const char *mode) {
    checks++;
    if (!ok) {
        wrong++;
        printf("MISMATCH (%s): %s\n", mode, what);
    }
}

/* A small deterministic generator (xorshift64). */
static uint64_t state = 0x0F0115EEDull;
static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* One random scalar access at a random offset and size, to `p` (the region or the shadow).
 * Returns what a load read (0 for stores). Volatile, as any driver's register accesses. */
static uint64_t access_at(volatile uint8_t *p, uint64_t r, uint64_t value) {
    unsigned size = 1u << (r % 4);
    unsigned off = (unsigned)((r >> 8) % (SIZE - size + 1));
    int store = (r >> 16) & 1;
    volatile uint8_t *q = p + off;
    switch (size * 2 + store) {
    case 2: return *q;
    case 3: *q = (uint8_t)value; return 0;
    case 4: return *(volatile uint16_t *)q;
    case 5: *(volatile uint16_t *)q = (uint16_t)value; return 0;
    case 8: return *(volatile uint32_t *)q;
    case 9: *(volatile uint32_t *)q = (uint32_t)value; return 0;
    case 16: return *(volatile uint64_t *)q;
    default: *(volatile uint64_t *)q = value; return 0;
    }
}

struct hammer {
    volatile uint64_t *counter;
};

static void *hammer(void *arg) {
    struct hammer *h = arg;
    for (int i = 0; i < INCREMENTS; i++)
        __atomic_fetch_add(h->counter, 1, __ATOMIC_SEQ_CST); /* lock xadd / lock add */
    return NULL;
}

static void run(int flags, const char *mode) {
    static struct memdev dev;
    memset(&dev, 0, sizeof dev);
    struct of_device d = {mem_read, mem_write, &dev};
    struct of_region *r = of_region_create(NULL, SIZE, &d, flags);
    if (!r) {
        printf("of_region_create: %s\n", strerror(errno));
        check(0, "of_region_create", mode);
        return;
    }
    volatile uint8_t *p = of_region_base(r);
    uint8_t shadow[SIZE] = {0};

    /* Random scalar accesses, the same on both sides. */
    for (int i = 0; i < 2000; i++) {
        uint64_t r1 = next(), v = next();
        uint64_t got = access_at(p, r1, v);
        uint64_t want = access_at((volatile uint8_t *)shadow, r1, v);
        if (got != want) {
            check(0, "a load read another value than from memory", mode);
            break;
        }
    }
    DEVICE_SYNC();
    check(memcmp(dev.bytes, shadow, SIZE) == 0, "device bytes after random accesses", mode);

    /* One call per access, of its size at its offset. */
    uint64_t calls = dev.calls;
    *(volatile uint32_t *)(p + 3) = 0xA1B2C3D4u;
    DEVICE_SYNC();
    check(dev.calls == calls + 1 && dev.last_write && dev.last_offset == 3 && dev.last_size == 4,
          "a 4-byte store at offset 3 is one write of 4 bytes at 3", mode);
    calls = dev.calls;
    uint16_t w = *(volatile uint16_t *)(p + 5);
    DEVICE_SYNC();
    check(w == 0xA1B2 && dev.calls == calls + 1 && !dev.last_write && dev.last_offset == 5 &&
              dev.last_size == 2,
          "a 2-byte load at offset 5 is one read of 2 bytes at 5", mode);
    calls = dev.calls;
    __atomic_fetch_or((volatile uint64_t *)(p + 16), 0x80, __ATOMIC_SEQ_CST); /* lock or */
    DEVICE_SYNC();
    check(dev.calls == calls + 2 && dev.last_write && dev.last_offset == 16 &&
              dev.last_size == 8,
          "lock or is one read then one write of 8 bytes", mode);

    /* Threads hammering one counter with lock add / lock xadd. */
    volatile uint64_t *counter = (volatile uint64_t *)(p + 64);
    *counter = 0;
    pthread_t t[THREADS];
    struct hammer h = {counter};
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, &h);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    check(*counter == (uint64_t)THREADS * INCREMENTS, "exact total of locked increments", mode);

    /* glibc's memcpy and memset (vector code) into, out of and on the region. */
    uint8_t src[SIZE], back[SIZE];
    for (int i = 0; i < SIZE; i++)
        src[i] = (uint8_t)(i * 7 + 1);
    memcpy((void *)p, src, SIZE);
    check(memcmp(dev.bytes, src, SIZE) == 0, "memcpy into the region", mode);
    memcpy(back, (const void *)(p + 1), SIZE - 1);
    check(memcmp(back, src + 1, SIZE - 1) == 0, "memcpy out of the region", mode);
    memset((void *)(p + 9), 0x5A, 100);
    memset(src + 9, 0x5A, 100);
    check(memcmp(dev.bytes, src, SIZE) == 0, "memset on the region", mode);

    of_region_destroy(r);
}

int main(void) {
    run(0, "server thread");
    run(OF_REGION_IN_HANDLER, "in handler");
    printf("regions: %d checks, %d wrong: %s\n", checks, wrong, wrong ? "FAILED" : "ok");
    return wrong != 0;
}
