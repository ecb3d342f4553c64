/* A PROT_NONE page at the very start of an aligned pager window.
 *
 * Maps an anonymous region that starts on a 256 KiB boundary (64 pages, the
 * daemon's default fault window) and makes only its first page PROT_NONE,
 * like a guard page below a stack. The other pages hold a known pattern.
 * Prints "ready <pid>", waits for a line on stdin, then reads the pattern
 * pages and prints "guard ok <sum>" or "guard FAILED ...".
 *
 * With argument "region", page 65 (in the middle of the pattern) is also a
 * guard region (MADV_GUARD_INSTALL): it is skipped, and a kernel read of it
 * must fail with EFAULT ("guard FAILED region" otherwise).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define PAGE 4096ul
#define WINDOW (64 * PAGE)

int main(int argc, char **argv) {
    int region = argc > 1 && !strcmp(argv[1], "region");
    size_t len = 2 * WINDOW;
    char *m = mmap(NULL, len + WINDOW, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    char *a = (char *)(((uintptr_t)m + WINDOW - 1) & ~(WINDOW - 1));
    if (a > m) munmap(m, a - m);
    if (m + len + WINDOW > a + len) munmap(a + len, (m + len + WINDOW) - (a + len));
    uint64_t *w = (uint64_t *)(a + PAGE);
    size_t words = (len - PAGE) / 8;
    for (size_t i = 0; i < words; i++) w[i] = i * 0x9E3779B97F4A7C15ull ^ 0x5a5a;
    if (mprotect(a, PAGE, PROT_NONE) != 0) return 1;
    char *guarded = a + 65 * PAGE;
    if (region && madvise(guarded, PAGE, MADV_GUARD_INSTALL) != 0) return 1;

    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 1;
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++) {
        if (region && (char *)&w[i] >= guarded && (char *)&w[i] < guarded + PAGE) continue;
        if (w[i] != (i * 0x9E3779B97F4A7C15ull ^ 0x5a5a)) {
            printf("guard FAILED word %zu\n", i);
            return 1;
        }
        sum += w[i];
    }
    if (region) {
        int p[2];
        if (pipe(p) != 0 || write(p[1], guarded, 1) != -1 || errno != EFAULT) {
            printf("guard FAILED region\n");
            return 1;
        }
    }
    printf("guard ok %#llx\n", (unsigned long long)sum);
    return 0;
}
