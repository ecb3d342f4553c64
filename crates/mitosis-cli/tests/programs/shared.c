/* Shared anonymous memory across a remote fork.
 *
 *   shared [--keep-helper]
 *             daemonizes the way CRIU's zdtm tests do: maps one shared
 *             anonymous page, forks, and the parent waits on it until the
 *             child says it runs, then exits (the page stays, mapped by the
 *             child alone). The child maps three more shared anonymous pages
 *             (a "big" region), writes "seed-0" at page 0 and "seed-2" at
 *             page 2 (page 1 is never touched), protects page 2 read-only
 *             (two mappings of one object), prints "ready <pid>" and answers
 *             stdin lines. With --keep-helper, a helper process forked by the
 *             child keeps mapping the big region (prepare must refuse).
 *
 *   scribble  overwrites page 0 and the handshake page with "later", prints
 *             "scribbled" (what a seed does after the prepare instant)
 *   report    "handshake <word>", "page0 <text>", "page1 <zero|nonzero>",
 *             "page2 <text>" and "maps <n>" (how many of its mappings are
 *             shared anonymous memory)
 *   forkshare forks a process that writes "fork" into page 1 and exits;
 *             prints "forkshare <text of page 1 after it exited>": shared
 *             memory is still shared with the child's own forks
 *   exit      exit 0
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static volatile int *handshake;
static char *big;

static int shared_maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, " rw-s ") || strstr(line, " r--s "))
            if (strstr(line, "/dev/zero (deleted)")) n++;
    if (f) fclose(f);
    return n;
}

int main(int argc, char **argv) {
    int keep_helper = argc > 1 && !strcmp(argv[1], "--keep-helper");
    handshake = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (handshake == MAP_FAILED) { perror("mmap"); return 1; }
    handshake[0] = 1;
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid > 0) {
        while (handshake[0] == 1) usleep(1000);
        _exit(0);
    }
    big = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (big == MAP_FAILED) { perror("mmap"); return 1; }
    strcpy(big, "seed-0");
    strcpy(big + 2 * PAGE, "seed-2");
    if (mprotect(big + 2 * PAGE, PAGE, PROT_READ)) { perror("mprotect"); return 1; }
    if (keep_helper && fork() == 0) {
        for (;;) pause();
    }
    handshake[0] = 2;
    /* The daemonizing parent has gone once it no longer maps the page. */
    while (getppid() == pid) usleep(1000);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "scribble")) {
            strcpy(big, "later");
            handshake[0] = 3;
            printf("scribbled\n");
        } else if (!strcmp(line, "report")) {
            int nonzero = 0;
            for (int i = 0; i < PAGE; i++) nonzero |= big[PAGE + i];
            printf("handshake %d\n", handshake[0]);
            printf("page0 %s\n", big);
            printf("page1 %s\n", nonzero ? "nonzero" : "zero");
            printf("page2 %s\n", big + 2 * PAGE);
            printf("maps %d\n", shared_maps());
        } else if (!strcmp(line, "forkshare")) {
            pid_t c = fork();
            if (c == 0) {
                strcpy(big + PAGE, "fork");
                _exit(0);
            }
            int st;
            waitpid(c, &st, 0);
            printf("forkshare %s\n", big + PAGE);
        } else if (!strcmp(line, "exit")) {
            return 0;
        }
        fflush(stdout);
    }
    return 0;
}
