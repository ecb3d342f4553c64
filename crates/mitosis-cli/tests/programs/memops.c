/* Memory operations in a resumed child, on memory it has not touched yet.
 *
 * Maps PARTS regions of 4 MiB each filled with a pattern, prints
 * "ready <pid>" and answers stdin lines (each on a region nobody has touched
 * since the prepare):
 *   madvise  MADV_DONTNEED on region 0: it must then read as zeros
 *   mremap   moves region 1 elsewhere: the pattern must move with it
 *   remap    munmap region 2 and map fresh memory there: zeros
 *   fork     a local fork() verifies region 3 in the forked process
 *   threads  four threads verify region 4 concurrently
 *   exec     runs /bin/echo through system()
 *   verify   verifies regions 5..PARTS-1
 *   read     reads (verifies) every region and the brk heap, writing nothing
 *   brk      grows the brk heap (filled with a pattern before the prepare)
 *            by 16 MiB, checks old and new parts, shrinks it back; prints
 *            where the heap ended
 *   exit     exits 0
 * "memops shared" instead makes a shared anonymous mapping, forks a helper
 * that keeps it (memory shared with a process that stays behind, which
 * mitosis refuses to prepare) and waits.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PARTS 7
#define PART (4ul << 20)

static char *base;
static char *heap0;
#define HEAP (8ul << 20)

static uint64_t word(size_t i) { return (i * 0x9E3779B97F4A7C15ull) ^ 0xabcdef; }

static int check(const char *p, size_t from, size_t to) {
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = from; i < to; i++)
        if (w[i - from] != word(i)) return 0;
    return 1;
}

static int zeros(const char *p, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (p[i]) return 0;
    return 1;
}

static size_t first(int part) { return part * PART / 8; }

struct job { int part, quarter, ok; };

static void *verify_quarter(void *arg) {
    struct job *j = arg;
    size_t q = PART / 4;
    const char *p = base + j->part * PART + j->quarter * q;
    j->ok = check(p, first(j->part) + j->quarter * q / 8, first(j->part) + (j->quarter + 1) * q / 8);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "shared")) {
        /* Shared with a helper process that stays behind. */
        char *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        s[0] = 1;
        if (fork() == 0)
            for (;;) pause();
        printf("ready %d\n", getpid());
        fflush(stdout);
        char line[64];
        while (fgets(line, sizeof line, stdin)) {}
        return 0;
    }
    base = mmap(NULL, PARTS * PART, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return 1;
    uint64_t *w = (uint64_t *)base;
    for (size_t i = 0; i < PARTS * PART / 8; i++) w[i] = word(i);
    heap0 = sbrk(HEAP);
    if (heap0 == (void *)-1) return 1;
    for (size_t i = 0; i < HEAP / 8; i++) ((uint64_t *)heap0)[i] = word(i + 12345);
    printf("ready %d\n", getpid());
    fflush(stdout);

    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "madvise", 7)) {
            char *p = base + 0 * PART;
            madvise(p, PART, MADV_DONTNEED);
            printf("madvise zeros=%d\n", zeros(p, PART));
        } else if (!strncmp(line, "mremap", 6)) {
            char *p = base + 1 * PART;
            char *to = mmap(NULL, PART, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            char *q = mremap(p, PART, PART, MREMAP_MAYMOVE | MREMAP_FIXED, to);
            int moved = q == to && check(q, first(1), first(2));
            /* The old place is now unmapped: map it again, it must be zeros. */
            char *again = mmap(p, PART, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            printf("mremap moved=%d old-place-zeros=%d\n", moved, again == p && zeros(p, PART));
        } else if (!strncmp(line, "remap", 5)) {
            char *p = base + 2 * PART;
            munmap(p, PART);
            char *q = mmap(p, PART, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            printf("remap zeros=%d\n", q == p && zeros(p, PART));
        } else if (!strncmp(line, "fork", 4)) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) _exit(check(base + 3 * PART, first(3), first(4)) ? 0 : 1);
            int st = -1;
            waitpid(pid, &st, 0);
            printf("fork child-verified=%d status=%#x parent-verified=%d\n",
                   WIFEXITED(st) && WEXITSTATUS(st) == 0, st, check(base + 3 * PART, first(3), first(4)));
        } else if (!strncmp(line, "threads", 7)) {
            pthread_t t[4];
            struct job j[4];
            for (int i = 0; i < 4; i++) {
                j[i] = (struct job){.part = 4, .quarter = i, .ok = 0};
                pthread_create(&t[i], NULL, verify_quarter, &j[i]);
            }
            int ok = 1;
            for (int i = 0; i < 4; i++) {
                pthread_join(t[i], NULL);
                ok &= j[i].ok;
            }
            printf("threads verified=%d\n", ok);
        } else if (!strncmp(line, "exec", 4)) {
            fflush(stdout);
            int st = system("/bin/echo exec works");
            printf("exec status=%d\n", st);
        } else if (!strncmp(line, "verify", 6)) {
            int ok = 1;
            for (int p = 5; p < PARTS; p++) ok &= check(base + p * PART, first(p), first(p + 1));
            printf("verify ok=%d\n", ok);
        } else if (!strncmp(line, "read", 4)) {
            int ok = 1;
            for (int p = 0; p < PARTS; p++) ok &= check(base + p * PART, first(p), first(p + 1));
            for (size_t i = 0; i < HEAP / 8; i++) ok &= ((uint64_t *)heap0)[i] == word(i + 12345);
            printf("read ok=%d\n", ok);
        } else if (!strncmp(line, "brk", 3)) {
            char *top = sbrk(0);
            char *more = sbrk(16ul << 20);
            int grown = more == top;
            for (size_t i = 0; grown && i < (16ul << 20); i += 4096) more[i] = (char)(i >> 12);
            int ok = 1;
            for (size_t i = 0; grown && i < (16ul << 20); i += 4096) ok &= more[i] == (char)(i >> 12);
            for (size_t i = 0; i < HEAP / 8; i++) ok &= ((uint64_t *)heap0)[i] == word(i + 12345);
            int shrunk = sbrk(-(long)(16ul << 20)) != (void *)-1 && sbrk(0) == top;
            printf("brk grown=%d ok=%d shrunk=%d top=%p\n", grown, ok, shrunk, (void *)top);
        } else if (!strncmp(line, "exit", 4)) {
            return 0;
        }
        fflush(stdout);
    }
    return 0;
}
