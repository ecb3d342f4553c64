/* Process properties across a remote fork.
 *
 *   props     sets umask 0027; lowers RLIMIT_NOFILE (soft and hard),
 *             RLIMIT_CORE, RLIMIT_STACK (4 MiB, 64 MiB), RLIMIT_NPROC (soft),
 *             RLIMIT_MSGQUEUE, RLIMIT_FSIZE (soft), RLIMIT_DATA and
 *             RLIMIT_AS (both to a little above what it uses now, so that a
 *             restore that set them before mapping the seed would fail);
 *             raises oom_score_adj to 500; makes itself not dumpable,
 *             disables THP, adds ADDR_COMPAT_LAYOUT to its personality and
 *             becomes a child subreaper; sets supplementary groups 4242
 *             and 4343; arms ITIMER_REAL (2050 s, then every 1000 s) and
 *             ITIMER_VIRTUAL (3050 s); creates POSIX timers 0, 1 and 2 and
 *             deletes 1 (0: SIGEV_NONE, armed 4050 s then every 10 s; 2:
 *             SIGRTMIN with value 77, disarmed); registers for private
 *             expedited membarrier; maps 64 KiB "advised" (MADV_DONTDUMP,
 *             MADV_HUGEPAGE, mlock) and 4 KiB "wiped" (MADV_WIPEONFORK,
 *             filled with 0x5a); sets its audit login uid to 4242; works
 *             in a directory it made and removed
 *             (its cwd is deleted, also held open as descriptor 41), holds
 *             another deleted directory open as descriptor 40; with
 *             argument "user" it then becomes
 *             uid and gid 65534 (nobody); prints "ready <pid>" and answers
 *             stdin lines:
 *
 *   report    "umask <octal>", then "limit <resource> <soft> <hard>" for
 *             every resource 0-15 (-1 for unlimited), "oom_score_adj <n>",
 *             "dumpable <n>", "thp_disable <n>", "personality <hex>",
 *             "subreaper <n>", "uid <n>", "groups <n>: <gid>...",
 *             "exe <path>", "capeff <hex>", "itimer <which> <interval s>
 *             <value in 100 s>", "timer <id> <interval s> <value in 100 s>",
 *             "membarrier <registrations>", "advised <VmFlags kept>",
 *             "wiped <first byte> <VmFlags kept>", "cwd <readlink of
 *             /proc/self/cwd>", "loginuid <n>", "dirfd directory <0|1>
 *             links <n> deleted <0|1>", "cwd held by 41 <0|1>", then
 *             "report done"
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
#include <grp.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
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

/* Prints "<label> <the first line of path>" ("unreadable" if it cannot be read). */
static void print_first_line(const char *label, const char *path) {
    char line[64] = "";
    FILE *f = fopen(path, "r");
    if (!f || !fgets(line, sizeof line, f)) strcpy(line, "unreadable");
    if (f) fclose(f);
    line[strcspn(line, "\n")] = 0;
    printf("%s %s\n", label, line);
}

static int arm_clocks(void) {
    struct itimerval real = {.it_interval = {1000, 0}, .it_value = {2050, 0}};
    struct itimerval virt = {.it_value = {3050, 0}};
    timer_t t[3];
    struct sigevent none = {.sigev_notify = SIGEV_NONE};
    struct sigevent rt = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN, .sigev_value.sival_int = 77};
    struct itimerspec armed = {.it_interval = {10, 0}, .it_value = {4050, 0}};
    if (setitimer(ITIMER_REAL, &real, NULL) || setitimer(ITIMER_VIRTUAL, &virt, NULL)) return -1;
    if (timer_create(CLOCK_MONOTONIC, &none, &t[0]) || timer_create(CLOCK_REALTIME, &none, &t[1]) ||
        timer_create(CLOCK_MONOTONIC, &rt, &t[2]) || timer_delete(t[1]) || timer_settime(t[0], 0, &armed, NULL))
        return -1;
    if ((long)t[0] != 0 || (long)t[2] != 2) return -1;
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) ? -1 : 0;
}

static unsigned char *advised, *wiped;

static int map_advised(void) {
    advised = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    wiped = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (advised == MAP_FAILED || wiped == MAP_FAILED) return -1;
    memset(advised, 1, 64 << 10);
    memset(wiped, 0x5a, 4096);
    return madvise(advised, 64 << 10, MADV_DONTDUMP) || madvise(advised, 64 << 10, MADV_HUGEPAGE) || mlock(advised, 64 << 10) ||
           madvise(wiped, 4096, MADV_WIPEONFORK);
}

/* The VmFlags of the mapping at `at` that a child keeps, in smaps order. */
static void print_flags(const void *at) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int ours = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) ours = start == (unsigned long)at;
        else if (ours && !strncmp(line, "VmFlags:", 8)) {
            for (char *t = strtok(line + 8, " \n"); t; t = strtok(NULL, " \n"))
                if (strstr("lo nr dp sr rr dc dd mg hg nh wf", t)) printf(" %s", t);
            break;
        }
    }
    if (f) fclose(f);
    printf("\n");
}

static void report_identity(void) {
    gid_t groups[64];
    int n = getgroups(64, groups);
    printf("uid %d\ngroups %d:", getuid(), n);
    for (int i = 0; i < n; i++) printf(" %d", groups[i]);
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[len < 0 ? 0 : len] = 0;
    printf("\nexe %s\n", exe);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "CapEff:", 7)) printf("capeff %s", line + 8);
    if (f) fclose(f);
}

static void report_clocks(void) {
    for (int which = ITIMER_REAL; which <= ITIMER_PROF; which++) {
        struct itimerval v;
        if (getitimer(which, &v)) printf("itimer %d error\n", which);
        else if (v.it_value.tv_sec || v.it_value.tv_usec)
            printf("itimer %d %ld %ld\n", which, (long)v.it_interval.tv_sec, (long)v.it_value.tv_sec / 100);
    }
    for (long id = 0; id < 4; id++) {
        struct itimerspec v;
        if (timer_gettime((timer_t)id, &v) == 0)
            printf("timer %ld %ld %ld\n", id, (long)v.it_interval.tv_sec, (long)v.it_value.tv_sec / 100);
    }
    printf("membarrier %ld\n", syscall(SYS_membarrier, 1 << 9, 0, 0));
    printf("advised");
    print_flags(advised);
    printf("wiped %d", wiped[0]);
    print_flags(wiped);
    char cwd[4096];
    ssize_t n = readlink("/proc/self/cwd", cwd, sizeof cwd - 1);
    cwd[n < 0 ? 0 : n] = 0;
    printf("cwd %s\n", cwd);
    print_first_line("loginuid", "/proc/self/loginuid");
    struct stat dir;
    char held[4096];
    n = readlink("/proc/self/fd/40", held, sizeof held - 1);
    held[n < 0 ? 0 : n] = 0;
    int is_dir = fstat(40, &dir) == 0 && S_ISDIR(dir.st_mode);
    printf("dirfd directory %d links %ld deleted %d\n", is_dir, (long)dir.st_nlink, strstr(held, " (deleted)") != NULL);
    struct stat here;
    int same = stat("/proc/self/cwd", &here) == 0 && fstat(41, &dir) == 0 && here.st_dev == dir.st_dev && here.st_ino == dir.st_ino;
    printf("cwd held by 41 %d\n", same);
}

int main(int argc, char **argv) {
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
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) || prctl(PR_SET_NAME, "props-renamed", 0, 0, 0)) {
        perror("process flags");
        return 1;
    }
    gid_t groups[] = {4242, 4343};
    if (setgroups(2, groups) || arm_clocks() || map_advised()) {
        perror("groups and clocks");
        return 1;
    }
    FILE *login = fopen("/proc/self/loginuid", "w");
    if (!login || fprintf(login, "4242") < 0 || fclose(login)) {
        perror("loginuid");
        return 1;
    }
    char gone[64], up[80];
    snprintf(gone, sizeof gone, "props-dir-%d", getpid());
    int held = mkdir(gone, 0700) ? -1 : open(gone, O_RDONLY | O_DIRECTORY);
    if (held < 0 || dup2(held, 40) != 40 || close(held) || rmdir(gone)) {
        perror("holding a deleted directory");
        return 1;
    }
    snprintf(gone, sizeof gone, "props-cwd-%d", getpid());
    snprintf(up, sizeof up, "../%s", gone);
    if (mkdir(gone, 0700) || chdir(gone) || rmdir(up) || dup2(open(".", O_RDONLY | O_DIRECTORY), 41) != 41) {
        perror("deleting the working directory");
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "user") && (setgid(65534) || setuid(65534))) {
        perror("becoming nobody");
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
            int subreaper = -1;
            prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
            print_first_line("oom_score_adj", "/proc/self/oom_score_adj");
            printf("dumpable %d\n", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
            printf("thp_disable %d\n", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
            printf("personality %#x\n", personality(0xffffffff));
            printf("subreaper %d\n", subreaper);
            print_first_line("name", "/proc/self/comm");
            report_identity();
            report_clocks();
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
