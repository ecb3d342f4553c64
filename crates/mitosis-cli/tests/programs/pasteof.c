/* A file mapping longer than its file: argv[1] is a file of one page (made
 * by the test), mapped privately read-only over four pages, of which only
 * the first is backed (touching the others would be SIGBUS). Prints
 * "ready <pid>"; on a line "check" it prints "check <sum of the first page>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) return 3;
    const unsigned char *p = mmap(NULL, 4 * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return 4;
    close(fd);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        uint64_t s = 0;
        for (int i = 0; i < 4096; i++) s = s * 31 + p[i];
        printf("check %llu\n", (unsigned long long)s);
        fflush(stdout);
    }
    return 0;
}
