/* threads.c — plain pthreads (no Rust threads): every thread sees its own registers.
 *
 * map_registers() is called once, from main. Each of 8 threads then does 20000 increments of
 * r12 through the map (`addq $1, 0x60`) starting from its own value, and reads its rsp through
 * the map: the totals must be exact and each rsp must lie in that thread's own stack. (These
 * threads have no alternate signal stack, so of's handler runs on its pool stacks.)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include "of.h"

#define THREADS 8
#define INCREMENTS 20000

struct result {
    uint64_t start, end, rsp, local;
};

static void *worker(void *arg) {
    struct result *r = arg;
    uint64_t v = r->start, sp;
    for (int i = 0; i < INCREMENTS; i++) {
        /* r12 is reserved (-ffixed-r12): only this asm and the map touch it. */
        __asm__ volatile("movq %1, %%r12\n\t"
                         "addq $1, 0x60\n\t" /* r12 += 1 through the map */
                         "movq %%r12, %0\n\t"
                         : "=r"(v)
                         : "r"(v)
                         : "r12", "cc");
    }
    __asm__ volatile("movq 0x20, %0" : "=r"(sp)); /* rsp through the map */
    volatile uint64_t local = 0;
    r->end = v;
    r->rsp = sp;
    r->local = (uint64_t)(uintptr_t)&local;
    return NULL;
}

int main(void) {
    if (map_registers() != 0) return 2;
    pthread_t t[THREADS];
    struct result res[THREADS];
    for (int i = 0; i < THREADS; i++) {
        res[i].start = (uint64_t)i * 1000000;
        pthread_create(&t[i], NULL, worker, &res[i]);
    }
    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        uint64_t d = res[i].rsp > res[i].local ? res[i].rsp - res[i].local : res[i].local - res[i].rsp;
        int ok = res[i].end == res[i].start + INCREMENTS && d < 65536;
        if (!ok) {
            bad++;
            printf("thread %d: end %llu rsp %#llx local %#llx\n", i, (unsigned long long)res[i].end,
                   (unsigned long long)res[i].rsp, (unsigned long long)res[i].local);
        }
    }
    printf("threads: %d pthreads x %d increments, %d wrong: %s\n", THREADS, INCREMENTS, bad,
           bad ? "MISMATCH" : "ok");
    return bad ? 1 : 0;
}
