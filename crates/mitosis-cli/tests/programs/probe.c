/* A seed that reports what its world looks like, for the container tests.
 *
 *   probe            prints "ready <pid>", then answers one command per stdin line:
 *
 *   hostname         "hostname <name>"
 *   pid              "pid <getpid()>"
 *   procs            "procs <n>": numeric entries of /proc (processes it can see)
 *   netdevs          "netdevs <n>": network interfaces it can see (/proc/net/dev)
 *   signal <pid>     "signal <pid> ok" or "signal <pid> <errno name>" (kill(pid, 0))
 *   write <path>     "write <path> ok" or "write <path> <errno name>" (create + write)
 *   alloc <MiB>      "alloc <MiB> ok" after allocating and touching that much memory
 *   forks <n>        "forks <k>": how many of n forks succeeded (the children wait for
 *                    a pipe to close, then exit and are reaped)
 *   spin <ms>        "spin <cpu ms>": busy for that much wall time, then the CPU time it got
 *   orphan           forks a grandchild that outlives its parent (reaped by the container's
 *                    init), "orphan <pid>"
 *   exit <n>         exits with status n
 *
 * At end of input it prints "eof" and sleeps up to a minute (a detached
 * child with /dev/null as stdin keeps running until it is killed).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *err_name(int e) {
    switch (e) {
    case EROFS: return "EROFS";
    case ESRCH: return "ESRCH";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    default: return "other";
    }
}

int main(void) {
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char arg[480] = "";
        if (strcmp(line, "hostname") == 0) {
            char h[128] = "";
            gethostname(h, sizeof h);
            printf("hostname %s\n", h);
        } else if (strcmp(line, "pid") == 0) {
            printf("pid %d\n", getpid());
        } else if (strcmp(line, "procs") == 0) {
            int n = 0;
            DIR *d = opendir("/proc");
            struct dirent *e;
            while (d && (e = readdir(d)))
                if (e->d_name[0] >= '0' && e->d_name[0] <= '9') n++;
            if (d) closedir(d);
            printf("procs %d\n", n);
        } else if (strcmp(line, "netdevs") == 0) {
            int n = 0;
            char l[256];
            FILE *f = fopen("/proc/net/dev", "r");
            while (f && fgets(l, sizeof l, f))
                if (strchr(l, ':')) n++;
            if (f) fclose(f);
            printf("netdevs %d\n", n);
        } else if (sscanf(line, "signal %479s", arg) == 1) {
            int r = kill(atoi(arg), 0);
            printf("signal %s %s\n", arg, r == 0 ? "ok" : err_name(errno));
        } else if (sscanf(line, "write %479s", arg) == 1) {
            FILE *f = fopen(arg, "w");
            int ok = f && fputs("x", f) >= 0;
            int e = errno;
            if (f && fclose(f) != 0) ok = 0;
            printf("write %s %s\n", arg, ok ? "ok" : err_name(e));
        } else if (sscanf(line, "alloc %479s", arg) == 1) {
            size_t mb = strtoul(arg, 0, 10);
            for (size_t i = 0; i < mb; i++) {
                char *p = malloc(1 << 20);
                if (!p) { printf("alloc %s failed\n", arg); break; }
                memset(p, 0x5a, 1 << 20);
            }
            printf("alloc %s ok\n", arg);
        } else if (sscanf(line, "forks %479s", arg) == 1) {
            int n = atoi(arg), k = 0, p[2];
            pid_t kids[64];
            if (n > 64 || pipe(p) != 0) return 3;
            for (int i = 0; i < n; i++) {
                pid_t c = fork();
                if (c == 0) { char b; close(p[1]); read(p[0], &b, 1); _exit(0); }
                if (c > 0) kids[k++] = c;
            }
            close(p[0]);
            close(p[1]);
            for (int i = 0; i < k; i++) waitpid(kids[i], 0, 0);
            printf("forks %d\n", k);
        } else if (sscanf(line, "spin %479s", arg) == 1) {
            struct timespec w0, w, c;
            clock_gettime(CLOCK_MONOTONIC, &w0);
            do clock_gettime(CLOCK_MONOTONIC, &w);
            while ((w.tv_sec - w0.tv_sec) * 1000 + (w.tv_nsec - w0.tv_nsec) / 1000000 < atol(arg));
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
            printf("spin %ld\n", c.tv_sec * 1000 + c.tv_nsec / 1000000);
        } else if (strcmp(line, "orphan") == 0) {
            int p[2];
            if (pipe(p) != 0) return 3;
            pid_t mid = fork();
            if (mid == 0) {
                pid_t g = fork();
                if (g == 0) { sleep(1); _exit(0); }
                write(p[1], &g, sizeof g);
                _exit(0);
            }
            pid_t g = 0;
            read(p[0], &g, sizeof g);
            waitpid(mid, 0, 0);
            printf("orphan %d\n", g);
        } else if (sscanf(line, "exit %479s", arg) == 1) {
            fflush(stdout);
            return atoi(arg);
        } else {
            printf("unknown %s\n", line);
        }
        fflush(stdout);
    }
    printf("eof\n");
    fflush(stdout);
    sleep(60);
    return 0;
}
