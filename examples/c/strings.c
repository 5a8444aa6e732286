/* strings.c — glibc's memory and string functions on map bytes (issue 12, item 6).
 *
 * After map_registers(), the bytes 0x60..0x80 of page 0 are r12..r15. This program is compiled
 * with -ffixed-r12 ... -ffixed-r15 (the Makefile's C_FIXED), so the compiler never uses those
 * four registers: the program sets them with inline asm and they keep their values across calls
 * (they are callee-saved). Every glibc function below is then called on page-0 pointers
 * (0x60 + offset) and, with the same arguments otherwise, on an ordinary page holding the same
 * 32 bytes at the same page offset (so alignment and page-crossing decisions inside glibc are the
 * same); the return values, the 32 bytes afterwards (read from r12..r15 with inline asm and, for
 * functions that write, also read back through the map with `mov rax, [0x60]` ...) and every
 * ordinary output buffer must be identical. Lengths run from 0 to 32 at every start offset
 * within 0x60..0x80 (odd ones included), in both directions (map source -> ordinary
 * destination and ordinary source -> map destination) and, for memmove/bcopy/wmemmove, with
 * both sides overlapping inside the map.
 *
 * Covered: memcpy memmove mempcpy bcopy memset bzero explicit_bzero memcmp bcmp __memcmpeq
 * memchr memrchr rawmemchr strlen strnlen strchr index strchrnul strrchr rindex strcmp strncmp
 * strcasecmp strncasecmp strverscmp strcpy stpcpy strncpy stpncpy strcat strncat strspn strcspn
 * strpbrk strsep strdup strndup swab memfrob, and the wide ones wmemset wcslen wcsnlen wmemchr
 * wmemcmp wcschr wcschrnul wcsrchr wcscmp wcsncmp wcscpy wcscat wmemcpy wmemmove wmempcpy wcsspn
 * wcspbrk wcsstr (4-byte aligned offsets).
 *
 * The functions are called through pointers from dlsym(RTLD_DEFAULT, name): for glibc's
 * IFUNC symbols that is the implementation the resolver chose for this CPU and this
 * GLIBC_TUNABLES (glibc.cpu.hwcaps=...), i.e. exactly what a call through the PLT runs.
 * The program prints which implementation that is ("impl" lines: the name from libc's debug
 * symbols, found through its build-id, when they are installed; the "variant:" line groups them)
 * and, as a second and independent witness, the instruction that read the rip slot when memcpy
 * copied 0x90 bytes from address 0 (the bytes before the rip value it copied, decoded by
 * tests/glibc_variants.rs).
 *
 * Output: one line per group of cases ending in ": ok" (or "MISMATCH", with up to four cases
 * in detail), then the variant and a summary; the exit status is 1 on any mismatch. By default
 * a deterministic sample of about 21,000 cases runs (0.3 s); OF_STRINGS_FULL=1 runs all
 * 123,000.
 *
 * Not comparable: glibc's SSE2 and SSE4 code reads whole 16-byte blocks, up to 64 bytes past
 * the end of a string (harmless within a page of ordinary memory). From 0x60..0x80 that can
 * reach 0xa0, where the map ends: such an access is not a register access, so of passes the
 * fault to the handler installed before it (this program's), which abandons the case. Those
 * cases are counted and the first of each group is printed (address, instruction bytes, place
 * in glibc); they happen only in the SSE variants (strnlen, strchr, strchrnul, strcmp,
 * wcsnlen, ...).
 *
 * Left out (a function that changes r12..r15 while it reads or writes map bytes would see its
 * own values there — exactly the "registers as memory" semantics, but then the map and the
 * reference calls see different bytes, so there is nothing to compare). Found with
 * `objdump -d` of glibc 2.36 (Debian 2.36-9) and its debug symbols; tests/glibc_variants.rs
 * re-checks, for the implementations this run reports, that every covered one (and every
 * function it jumps to or calls among glibc's string functions) never names r12..r15, and that
 * every left-out one does:
 *   strstr      __strstr_avx512 and __strstr_generic push and use r12..r15;
 *               __strstr_sse2_unaligned tail-jumps to __strstr_generic
 *   memmem, memccpy, strcasestr, strtok, strtok_r, wcsncat, wcpcpy, wcpncpy, wcsncpy, wcscspn,
 *   wcscasecmp, wcsncasecmp, strfry
 *               generic C code that keeps its own values in r12..r15
 *   strcoll, strxfrm (locale collation; the C locale path also uses r12..r15)
 *
 * Build: make c-tests, or tests/glibc_variants.rs (every -O level, every glibc variant).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>
#include <link.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>
#include "of.h"

/* ---- the functions under test, resolved with dlsym ---- */

#define COVERED(X)                                                                              \
    X(memcpy) X(memmove) X(mempcpy) X(bcopy) X(memset) X(bzero) X(explicit_bzero) X(memcmp)    \
    X(bcmp) X(__memcmpeq) X(memchr) X(memrchr) X(rawmemchr) X(strlen) X(strnlen) X(strchr)      \
    X(index) X(strchrnul) X(strrchr) X(rindex) X(strcmp) X(strncmp) X(strcasecmp)              \
    X(strncasecmp) X(strverscmp) X(strcpy) X(stpcpy) X(strncpy) X(stpncpy) X(strcat)           \
    X(strncat) X(strspn) X(strcspn) X(strpbrk) X(strsep) X(strdup) X(strndup) X(swab)          \
    X(memfrob) X(wmemset) X(wcslen) X(wcsnlen) X(wmemchr) X(wmemcmp) X(wcschr) X(wcschrnul)    \
    X(wcsrchr) X(wcscmp) X(wcsncmp) X(wcscpy) X(wcscat) X(wmemcpy) X(wmemmove) X(wmempcpy)     \
    X(wcsspn) X(wcspbrk) X(wcsstr)

#define DECLARE(name) static __typeof__(name) *f_##name;
COVERED(DECLARE)

struct fn {
    const char *name;
    void **slot;
    const char *why_left_out; /* NULL: covered */
};
#define ENTRY(name) {#name, (void **)&f_##name, NULL},
static const char USES_R12_15[] = "its implementation keeps its own values in r12..r15";
static struct fn g_fns[] = {
    COVERED(ENTRY)
    {"strstr", NULL, "__strstr_avx512/__strstr_generic use r12..r15 (sse2_unaligned jumps to generic)"},
    {"memmem", NULL, USES_R12_15},
    {"memccpy", NULL, USES_R12_15},
    {"strcasestr", NULL, USES_R12_15},
    {"strtok", NULL, "it is strtok_r, which keeps its own values in r12..r15"},
    {"strtok_r", NULL, USES_R12_15},
    {"wcsncat", NULL, USES_R12_15},
    {"wcpcpy", NULL, USES_R12_15},
    {"wcpncpy", NULL, USES_R12_15},
    {"wcsncpy", NULL, USES_R12_15},
    {"wcscspn", NULL, USES_R12_15},
    {"wcscasecmp", NULL, USES_R12_15},
    {"wcsncasecmp", NULL, USES_R12_15},
    {"strfry", NULL, USES_R12_15},
    {"strcoll", NULL, "__strcoll_l keeps its own values in r12..r15"},
    {"strxfrm", NULL, "__strxfrm_l keeps its own values in r12..r15"},
};
#define NFNS ((int)(sizeof g_fns / sizeof g_fns[0]))

/* ---- r12..r15 and the map ---- */

/* The registers are reserved (-ffixed-r12 ... -ffixed-r15): nothing but these blocks and the
 * map accesses change them. */
static void set_regs(const unsigned char *b) {
    __asm__ volatile("movq 0(%0), %%r12\n\t"
                     "movq 8(%0), %%r13\n\t"
                     "movq 16(%0), %%r14\n\t"
                     "movq 24(%0), %%r15"
                     :
                     : "r"(b)
                     : "memory");
}

static void get_regs(unsigned char *b) {
    __asm__ volatile("movq %%r12, 0(%0)\n\t"
                     "movq %%r13, 8(%0)\n\t"
                     "movq %%r14, 16(%0)\n\t"
                     "movq %%r15, 24(%0)"
                     :
                     : "r"(b)
                     : "memory");
}

/* The same 32 bytes read through the map: four absolute page-0 loads in a row. */
static void read_map(unsigned char *b) {
    __asm__ volatile("movq 0x60, %%rax\n\t"
                     "movq 0x68, %%rcx\n\t"
                     "movq 0x70, %%rdx\n\t"
                     "movq 0x78, %%rsi\n\t"
                     "movq %%rax, 0(%0)\n\t"
                     "movq %%rcx, 8(%0)\n\t"
                     "movq %%rdx, 16(%0)\n\t"
                     "movq %%rsi, 24(%0)"
                     :
                     : "D"(b)
                     : "rax", "rcx", "rdx", "rsi", "memory");
}

/* Page-0 addresses the compiler cannot see as constants (it would warn, or reason about them). */
static volatile uintptr_t g_zero = 0;
/* The reference bytes live at the same page offset (0x60) as the map bytes. */
static unsigned char g_page[2 * 4096] __attribute__((aligned(4096)));
#define MAPSIDE 0
#define REFSIDE 1
static unsigned char *base(int side) {
    return side == MAPSIDE ? (unsigned char *)(g_zero + OF_R12) : g_page + OF_R12;
}

/* ---- one case: the same call on the map and on the reference ---- */

static struct {
    long ret[2];
    unsigned char st[2][32];   /* the 32 bytes after the call: r12..r15 / the reference */
    unsigned char viamap[32];  /* the same bytes read back through the map (writing groups) */
    unsigned char out[2][64];  /* an ordinary buffer each call may write */
} C;

static char g_group[160];
static int g_writes, g_cases, g_bad, g_total_bad, g_total_cases, g_groups;
static int g_skipped, g_total_skipped; /* cases where glibc itself read past the map (below) */
static char g_skip_note[240];

/* Unless OF_STRINGS_FULL=1 is set, a run compares a deterministic sample: the biggest sweeps
 * keep one case in k (SAMPLE), then every group keeps its first 32 cases and one in two of the
 * rest (start). Every case: about 123,000 comparisons, 1.5 s here; the sample: about 21,000. */
static int g_full, g_started;
#define SAMPLE(k)                                       \
    if (!g_full && (k) > 1 && rnd() % (unsigned)(k)) \
        continue

static uint32_t g_rng = 0x2545F491u;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static int same(const unsigned char *a, const unsigned char *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static void copy(unsigned char *d, const unsigned char *s, int n) {
    for (int i = 0; i < n; i++) d[i] = s[i];
}

static void hex(const char *label, const unsigned char *b, int n) {
    printf("    %-10s", label);
    for (int i = 0; i < n; i++) printf("%s%02x", i && i % 8 == 0 ? " " : "", b[i]);
    printf("\n");
}

static void group(int writes, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_group, sizeof g_group, fmt, ap);
    va_end(ap);
    g_writes = writes;
    g_cases = g_bad = g_skipped = g_started = 0;
    g_skip_note[0] = 0;
}

static void done(void) {
    g_total_cases += g_cases;
    g_total_bad += g_bad;
    g_total_skipped += g_skipped;
    g_groups++;
    char skipped[400] = "";
    if (g_skipped)
        snprintf(skipped, sizeof skipped, " (%d more not comparable: glibc read past the map's end, %s)", g_skipped,
                 g_skip_note);
    if (g_bad)
        printf("%s, %d cases%s: MISMATCH in %d\n", g_group, g_cases, skipped, g_bad);
    else
        printf("%s, %d cases%s: ok\n", g_group, g_cases, skipped);
    fflush(stdout);
}

/* Puts `pat` in r12..r15 and in the reference bytes; clears the ordinary buffers. Returns 0 for
 * a case left out of the sample (see SAMPLE). */
static int start(const unsigned char *pat) {
    if (!g_full && g_started++ >= 32 && rnd() % 2) return 0;
    copy(g_page + OF_R12, pat, 32);
    for (int i = 0; i < 64; i++) C.out[0][i] = C.out[1][i] = 0xee;
    C.ret[0] = C.ret[1] = 0;
    set_regs(pat);
    return 1;
}

static void snap(int side) {
    if (side == MAPSIDE) {
        get_regs(C.st[MAPSIDE]);
        if (g_writes) read_map(C.viamap);
    } else {
        copy(C.st[REFSIDE], g_page + OF_R12, 32);
    }
}

/* A page-0 access that is not all inside the map (glibc's vector code reads whole aligned
 * blocks, up to 64 bytes past a string's end within the page: on ordinary memory that is
 * harmless, but the map ends at 0xa0) is not of's: of passes the fault on to the SIGSEGV handler
 * installed before it, this one. During a case it sends the thread to `recover`, which jumps
 * back to the case (counted as not comparable, with where it happened); anywhere else the
 * default action kills the process. Resuming through the context (instead of jumping out of the
 * handler) lets of's handler return normally. */
static sigjmp_buf g_jb;
static volatile sig_atomic_t g_armed, g_faulted;
static volatile uintptr_t g_fault_addr, g_fault_rip;

static void recover(void) { siglongjmp(g_jb, 1); }

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    uintptr_t a = (uintptr_t)si->si_addr, rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    Dl_info where;
    if (g_armed && si->si_code > 0 && a < 4096 && dladdr((void *)rip, &where) && where.dli_fname &&
        strstr(where.dli_fname, "/libc.so")) {
        g_fault_addr = a;
        g_fault_rip = rip;
        g_faulted = 1;
        g_armed = 0;
        uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
        uc->uc_mcontext.gregs[REG_RSP] = (greg_t)(((sp - 1024) & ~(uintptr_t)15) - 8);
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)recover;
        return;
    }
    signal(sig, SIG_DFL); /* the fault happens again and kills the process */
}

static const char *symbol(uint64_t off, const char *fn, int containing, uint64_t *start, uint64_t *size);
static uintptr_t libc_base(void);

/* The first such case of a group is described by the fault address, the instruction's place in
 * libc and its bytes (tests/glibc_variants.rs decodes them and checks that the access does
 * reach past 0xa0). */
static void note_skip(void) {
    g_skipped++;
    if (g_skip_note[0]) return;
    uint64_t off = g_fault_rip - libc_base(), start = 0, size = 0;
    const char *sym = symbol(off, NULL, 1, &start, &size);
    char where[96], bytes[16 * 3 + 1];
    if (sym) snprintf(where, sizeof where, "%s+%#llx", sym, (unsigned long long)(off - start));
    else snprintf(where, sizeof where, "libc+%#llx", (unsigned long long)off);
    const unsigned char *code = (const unsigned char *)g_fault_rip;
    for (int i = 0; i < 16; i++) snprintf(bytes + 3 * i, 4, "%02x ", code[i]);
    bytes[16 * 3 - 1] = 0;
    snprintf(g_skip_note, sizeof g_skip_note, "first at %#lx by %s [%s]", (unsigned long)g_fault_addr, where,
             bytes);
}

static void finish(const char *fmt, ...) {
    if (g_faulted) {
        g_faulted = 0;
        note_skip();
        return;
    }
    int ok = C.ret[0] == C.ret[1] && same(C.st[0], C.st[1], 32) &&
             (!g_writes || same(C.viamap, C.st[0], 32)) && same(C.out[0], C.out[1], 64);
    g_cases++;
    if (ok) return;
    if (++g_bad > 4) return;
    va_list ap;
    va_start(ap, fmt);
    printf("MISMATCH %s: ", g_group);
    vprintf(fmt, ap);
    va_end(ap);
    printf(" (b = 0x60 on the map, the reference page otherwise)\n");
    printf("    returned  map %ld, reference %ld\n", C.ret[0], C.ret[1]);
    hex("r12..r15", C.st[0], 32);
    if (g_writes) hex("via map", C.viamap, 32);
    hex("reference", C.st[1], 32);
    if (!same(C.out[0], C.out[1], 64)) {
        hex("buf (map)", C.out[0], 64);
        hex("buf (ref)", C.out[1], 64);
    }
}

/* The body runs once with b = the map bytes and once with b = the reference bytes, o = that
 * side's ordinary buffer; the map side's r12..r15 are read right after its call. A case whose
 * call reads past the map comes back to the sigsetjmp and is counted by finish(); the loop
 * variables around it do not change between the sigsetjmp and the jump, so they keep their
 * values (C11 7.13.2.1; gcc's -Wclobbered does not know that). */
#define BOTH(...)                                                   \
    do {                                                            \
        if (sigsetjmp(g_jb, 0)) break;                              \
        g_armed = 1;                                                \
        for (int side = 0; side < 2; side++) {                      \
            unsigned char *b = base(side), *o = C.out[side];        \
            (void)b;                                                \
            (void)o;                                                \
            __VA_ARGS__;                                            \
            snap(side);                                             \
            g_armed = 0;                                            \
        }                                                           \
    } while (0)

/* A returned pointer as an offset from `from` (NULL: a value no offset takes). */
static long at(const void *p, const void *from) {
    return p ? (long)((const char *)p - (const char *)from) : -100000;
}

/* ---- data ---- */

static void random_bytes(unsigned char *p, int n) {
    static const unsigned char some[] = {0x00, 0x01, 0x41, 0x42, 0x61, 0x7f, 0x80, 0xa5, 0xff};
    for (int i = 0; i < n; i++)
        p[i] = rnd() % 3 ? some[rnd() % sizeof some] : (unsigned char)rnd();
}

/* Letters from a small alphabet (so characters repeat), NUL at `nul` (none if nul >= 32). */
static void letters(unsigned char *p, int nul, const char *alphabet) {
    int k = (int)strlen(alphabet);
    for (int i = 0; i < 32; i++) p[i] = (unsigned char)alphabet[rnd() % k];
    if (nul < 32) p[nul] = 0;
}

/* 8 wide characters (signed values, repeats), wide NUL at `nul` (none if nul >= 8). */
static void wide(unsigned char *p, int nul) {
    static const int32_t some[] = {0x41, 0x42, -1, 0x7fffffff, (int32_t)0x80000000, 0x10041, 0x4100};
    for (int i = 0; i < 8; i++) {
        int32_t v = some[rnd() % (sizeof some / sizeof some[0])];
        if (i == nul) v = 0;
        memcpy(p + 4 * i, &v, 4);
    }
}

#define W(p) ((wchar_t *)(void *)(p))

/* ---- memcpy, memmove, mempcpy, bcopy, wmemcpy, wmemmove, wmempcpy ---- */

typedef void *(*copy_fn)(void *, const void *, size_t);
enum { K_RET_DST, K_RET_END, K_BCOPY, K_WIDE_DST, K_WIDE_END };

static long do_copy(int kind, void *dst, const void *src, size_t n, void *f, const void *from) {
    switch (kind) {
    case K_RET_DST:
    case K_RET_END:
        return at(((copy_fn)f)(dst, src, n), from);
    case K_BCOPY:
        ((void (*)(const void *, void *, size_t))f)(src, dst, n);
        return 0;
    default:
        return at(((wchar_t * (*)(wchar_t *, const wchar_t *, size_t)) f)(W(dst), (const wchar_t *)src, n),
                  from);
    }
}

static void copies(const char *name, void *f, int kind, int overlap_ok) {
    int wide_ = kind == K_WIDE_DST || kind == K_WIDE_END, unit = wide_ ? 4 : 1, cells = 32 / unit;
    unsigned char pat[32], src[32];

    group(0, wide_ ? "%s(buf, map + 4s, n) for 4(s + n) <= 32" : "%s(buf, map + s, n) for s + n <= 32", name);
    for (int s = 0; s < cells; s++)
        for (int n = 0; s + n <= cells; n++) {
            random_bytes(pat, 32);
            if (!start(pat)) continue;
            BOTH(C.ret[side] = do_copy(kind, o + 8, b + unit * s, n, f, o));
            finish("%s(buf + 8, b + %d, %d)", name, unit * s, n);
        }
    done();

    group(1, wide_ ? "%s(map + 4d, buf, n) for 4(d + n) <= 32" : "%s(map + d, buf, n) for d + n <= 32", name);
    for (int d = 0; d < cells; d++)
        for (int n = 0; d + n <= cells; n++) {
            random_bytes(pat, 32);
            random_bytes(src, 32);
            if (!start(pat)) continue;
            BOTH(C.ret[side] = do_copy(kind, b + unit * d, src, n, f, b));
            finish("%s(b + %d, src, %d)", name, unit * d, n);
        }
    done();

    /* Both in the map: (d, s) pairs for every length (a sample unless OF_STRINGS_FULL=1),
     * overlapping both ways when the function allows it, disjoint otherwise. */
    group(1, wide_ ? "%s(map + 4d, map + 4s, n)%s" : "%s(map + d, map + s, n)%s", name,
          overlap_ok ? ", overlapping both ways" : ", disjoint");
    for (int n = 0; n <= cells; n++)
        for (int d = 0; d + n <= cells; d++)
            for (int s = 0; s + n <= cells; s++) {
                SAMPLE(unit == 1 ? 16 : 2);
                if (!overlap_ok && (d < s ? s - d : d - s) < n) continue;
                random_bytes(pat, 32);
                if (!start(pat)) continue;
                BOTH(C.ret[side] = do_copy(kind, b + unit * d, b + unit * s, n, f, b));
                finish("%s(b + %d, b + %d, %d)", name, unit * d, unit * s, n);
            }
    done();
}

/* ---- memset, bzero, explicit_bzero, wmemset ---- */

static void sets(void) {
    unsigned char pat[32];
    static const int values[] = {0x00, 0xa5, 0x17f /* only the low byte counts */};
    group(1, "memset(map + d, c, n) for d + n <= 32, c = 0, 0xa5, 0x17f");
    for (int d = 0; d < 32; d++)
        for (int n = 0; d + n <= 32; n++)
            for (int v = 0; v < 3; v++) {
                SAMPLE(2);
                random_bytes(pat, 32);
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f_memset(b + d, values[v], n), b));
                finish("memset(b + %d, %#x, %d)", d, values[v], n);
            }
    done();
    group(1, "bzero(map + d, n) and explicit_bzero(map + d, n) for d + n <= 32");
    for (int d = 0; d < 32; d++)
        for (int n = 0; d + n <= 32; n++)
            for (int which = 0; which < 2; which++) {
                SAMPLE(2);
                random_bytes(pat, 32);
                if (!start(pat)) continue;
                BOTH((which ? f_explicit_bzero : f_bzero)(b + d, n));
                finish("%s(b + %d, %d)", which ? "explicit_bzero" : "bzero", d, n);
            }
    done();
    group(1, "wmemset(map + 4d, wc, n) for 4(d + n) <= 32");
    for (int d = 0; d < 8; d++)
        for (int n = 0; d + n <= 8; n++)
            for (int v = 0; v < 3; v++) {
                wchar_t wc = v == 0 ? 0 : v == 1 ? (wchar_t)0x12345678 : (wchar_t)-2;
                random_bytes(pat, 32);
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f_wmemset(W(b + 4 * d), wc, n), b));
                finish("wmemset(b + %d, %#x, %d)", 4 * d, (unsigned)wc, n);
            }
    done();
}

/* ---- memcmp, bcmp, __memcmpeq, wmemcmp ---- */

static void compares(const char *name, int (*f)(const void *, const void *, size_t), int unit) {
    unsigned char pat[32], other[40];
    int cells = 32 / unit;
    group(0, "%s(map + s, buf, n) and (buf, map + s, n), equal or one difference", name);
    for (int s = 0; s < cells; s++)
        for (int n = 0; s + n <= cells; n++)
            for (int k = -1; k < n; k += (n > 6 && k >= 1 && k < n - 2) ? n / 3 : 1) {
                SAMPLE(unit == 1 ? 3 : 1);
                if (unit == 1) random_bytes(pat, 32);
                else wide(pat, 8);
                if (!start(pat)) continue;
                copy(other, pat + unit * s, unit * n);
                if (k >= 0) other[unit * k + (unit == 4 ? 3 : 0)] ^= (unsigned char)(1 + rnd() % 255);
                int swap = rnd() & 1;
                BOTH(C.ret[side] = swap ? f(other, b + unit * s, n) : f(b + unit * s, other, n));
                finish("%s(%s, %s, %d), difference at %d", name, swap ? "buf" : "b + s", swap ? "b + s" : "buf", n, k);
            }
    done();
    group(0, "%s(map + s1, map + s2, n)", name);
    for (int s1 = 0; s1 < cells; s1++)
        for (int s2 = 0; s2 < cells; s2 += 1 + (s1 & 1))
            for (int n = 0; s1 + n <= cells && s2 + n <= cells; n += 1 + n / 4) {
                SAMPLE(unit == 1 ? 8 : 1);
                if (unit == 1) random_bytes(pat, 32);
                else wide(pat, 8);
                if (rnd() & 1)
                    for (int i = 0; i < n * unit; i++) pat[s2 * unit + i] = pat[s1 * unit + i];
                if (!start(pat)) continue;
                BOTH(C.ret[side] = f(b + unit * s1, b + unit * s2, n));
                finish("%s(b + %d, b + %d, %d)", name, unit * s1, unit * s2, n);
            }
    done();
}

static int call_wmemcmp(const void *a, const void *b, size_t n) { return f_wmemcmp(a, b, n); }

/* ---- memchr, memrchr, rawmemchr, wmemchr ---- */

static void searches(void) {
    unsigned char pat[32];
    group(0, "memchr and memrchr(map + s, c, n) for s + n <= 32, c first, last, repeated or absent");
    for (int s = 0; s < 32; s++)
        for (int n = 0; s + n <= 32; n++)
            for (int which = 0; which < 2; which++)
                for (int v = 0; v < 4; v++) {
                    SAMPLE(5);
                    random_bytes(pat, 32);
                    int c = v == 0 ? pat[s] : v == 1 ? pat[(s + n + 31) % 32] : v == 2 ? 0x41 : 0x5a + 0x100;
                    if (!start(pat)) continue;
                    BOTH(C.ret[side] = at((which ? f_memrchr : f_memchr)(b + s, c, n), b));
                    finish("%s(b + %d, %#x, %d)", which ? "memrchr" : "memchr", s, c, n);
                }
    done();
    group(0, "rawmemchr(map + s, c) with c at or after s");
    for (int s = 0; s < 32; s++)
        for (int k = s; k < 32; k++) {
            random_bytes(pat, 32);
            int c = pat[k];
            if (!start(pat)) continue;
            BOTH(C.ret[side] = at(f_rawmemchr(b + s, c), b));
            finish("rawmemchr(b + %d, %#x)", s, c);
        }
    done();
    group(0, "wmemchr(map + 4s, wc, n) for 4(s + n) <= 32");
    for (int s = 0; s < 8; s++)
        for (int n = 0; s + n <= 8; n++)
            for (int v = 0; v < 4; v++) {
                wide(pat, 8);
                wchar_t wc;
                if (v < 2) memcpy(&wc, pat + 4 * (v == 0 ? s : (s + n + 7) % 8), 4);
                else wc = v == 2 ? 0x41 : 0x141;
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f_wmemchr(W(b + 4 * s), wc, n), b));
                finish("wmemchr(b + %d, %#x, %d)", 4 * s, (unsigned)wc, n);
            }
    done();
}

/* ---- strlen, strnlen, strchr, index, strchrnul, strrchr, rindex ---- */

static void lengths(void) {
    unsigned char pat[32];
    group(0, "strlen(map + s) with the NUL at every p >= s");
    for (int p = 0; p < 32; p++)
        for (int s = 0; s <= p; s++) {
            letters(pat, p, "abcXYZ\x80\xff");
            if (!start(pat)) continue;
            BOTH(C.ret[side] = (long)f_strlen((const char *)b + s));
            finish("strlen(b + %d), NUL at %d", s, p);
        }
    done();
    group(0, "strnlen(map + s, n), NUL at p >= s or none within s + n <= 32");
    for (int s = 0; s < 32; s++)
        for (int n = 0; n <= 40; n++) {
            int p = s + (int)(rnd() % (32 - s));
            if (n % 3 == 0) p = 32; /* no NUL: only within the 32 bytes */
            if (p == 32 && s + n > 32) continue;
            letters(pat, p, "ab\x01");
            if (!start(pat)) continue;
            BOTH(C.ret[side] = (long)f_strnlen((const char *)b + s, n));
            finish("strnlen(b + %d, %d), NUL at %d", s, n, p);
        }
    done();
    static const char *const names[] = {"strchr", "index", "strchrnul", "strrchr", "rindex"};
    char *(*const fns[])(const char *, int) = {f_strchr, f_index, f_strchrnul, f_strrchr, f_rindex};
    for (int fi = 0; fi < 5; fi++) {
        group(0, "%s(map + s, c), NUL at every p >= s, c at s, repeated, absent, 0, 0x100 + 'a'", names[fi]);
        for (int p = 0; p < 32; p++)
            for (int s = 0; s <= p; s++)
                for (int v = 0; v < 5; v++) {
                    SAMPLE(4);
                    letters(pat, p, "abcab\xe1");
                    int c = v == 0 ? pat[s] : v == 1 ? 'a' : v == 2 ? 'q' : v == 3 ? 0 : 0x100 + 'b';
                    if (!start(pat)) continue;
                    BOTH(C.ret[side] = at(fns[fi]((const char *)b + s, c), b));
                    finish("%s(b + %d, %#x), NUL at %d", names[fi], s, c, p);
                }
        done();
    }
    group(0, "wcslen(map + 4s) and wcsnlen(map + 4s, n), wide NUL at p >= s or none");
    for (int p = 0; p <= 8; p++)
        for (int s = 0; s <= p && s < 8; s++)
            for (int n = -1; n <= 9; n++) {
                if (p == 8 && (n < 0 || s + n > 8)) continue; /* no NUL: bounded calls only */
                wide(pat, p);
                if (!start(pat)) continue;
                BOTH(C.ret[side] = n < 0 ? (long)f_wcslen(W(b + 4 * s)) : (long)f_wcsnlen(W(b + 4 * s), n));
                finish("%s(b + %d, %d), NUL at %d", n < 0 ? "wcslen" : "wcsnlen", 4 * s, n, p);
            }
    done();
    static const char *const wnames[] = {"wcschr", "wcschrnul", "wcsrchr"};
    wchar_t *(*const wfns[])(const wchar_t *, wchar_t) = {f_wcschr, f_wcschrnul, f_wcsrchr};
    group(0, "wcschr, wcschrnul, wcsrchr(map + 4s, wc), wide NUL at p >= s");
    for (int fi = 0; fi < 3; fi++)
        for (int p = 0; p < 8; p++)
            for (int s = 0; s <= p; s++)
                for (int v = 0; v < 4; v++) {
                    wide(pat, p);
                    wchar_t wc;
                    memcpy(&wc, pat + 4 * s, 4);
                    if (v == 1) wc = 0x41;
                    if (v == 2) wc = 0x241;
                    if (v == 3) wc = 0;
                    if (!start(pat)) continue;
                    BOTH(C.ret[side] = at(wfns[fi](W(b + 4 * s), wc), b));
                    finish("%s(b + %d, %#x), NUL at %d", wnames[fi], 4 * s, (unsigned)wc, p);
                }
    done();
}

/* ---- strcmp, strncmp, strcasecmp, strncasecmp, strverscmp, wcscmp, wcsncmp ---- */

static void flip_case(unsigned char *p, int n) {
    for (int i = 0; i < n; i++)
        if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'z') p[i] ^= 0x20;
}

static void string_compares(void) {
    unsigned char pat[32], other[48];
    static const char *const names[] = {"strcmp", "strncmp", "strcasecmp", "strncasecmp", "strverscmp"};
    for (int fi = 0; fi < 5; fi++) {
        int counted = fi == 1 || fi == 3, caseless = fi == 2 || fi == 3;
        group(0, "%s(map + s, buf%s) and reversed, NUL at every p >= s, equal, one difference, "
                 "prefix, longer", names[fi], counted ? ", n" : "");
        for (int p = 0; p < 32; p++)
            for (int s = 0; s <= p; s++)
                for (int v = 0; v < 4; v++) {
                    SAMPLE(3);
                    int len = p - s, k = len ? (int)(rnd() % (len + 1)) : 0;
                    letters(pat, p, fi == 4 ? "0129a" : caseless ? "aBcD[" : "abc\x80\xff");
                    if (!start(pat)) continue;
                    memset(other, 0, sizeof other);
                    copy(other, pat + s, len + 1);
                    if (caseless) flip_case(other, len);
                    if (v == 1) other[k] = other[k] ? (unsigned char)(other[k] + (rnd() & 1 ? 1 : -1)) : 'a';
                    if (v == 2 && len) other[k] = 0;                 /* other is a prefix */
                    if (v == 3) { other[len] = 'b'; other[len + 1] = 0; } /* other is longer */
                    size_t n = counted ? (size_t)(rnd() % 3 == 0 ? 40 : rnd() % (len + 3)) : 0;
                    int swap = rnd() & 1;
                    const char *x = (const char *)other;
                    BOTH(const char *y = (const char *)b + s;
                         const char *l = swap ? x : y, *r = swap ? y : x;
                         C.ret[side] = fi == 0 ? f_strcmp(l, r)
                                     : fi == 1 ? f_strncmp(l, r, n)
                                     : fi == 2 ? f_strcasecmp(l, r)
                                     : fi == 3 ? f_strncasecmp(l, r, n)
                                               : f_strverscmp(l, r));
                    finish("%s(%s, %s, %zu), NUL at %d, variant %d, k %d", names[fi], swap ? "buf" : "b + s",
                           swap ? "b + s" : "buf", n, p, v, k);
                }
        done();
        group(0, "%s(map + s1, map + s2%s)", names[fi], counted ? ", n" : "");
        for (int s1 = 0; s1 < 32; s1++)
            for (int s2 = 0; s2 < 32; s2++) {
                SAMPLE(3);
                letters(pat, 31, fi == 4 ? "01a" : caseless ? "aA" : "ab");
                if (rnd() & 1) pat[s1 + (int)(rnd() % (32 - s1))] = 0;
                size_t n = rnd() % 34;
                if (!start(pat)) continue;
                BOTH(const char *l = (const char *)b + s1, *r = (const char *)b + s2;
                     C.ret[side] = fi == 0 ? f_strcmp(l, r)
                                 : fi == 1 ? f_strncmp(l, r, n)
                                 : fi == 2 ? f_strcasecmp(l, r)
                                 : fi == 3 ? f_strncasecmp(l, r, n)
                                           : f_strverscmp(l, r));
                finish("%s(b + %d, b + %d, %zu)", names[fi], s1, s2, n);
            }
        done();
    }
    group(0, "wcscmp and wcsncmp(map + 4s, buf[, n]) and reversed, wide NUL at p >= s");
    for (int fi = 0; fi < 2; fi++)
        for (int p = 0; p < 8; p++)
            for (int s = 0; s <= p; s++)
                for (int v = 0; v < 4; v++) {
                    int len = p - s, k = (int)(rnd() % (len + 1));
                    wide(pat, p);
                    if (!start(pat)) continue;
                    memset(other, 0, sizeof other);
                    copy(other, pat + 4 * s, 4 * (len + 1));
                    int32_t w;
                    if (v == 1) { memcpy(&w, other + 4 * k, 4); w = w ? (int32_t)((uint32_t)w ^ 0x80000001u) : 7; memcpy(other + 4 * k, &w, 4); }
                    if (v == 2 && len) memset(other + 4 * k, 0, 4);
                    if (v == 3) { w = 0x41; memcpy(other + 4 * len, &w, 4); memset(other + 4 * len + 4, 0, 4); }
                    size_t n = rnd() % (len + 3);
                    int swap = rnd() & 1;
                    const wchar_t *x = W(other);
                    BOTH(const wchar_t *y = W(b + 4 * s);
                         const wchar_t *l = swap ? x : y, *r = swap ? y : x;
                         C.ret[side] = fi ? f_wcsncmp(l, r, n) : f_wcscmp(l, r));
                    finish("%s(%s, %s, %zu), NUL at %d, variant %d", fi ? "wcsncmp" : "wcscmp",
                           swap ? "buf" : "b + s", swap ? "b + s" : "buf", n, p, v);
                }
    done();
}

/* ---- strcpy, stpcpy, strncpy, stpncpy, strcat, strncat, wcscpy, wcscat ---- */

static void string_copies(void) {
    unsigned char pat[32], src[48];
    for (int fi = 0; fi < 2; fi++) {
        const char *name = fi ? "stpcpy" : "strcpy";
        char *(*f)(char *, const char *) = fi ? f_stpcpy : f_strcpy;
        group(0, "%s(buf, map + s), NUL at every p >= s", name);
        for (int p = 0; p < 32; p++)
            for (int s = 0; s <= p; s++) {
                letters(pat, p, "abc\x80");
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f((char *)o + 8, (const char *)b + s), o));
                finish("%s(buf + 8, b + %d), NUL at %d", name, s, p);
            }
        done();
        group(1, "%s(map + d, buf) for every length l with d + l + 1 <= 32", name);
        for (int d = 0; d < 32; d++)
            for (int l = 0; d + l + 1 <= 32; l++) {
                random_bytes(pat, 32);
                letters(src, l, "xyz\x90");
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f((char *)b + d, (const char *)src), b));
                finish("%s(b + %d, src of length %d)", name, d, l);
            }
        done();
    }
    for (int fi = 0; fi < 2; fi++) {
        const char *name = fi ? "stpncpy" : "strncpy";
        char *(*f)(char *, const char *, size_t) = fi ? f_stpncpy : f_strncpy;
        group(0, "%s(buf, map + s, n), NUL at p >= s, n up to 40", name);
        for (int s = 0; s < 32; s++)
            for (int n = 0; n <= 40; n++) {
                int p = s + (int)(rnd() % (32 - s));
                letters(pat, p, "ab\x80");
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f((char *)o + 8, (const char *)b + s, n), o));
                finish("%s(buf + 8, b + %d, %d), NUL at %d", name, s, n, p);
            }
        done();
        group(1, "%s(map + d, buf, n) for d + n <= 32, source shorter, as long or longer", name);
        for (int d = 0; d < 32; d++)
            for (int n = 0; d + n <= 32; n++) {
                int l = (int)(rnd() % (n + 4));
                random_bytes(pat, 32);
                letters(src, l, "xyz");
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f((char *)b + d, (const char *)src, n), b));
                finish("%s(b + %d, src of length %d, %d)", name, d, l, n);
            }
        done();
    }
    group(1, "strcat(map + d, buf): map string of length m, source of length l, d + m + l + 1 <= 32");
    for (int d = 0; d < 32; d++)
        for (int m = 0; d + m + 1 <= 32; m++) {
            int l = (int)(rnd() % (32 - d - m));
            letters(pat, d + m, "ab");
            letters(src, l, "xyz");
            if (!start(pat)) continue;
            BOTH(C.ret[side] = at(f_strcat((char *)b + d, (const char *)src), b));
            finish("strcat(b + %d, src of length %d), NUL at %d", d, l, d + m);
        }
    done();
    group(0, "strcat(buf, map + s): buffer string of length 0..8, NUL at p >= s");
    for (int p = 0; p < 32; p++)
        for (int s = 0; s <= p; s++) {
            int m = (int)(rnd() % 9);
            letters(pat, p, "ab");
            if (!start(pat)) continue;
            BOTH(letters(o + 8, m, "q"); C.ret[side] = at(f_strcat((char *)o + 8, (const char *)b + s), o));
            finish("strcat(buf + 8 of length %d, b + %d), NUL at %d", m, s, p);
        }
    done();
    group(1, "strncat(map + d, buf, n): map string of length m, source l, d + m + min(n, l) + 1 <= 32");
    for (int d = 0; d < 32; d++)
        for (int m = 0; d + m + 1 <= 32; m++)
            for (int v = 0; v < 2; v++) {
                int room = 32 - d - m - 1, n, l;
                if (v == 0) { n = (int)(rnd() % (room + 1)); l = (int)(rnd() % 40); } /* n bounds */
                else { l = (int)(rnd() % (room + 1)); n = l + (int)(rnd() % 20); }   /* l bounds */
                letters(pat, d + m, "ab");
                letters(src, l < 32 ? l : 32, "xyz");
                src[32] = 'w';
                for (int i = 33; i < 48; i++) src[i] = i < l ? 'w' : 0;
                if (!start(pat)) continue;
                BOTH(C.ret[side] = at(f_strncat((char *)b + d, (const char *)src, n), b));
                finish("strncat(b + %d, src of length %d, %d), NUL at %d", d, l, n, d + m);
            }
    done();
    group(0, "strncat(buf, map + s, n): NUL at p >= s or none within s + n <= 32");
    for (int s = 0; s < 32; s++)
        for (int n = 0; n <= 36; n++) {
            int p = n % 4 == 0 && s + n <= 32 ? 32 : s + (int)(rnd() % (32 - s));
            int m = (int)(rnd() % 9);
            letters(pat, p, "ab");
            if (!start(pat)) continue;
            BOTH(letters(o + 8, m, "q"); C.ret[side] = at(f_strncat((char *)o + 8, (const char *)b + s, n), o));
            finish("strncat(buf + 8 of length %d, b + %d, %d), NUL at %d", m, s, n, p);
        }
    done();
    group(0, "wcscpy(buf, map + 4s) and wcscat(buf, map + 4s), wide NUL at p >= s");
    for (int fi = 0; fi < 2; fi++)
        for (int p = 0; p < 8; p++)
            for (int s = 0; s <= p; s++) {
                wide(pat, p);
                if (!start(pat)) continue;
                BOTH(memset(o + 8, 0, 4); if (fi) { memset(o + 8, 0x41, 4); memset(o + 12, 0, 4); }
                     C.ret[side] = at((fi ? f_wcscat : f_wcscpy)(W(o + 8), W(b + 4 * s)), o));
                finish("%s(buf + 8, b + %d), NUL at %d", fi ? "wcscat" : "wcscpy", 4 * s, p);
            }
    done();
    group(1, "wcscpy(map + 4d, buf) and wcscat(map + 4d, buf), 4(d + m + l + 1) <= 32");
    for (int fi = 0; fi < 2; fi++)
        for (int d = 0; d < 8; d++)
            for (int m = 0; d + m + 1 <= 8; m += fi ? 1 : 8)
                for (int l = 0; d + m + l + 1 <= 8; l++) {
                    wide(pat, d + m);
                    wide(src, l);
                    if (!start(pat)) continue;
                    BOTH(C.ret[side] = at((fi ? f_wcscat : f_wcscpy)(W(b + 4 * d), W(src)), b));
                    finish("%s(b + %d, src of length %d), NUL at %d", fi ? "wcscat" : "wcscpy", 4 * d, l, d + m);
                }
    done();
}

/* ---- strspn, strcspn, strpbrk, strsep, wcsspn, wcspbrk, wcsstr ---- */

static void spans(void) {
    unsigned char pat[32], set[40];
    static const char *const names[] = {"strspn", "strcspn", "strpbrk"};
    for (int fi = 0; fi < 3; fi++) {
        group(0, "%s with the string or the set in the map, NUL at p >= s, sets of 0..20 bytes", names[fi]);
        for (int p = 0; p < 32; p++)
            for (int s = 0; s <= p; s++) {
                int k = (int)(rnd() % 21), set_in_map = rnd() & 1;
                letters(pat, p, "abcdefgh");
                letters(set, k, "abcdefghq");
                if (!start(pat)) continue;
                BOTH(const char *str = set_in_map ? (const char *)set : (const char *)b + s;
                     const char *acc = set_in_map ? (const char *)b + s : (const char *)set;
                     const void *from = set_in_map ? (const void *)set : (const void *)b;
                     C.ret[side] = fi == 0 ? (long)f_strspn(str, acc)
                                 : fi == 1 ? (long)f_strcspn(str, acc)
                                           : at(f_strpbrk(str, acc), from));
                finish("%s(%s, %s), NUL at %d, other of length %d", names[fi], set_in_map ? "buf" : "b + s",
                       set_in_map ? "b + s" : "buf", p, k);
            }
        done();
    }
    group(1, "strsep(&p, delimiters) until p is NULL, p = map + s, NUL at q >= s");
    for (int q = 0; q < 32; q++)
        for (int s = 0; s <= q; s++) {
            letters(pat, q, "ab,;");
            if (!start(pat)) continue;
            BOTH(char *p = (char *)b + s; long h = 0;
                 for (int i = 0; i < 40 && p; i++) {
                     char *tok = f_strsep(&p, ",;");
                     h = h * 131 + at(tok, b) * 7 + at(p, b);
                 }
                 C.ret[side] = h);
            finish("strsep from b + %d, NUL at %d", s, q);
        }
    done();
    group(0, "wcsspn, wcspbrk and wcsstr(map + 4s, buf) and (buf, map + 4s), wide NUL at p >= s");
    for (int fi = 0; fi < 3; fi++)
        for (int p = 0; p < 8; p++)
            for (int s = 0; s <= p; s++)
                for (int v = 0; v < 3; v++) {
                    int k = (int)(rnd() % 5), in_map = v != 2;
                    wide(pat, p);
                    wide(set, 8);
                    memset(set + 4 * k, 0, 4);
                    if (fi == 2 && v == 1 && p > s) { /* a needle that is there */
                        int at0 = s + (int)(rnd() % (p - s)), l = 1 + (int)(rnd() % (p - at0));
                        copy(set, pat + 4 * at0, 4 * l);
                        memset(set + 4 * l, 0, 4);
                    }
                    if (!start(pat)) continue;
                    BOTH(const wchar_t *str = in_map ? W(b + 4 * s) : W(set);
                         const wchar_t *other = in_map ? W(set) : W(b + 4 * s);
                         const void *from = in_map ? (const void *)b : (const void *)set;
                         C.ret[side] = fi == 0 ? (long)f_wcsspn(str, other)
                                     : fi == 1 ? at(f_wcspbrk(str, other), from)
                                               : at(f_wcsstr(str, other), from));
                    finish("%s, string %s, NUL at %d, variant %d", fi == 0 ? "wcsspn" : fi == 1 ? "wcspbrk" : "wcsstr",
                           in_map ? "b + s" : "buf", p, v);
                }
    done();
}

/* ---- strdup, strndup, swab, memfrob ---- */

static void others(void) {
    unsigned char pat[32];
    group(0, "strdup(map + s) and strndup(map + s, n), NUL at p >= s");
    for (int p = 0; p < 32; p++)
        for (int s = 0; s <= p; s++) {
            int n = (int)(rnd() % 36), dup = rnd() & 1;
            letters(pat, p, "abc");
            if (!start(pat)) continue;
            BOTH(char *d = dup ? f_strdup((const char *)b + s) : f_strndup((const char *)b + s, n);
                 C.ret[side] = d ? (long)strlen(d) : -1;
                 if (d) { copy(o, (unsigned char *)d, (int)strlen(d) + 1); free(d); });
            finish("%s(b + %d, %d), NUL at %d", dup ? "strdup" : "strndup", s, n, p);
        }
    done();
    group(1, "swab(map + s, buf, n), swab(buf, map + d, n), swab(map + s, map + d, n) (disjoint)");
    for (int s = 0; s < 32; s++)
        for (int n = 0; s + n <= 32; n++)
            for (int v = 0; v < 3; v++) {
                SAMPLE(2);
                int d = (int)(rnd() % (33 - n));
                if (v == 2 && (d < s ? s - d : d - s) < n) continue;
                random_bytes(pat, 32);
                if (!start(pat)) continue;
                BOTH(if (v == 0) f_swab(b + s, o + 8, n);
                     else if (v == 1) f_swab(o + 8, b + d, n);
                     else f_swab(b + s, b + d, n));
                finish("swab variant %d, s %d, d %d, n %d", v, s, d, n);
            }
    done();
    group(1, "memfrob(map + d, n) for d + n <= 32");
    for (int d = 0; d < 32; d++)
        for (int n = 0; d + n <= 32; n++) {
            random_bytes(pat, 32);
            if (!start(pat)) continue;
            BOTH(C.ret[side] = at(f_memfrob(b + d, n), b));
            finish("memfrob(b + %d, %d)", d, n);
        }
    done();
}

/* ---- which implementation: libc's symbols through its build-id ---- */

static struct {
    uintptr_t base;
    char path[256];
    char build_id[64];
    char symfile[512];
    unsigned char *elf;
    size_t elf_len;
    const Elf64_Sym *syms;
    size_t nsyms;
    const char *strtab;
} L;

static int find_libc(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "/libc.so")) return 0;
    L.base = info->dlpi_addr;
    snprintf(L.path, sizeof L.path, "%s", info->dlpi_name);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)p;
            const unsigned char *name = p + sizeof *n, *desc = name + ((n->n_namesz + 3) & ~3u);
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && !memcmp(name, "GNU", 4) && n->n_descsz <= 31)
                for (unsigned j = 0; j < n->n_descsz; j++) sprintf(L.build_id + 2 * j, "%02x", desc[j]);
            p = desc + ((n->n_descsz + 3) & ~3u);
        }
    }
    return 1;
}

static int load_symbols(const char *file) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)sizeof(Elf64_Ehdr)) { close(fd); return 0; }
    unsigned char *buf = malloc((size_t)sb.st_size);
    size_t got = 0;
    while (buf && got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != (size_t)sb.st_size) { free(buf); return 0; }
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)buf;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > got) {
        free(buf);
        return 0;
    }
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(buf + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr *st = &sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > got || st->sh_offset + st->sh_size > got) break;
        L.elf = buf;
        L.elf_len = got;
        L.syms = (const Elf64_Sym *)(buf + sh[i].sh_offset);
        L.nsyms = sh[i].sh_size / sizeof(Elf64_Sym);
        L.strtab = (const char *)(buf + st->sh_offset);
        snprintf(L.symfile, sizeof L.symfile, "%s", file);
        return 1;
    }
    free(buf);
    return 0;
}

static uintptr_t libc_base(void) { return L.base; }

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The function symbol that starts at `off` (preferring __<fn>_..., then another __ name that is
 * not a __GI_ alias), or the one containing it when `containing`; its start and size. */
static const char *symbol(uint64_t off, const char *fn, int containing, uint64_t *start, uint64_t *size) {
    if (!L.syms) return NULL;
    const char *best = NULL;
    int best_rank = -1;
    char want[64];
    snprintf(want, sizeof want, "__%s_", fn ? fn : "");
    for (size_t i = 0; i < L.nsyms; i++) {
        const Elf64_Sym *s = &L.syms[i];
        if (ELF64_ST_TYPE(s->st_info) != STT_FUNC || !s->st_name) continue;
        if (containing ? !(s->st_value <= off && off < s->st_value + s->st_size) : s->st_value != off) continue;
        const char *name = L.strtab + s->st_name;
        int rank = fn && starts(name, want) ? 3 : starts(name, "__GI_") ? 0 : starts(name, "__") ? 2 : 1;
        if (rank > best_rank) {
            best = name;
            best_rank = rank;
            *start = s->st_value;
            *size = s->st_size;
        }
    }
    return best;
}

/* ---- the rip slot, copied by memcpy (which instruction read the map) ---- */

/* Globals the asm names (rip-relative), as in memcpy_snapshot.c. */
uint64_t g_snap[18];
void *(*volatile g_probe_copy)(void *, const void *, size_t);

static void probe_memcpy(void) {
    g_probe_copy = f_memcpy;
    __asm__ volatile("leaq g_snap(%%rip), %%rdi\n\t"
                     "xorl %%esi, %%esi\n\t"
                     "movl $0x90, %%edx\n\t"
                     "call *g_probe_copy(%%rip)\n\t"
                     :
                     :
                     : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc",
                       "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                       "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    uint64_t rip = g_snap[OF_RIP / 8], off = rip - L.base, start = 0, size = 0;
    Dl_info where;
    int in_libc = dladdr((void *)rip, &where) && where.dli_fname && strstr(where.dli_fname, "/libc.so");
    const char *sym = in_libc && L.syms ? symbol(off, NULL, 1, &start, &size) : NULL;
    printf("probe memcpy(buf, 0, 0x90): the rip slot was read by the instruction ending at libc+%#llx",
           (unsigned long long)off);
    if (sym) printf(" (%s+%#llx)", sym, (unsigned long long)(off - start));
    printf("%s\n", in_libc ? "" : " (not in the C library: MISMATCH)");
    if (!in_libc) g_total_bad++;
    if (in_libc) {
        const unsigned char *p = (const unsigned char *)rip - 16;
        printf("bytes before rip:");
        for (int i = 0; i < 16; i++) printf(" %02x", p[i]);
        printf("\n");
    }
}

/* "evex" for __strchr_evex, "avx512_unaligned_erms" for __memmove_avx512_unaligned_erms,
 * "generic" for a function that has no variants (strsep, swab, ...). */
static const char *family(const char *fn, void *impl) {
    uint64_t start = 0, size = 0;
    const char *sym = symbol((uintptr_t)impl - L.base, fn, 0, &start, &size);
    if (!sym) return "?";
    const char *u = starts(sym, "__") ? strchr(sym + 2, '_') : NULL;
    static const char *const isa[] = {"sse", "ssse3", "avx", "evex", "erms"};
    for (size_t i = 0; u && i < sizeof isa / sizeof isa[0]; i++)
        if (starts(u + 1, isa[i])) return u + 1;
    return "generic";
}

/* ---- main ---- */

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL); /* before map_registers(): of passes on what is not its own */
    if (map_registers() != 0) return 2;
    g_full = getenv("OF_STRINGS_FULL") && !strcmp(getenv("OF_STRINGS_FULL"), "1");
    const char *tun = getenv("GLIBC_TUNABLES");
    printf("GLIBC_TUNABLES=%s\n", tun ? tun : "(unset)");
    dl_iterate_phdr(find_libc, NULL);
    if (L.build_id[0]) {
        char file[512];
        snprintf(file, sizeof file, "/usr/lib/debug/.build-id/%.2s/%s.debug", L.build_id, L.build_id + 2);
        if (!load_symbols(file)) load_symbols(L.path);
    }
    printf("libc: %s, build-id %s, symbols: %s\n", L.path, L.build_id[0] ? L.build_id : "(none)",
           L.syms ? L.symfile : "(none: install the C library's debug symbols to name implementations)");

    for (int i = 0; i < NFNS; i++) {
        void *p = dlsym(RTLD_DEFAULT, g_fns[i].name);
        if (!p) {
            printf("dlsym(%s) failed: MISMATCH\n", g_fns[i].name);
            return 1;
        }
        if (g_fns[i].slot) *g_fns[i].slot = p;
        uint64_t off = (uintptr_t)p - L.base, start = 0, size = 0;
        const char *sym = L.syms ? symbol(off, g_fns[i].name, 0, &start, &size) : NULL;
        if (g_fns[i].why_left_out)
            printf("left out %s %s %#llx %#llx: %s\n", g_fns[i].name, sym ? sym : "?", (unsigned long long)off,
                   (unsigned long long)size, g_fns[i].why_left_out);
        else
            printf("impl %s %s %#llx %#llx\n", g_fns[i].name, sym ? sym : "?", (unsigned long long)off,
                   (unsigned long long)size);
    }
    fflush(stdout);

    probe_memcpy();
    copies("memcpy", (void *)f_memcpy, K_RET_DST, 0);
    copies("memmove", (void *)f_memmove, K_RET_DST, 1);
    copies("mempcpy", (void *)f_mempcpy, K_RET_END, 0);
    copies("bcopy", (void *)f_bcopy, K_BCOPY, 1);
    copies("wmemcpy", (void *)f_wmemcpy, K_WIDE_DST, 0);
    copies("wmemmove", (void *)f_wmemmove, K_WIDE_DST, 1);
    copies("wmempcpy", (void *)f_wmempcpy, K_WIDE_END, 0);
    sets();
    compares("memcmp", f_memcmp, 1);
    compares("bcmp", f_bcmp, 1);
    compares("__memcmpeq", f___memcmpeq, 1);
    compares("wmemcmp", call_wmemcmp, 4);
    searches();
    lengths();
    string_compares();
    string_copies();
    spans();
    others();

    /* The variant: the implementations grouped by what follows __<function>_ in their names. */
    if (L.syms) {
        const char *fam[NFNS];
        for (int i = 0; i < NFNS; i++) fam[i] = g_fns[i].why_left_out ? NULL : family(g_fns[i].name, *g_fns[i].slot);
        printf("variant:");
        for (int i = 0; i < NFNS; i++) {
            int first = 1;
            for (int j = 0; j < i; j++) first &= !(fam[j] && fam[i] && !strcmp(fam[i], fam[j]));
            if (!fam[i] || !first) continue;
            printf(" %s (", fam[i]);
            for (int j = i; j < NFNS; j++)
                if (fam[j] && !strcmp(fam[i], fam[j])) printf("%s%s", j == i ? "" : " ", g_fns[j].name);
            printf(");");
        }
        printf("\n");
    } else {
        printf("variant: unknown by name (no symbols); the probe line gives memcpy's vector width\n");
    }
    printf("%d groups, %d cases compared, %d not comparable (glibc read past the map), %d mismatches: %s\n",
           g_groups, g_total_cases, g_total_skipped, g_total_bad,
           g_total_bad ? "MISMATCH" : "ok");
    return g_total_bad ? 1 : 0;
}
