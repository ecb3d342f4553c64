/*
 * stress_parent: the C parent of `mitosis stress fork` and `mitosis stress soak`.
 *
 * Usage: stress_parent <MiB> <key-hex>
 *
 * It maps <MiB> of private anonymous memory and fills every 8-byte word i
 * with mix(key, i), a value that depends on the key and on the word's
 * position, so that a page served at the wrong address, a page of another
 * generation (another key), a zero page or a torn page all differ from what
 * is expected. It prints `ready <pid>` and then answers lines on stdin; the
 * harness prepares it by pid while it waits in read(2).
 *
 *   fill <key-hex>     fill again with another key; answers `filled <key-hex>`
 *   verify <key-hex>   check every word of every page (and the key itself)
 *                      against <key-hex>
 *   verify self        the same against the key kept in this process's own
 *                      memory (a child of whichever generation it came from)
 *   exit               exit 0
 *
 * A child of a seed of this process wakes up in that same read(2), with the
 * resumer's stdin, so it reads the harness's `verify` line. It prints
 * `ok key=<hex> pages=<n>` and exits 0 only when every word is right;
 * otherwise it prints one `WRONG ...` line saying how many words and pages
 * differ and the first difference, and exits 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))

static uint64_t *region;
static size_t words;
/* The key of the current fill, in this process's own memory. */
static uint64_t key;

/* splitmix64 of the key and the word's index. */
static uint64_t mix(uint64_t k, uint64_t i) {
    uint64_t z = k ^ (i * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill(uint64_t k) {
    for (size_t i = 0; i < words; i++) region[i] = mix(k, i);
    key = k;
}

/* Answers one line and flushes: nothing may stay buffered at prepare time,
 * or every child would print it again. */
static void answer(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void answer(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static int verify(uint64_t expect) {
    size_t bad_words = 0, bad_pages = 0, first = (size_t)-1;
    uint64_t first_got = 0;
    for (size_t p = 0; p * WORDS_PER_PAGE < words; p++) {
        size_t bad_here = 0;
        for (size_t w = 0; w < WORDS_PER_PAGE; w++) {
            size_t i = p * WORDS_PER_PAGE + w;
            uint64_t got = region[i];
            if (got != mix(expect, i)) {
                if (first == (size_t)-1) {
                    first = i;
                    first_got = got;
                }
                bad_here++;
            }
        }
        bad_words += bad_here;
        bad_pages += bad_here != 0;
    }
    size_t pages = words / WORDS_PER_PAGE;
    if (bad_words == 0 && key == expect) {
        answer("ok key=%016" PRIx64 " pages=%zu\n", key, pages);
        return 0;
    }
    if (bad_words == 0) {
        answer("WRONG key %016" PRIx64 " in memory, expected %016" PRIx64 " (all %zu pages match the expected key)\n", key, expect,
               pages);
        return 1;
    }
    answer("WRONG %zu of %zu words in %zu of %zu pages differ from key %016" PRIx64 " (own key %016" PRIx64
           "); first at page %zu offset %zu: got %016" PRIx64 ", expected %016" PRIx64 "\n",
           bad_words, words, bad_pages, pages, expect, key, first / WORDS_PER_PAGE, (first % WORDS_PER_PAGE) * sizeof(uint64_t),
           first_got, mix(expect, first));
    return 1;
}

/* One line from stdin with read(2) (no stdio buffering, so a child reads
 * its own stdin from the start). Returns 0 at end of file. */
static int read_line(char *buf, size_t size) {
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = read(0, buf + n, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (buf[n] == '\n') break;
        n++;
    }
    buf[n] = 0;
    return n > 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <MiB> <key-hex>\n", argv[0]);
        return 64;
    }
    size_t mib = strtoull(argv[1], NULL, 10);
    if (mib == 0) {
        fprintf(stderr, "stress_parent: <MiB> must be at least 1\n");
        return 64;
    }
    size_t bytes = mib << 20;
    region = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
        fprintf(stderr, "stress_parent: mmap of %zu MiB: %s\n", mib, strerror(errno));
        return 70;
    }
    words = bytes / sizeof(uint64_t);
    fill(strtoull(argv[2], NULL, 16));
    answer("ready %d\n", (int)getpid());

    char line[128];
    while (read_line(line, sizeof line)) {
        if (strncmp(line, "fill ", 5) == 0) {
            uint64_t k = strtoull(line + 5, NULL, 16);
            fill(k);
            answer("filled %016" PRIx64 "\n", k);
        } else if (strcmp(line, "verify self") == 0) {
            return verify(key);
        } else if (strncmp(line, "verify ", 7) == 0) {
            return verify(strtoull(line + 7, NULL, 16));
        } else if (strcmp(line, "exit") == 0) {
            return 0;
        } else {
            fprintf(stderr, "stress_parent: unknown command %s\n", line);
            return 64;
        }
    }
    fprintf(stderr, "stress_parent: end of input before a command\n");
    return 64;
}
