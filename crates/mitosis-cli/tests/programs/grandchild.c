/* A process whose child forks a grandchild that checks the memory it
 * inherited, slowly, page by page.
 *
 * argv[1]: MiB to allocate. Page i holds the byte (i % 251) + 1 everywhere
 * (never zero). Prints "ready <pid>". On the line "fork" it forks a
 * grandchild and prints "forked <pid>"; the grandchild reads every page
 * once, 2 ms apart, prints "gc progress <page>" every 64 pages, "WRONG
 * <page> <byte>" and exits 1 on a page that does not hold its byte, and "gc
 * done" at the end. On "exit N" the process exits with status N.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static unsigned char expected(size_t page) { return (unsigned char)(page % 251 + 1); }

static void check_slowly(volatile unsigned char *mem, size_t pages) {
    struct timespec pause = {0, 2 * 1000 * 1000};
    for (size_t i = 0; i < pages; i++) {
        unsigned char first = mem[i * PAGE], last = mem[i * PAGE + PAGE - 1];
        if (first != expected(i) || last != expected(i)) {
            printf("WRONG %zu %u\n", i, first != expected(i) ? first : last);
            exit(1);
        }
        if (i % 64 == 0) printf("gc progress %zu\n", i);
        nanosleep(&pause, NULL);
    }
    printf("gc done\n");
    exit(0);
}

int main(int argc, char **argv) {
    size_t pages = (size_t)atoi(argc > 1 ? argv[1] : "16") * 256;
    unsigned char *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 2;
    for (size_t i = 0; i < pages; i++) memset(mem + i * PAGE, expected(i), PAGE);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "fork", 4) == 0) {
            pid_t gc = fork();
            if (gc == 0) check_slowly(mem, pages);
            printf("forked %d\n", gc);
        } else if (strncmp(line, "exit ", 5) == 0) {
            return atoi(line + 5);
        }
    }
    return 0;
}
