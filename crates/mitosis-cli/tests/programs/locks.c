/* File locks and a lease across a remote fork.
 *
 *   locks FILE LEASED  opens FILE three times and takes, through descriptors
 *               3 to 5, a POSIX write lock on bytes 0-99, an OFD read lock
 *               on bytes 200 to the end and a shared flock; opens LEASED
 *               read-only as descriptor 6 and takes a read lease on it (a
 *               read lease needs a file nobody has open for writing);
 *               prints "ready <pid>" and answers stdin lines:
 *
 *   report   one "lock <fd> <kind> <access> <start> <end>" line per lock of
 *            descriptors 3-6 (from /proc/self/fdinfo), "lease <type>", then
 *            "report done"
 *   release  gives every lock and the lease up: "released"
 *   exit     exit 0
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static void report(void) {
    for (int fd = 3; fd <= 6; fd++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f)) {
            char kind[16], mode[16], access[16], start[32], end[32];
            int id, pid;
            if (sscanf(line, "lock: %d: %15s %15s %15s %d %*s %31s %31s", &id, kind, mode, access, &pid, start, end) == 7)
                printf("lock %d %s %s %s %s\n", fd, kind, access, start, end);
        }
        if (f) fclose(f);
    }
    printf("lease %d\nreport done\n", fcntl(6, F_GETLEASE));
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int posix = open(argv[1], O_RDWR), ofd = open(argv[1], O_RDWR), shared = open(argv[1], O_RDONLY), leased = open(argv[2], O_RDONLY);
    if (posix != 3 || ofd != 4 || shared != 5 || leased != 6) return 3;
    struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
    struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 200, .l_len = 0};
    if (fcntl(posix, F_SETLK, &w) || fcntl(ofd, F_OFD_SETLK, &r) || flock(shared, LOCK_SH | LOCK_NB) ||
        fcntl(leased, F_SETLEASE, F_RDLCK)) {
        perror("locks");
        return 4;
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "report", 6)) {
            report();
        } else if (!strncmp(line, "release", 7)) {
            w.l_type = F_UNLCK;
            r.l_type = F_UNLCK;
            fcntl(posix, F_SETLK, &w);
            fcntl(ofd, F_OFD_SETLK, &r);
            flock(shared, LOCK_UN);
            fcntl(leased, F_SETLEASE, F_UNLCK);
            printf("released\n");
            fflush(stdout);
        } else if (!strncmp(line, "exit", 4)) {
            return 0;
        }
    }
    return 0;
}
