/* Shared file mappings across a remote fork.
 *
 *   sharedfile FILE  maps the first two pages of FILE twice, shared: once
 *               read-write (through a read-write descriptor) and once
 *               read-only (through a read-only one), closes both
 *               descriptors, writes "seed" at the start of the read-write
 *               mapping, prints "ready <pid>" and answers stdin lines:
 *
 *   report   "rw <text at offset 0>" and "ro <text at offset 4096>", each
 *            read through a different mapping
 *   write    writes "child" at offset 4196 through the read-write mapping
 *            and msyncs it: "written"
 *   exit     exit 0
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int rw = open(argv[1], O_RDWR), ro = open(argv[1], O_RDONLY);
    if (rw < 0 || ro < 0) { perror("open"); return 3; }
    char *w = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
    const char *r = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, ro, 0);
    if (w == MAP_FAILED || r == MAP_FAILED) { perror("mmap"); return 4; }
    close(rw);
    close(ro);
    memcpy(w, "seed", 5);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "report", 6)) {
            printf("rw %.32s\nro %.32s\n", w, r + PAGE);
        } else if (!strncmp(line, "write", 5)) {
            memcpy(w + PAGE + 100, "child", 6);
            if (msync(w, 2 * PAGE, MS_SYNC)) { perror("msync"); return 5; }
            printf("written\n");
        } else if (!strncmp(line, "exit", 4)) {
            return 0;
        }
        fflush(stdout);
    }
    return 0;
}
