/* Process properties across a remote fork.
 *
 *   props     sets umask 0027; lowers RLIMIT_NOFILE (soft and hard),
 *             RLIMIT_CORE, RLIMIT_STACK (4 MiB, 64 MiB), RLIMIT_NPROC (soft),
 *             RLIMIT_MSGQUEUE, RLIMIT_FSIZE (soft), RLIMIT_DATA and
 *             RLIMIT_AS (both to a little above what it uses now, so that a
 *             restore that set them before mapping the seed would fail);
 *             raises oom_score_adj to 500; makes itself not dumpable,
 *             disables THP, adds ADDR_COMPAT_LAYOUT to its personality and
 *             becomes a child subreaper; prints "ready <pid>" and answers
 *             stdin lines:
 *
 *   report    "umask <octal>", then "limit <resource> <soft> <hard>" for
 *             every resource 0-15 (-1 for unlimited), "oom_score_adj <n>",
 *             "dumpable <n>", "thp_disable <n>", "personality <hex>",
 *             "subreaper <n>", then "report done"
 *   create    creates /dev/shm/mitosis-props-<pid> with mode 0666, prints
 *             "create mode <octal>" (what the umask left), removes it
 *   alloc     maps 256 MiB: "alloc refused" (the address space limit holds)
 *             or "alloc mapped"
 *   exit      exit 0
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* A field of /proc/self/status in kB. */
static unsigned long long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n)) kb = strtoull(line + n, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static int lower(int resource, rlim_t soft, rlim_t hard) {
    struct rlimit now;
    if (getrlimit(resource, &now)) return -1;
    if (hard == 0 || hard > now.rlim_max) hard = now.rlim_max;
    if (soft > hard) soft = hard;
    struct rlimit r = {.rlim_cur = soft, .rlim_max = hard};
    return setrlimit(resource, &r);
}

static long long shown(rlim_t v) { return v == RLIM_INFINITY ? -1 : (long long)v; }

int main(void) {
    umask(0027);
    const rlim_t slack = 64ull << 20;
    rlim_t as = (status_kb("VmSize:") << 10) + slack;
    rlim_t data = (status_kb("VmData:") << 10) + slack;
    if (lower(RLIMIT_NOFILE, 200, 300) || lower(RLIMIT_CORE, 4096, 1 << 20) || lower(RLIMIT_STACK, 4 << 20, 64 << 20) ||
        lower(RLIMIT_NPROC, 4000, 0) || lower(RLIMIT_MSGQUEUE, 100000, 200000) || lower(RLIMIT_FSIZE, 1ull << 30, 0) ||
        lower(RLIMIT_DATA, data, data + slack) || lower(RLIMIT_AS, as, as + slack)) {
        perror("setrlimit");
        return 1;
    }
    FILE *oom = fopen("/proc/self/oom_score_adj", "w");
    if (!oom || fprintf(oom, "500\n") < 0 || fclose(oom) || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) ||
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) || personality(personality(0xffffffff) | ADDR_COMPAT_LAYOUT) < 0 ||
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) {
        perror("process flags");
        return 1;
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "report")) {
            mode_t m = umask(0);
            umask(m);
            printf("umask %04o\n", m);
            for (int r = 0; r < RLIM_NLIMITS; r++) {
                struct rlimit l;
                if (getrlimit(r, &l)) printf("limit %d error\n", r);
                else printf("limit %d %lld %lld\n", r, shown(l.rlim_cur), shown(l.rlim_max));
            }
            char oom[32] = "";
            FILE *f = fopen("/proc/self/oom_score_adj", "r");
            if (!f || !fgets(oom, sizeof oom, f)) strcpy(oom, "unreadable\n");
            if (f) fclose(f);
            int subreaper = -1;
            prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
            printf("oom_score_adj %s", oom);
            printf("dumpable %d\n", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
            printf("thp_disable %d\n", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
            printf("personality %#x\n", personality(0xffffffff));
            printf("subreaper %d\n", subreaper);
            printf("report done\n");
        } else if (!strcmp(line, "create")) {
            char path[64];
            snprintf(path, sizeof path, "/dev/shm/mitosis-props-%d", getpid());
            int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0666);
            struct stat st;
            if (fd < 0 || fstat(fd, &st)) printf("create failed\n");
            else printf("create mode %04o\n", st.st_mode & 07777);
            if (fd >= 0) close(fd);
            unlink(path);
        } else if (!strcmp(line, "alloc")) {
            void *p = mmap(NULL, 256 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            printf("alloc %s\n", p == MAP_FAILED ? "refused" : "mapped");
            if (p != MAP_FAILED) munmap(p, 256 << 20);
        } else if (!strcmp(line, "exit")) {
            return 0;
        }
        fflush(stdout);
    }
    return 0;
}
