/* A process that holds a file open, for the security tests.
 *
 * argv[1] is how it takes its credentials (it is started as root, or as the
 * user already with "keep"):
 *   keep           stays as it was started;
 *   plain          uids and gids all nobody's, no groups, dumpable;
 *   nondumpable    like plain, then PR_SET_DUMPABLE 0;
 *   saved-root-uid real and saved uid 0, effective uid nobody (a setuid
 *                  program that lowered its effective uid), dumpable;
 *   saved-root-gid uids nobody's, real and saved gid 0, dumpable;
 *   caps           uids and gids nobody's but root's capabilities kept in
 *                  its permitted set (PR_SET_KEEPCAPS), dumpable.
 * argv[2] is a directory: it opens argv[2]/f read-write for appending and
 * works in argv[2]/cwd. It prints "ready <pid>", then answers lines:
 *   "read"      -> "read <the file's first bytes, up to a newline>"
 *   "pwd"       -> "pwd <its working directory's listing of a file 'here'>"
 *   "append X"  -> appends X to the file, prints "appended"
 *   "exit N"    -> exits with status N.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define NOBODY 65534

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void take_credentials(const char *mode) {
    if (strcmp(mode, "keep") == 0) return;
    if (setgroups(0, NULL) != 0) die("setgroups");
    if (strcmp(mode, "caps") == 0 && prctl(PR_SET_KEEPCAPS, 1) != 0) die("keepcaps");
    gid_t rg = NOBODY, sg = NOBODY;
    uid_t ru = NOBODY, su = NOBODY;
    if (strcmp(mode, "saved-root-gid") == 0) rg = sg = 0;
    if (strcmp(mode, "saved-root-uid") == 0) ru = su = 0;
    if (setresgid(rg, NOBODY, sg) != 0) die("setresgid");
    if (setresuid(ru, NOBODY, su) != 0) die("setresuid");
    /* Changing the effective uid cleared the dumpable flag. */
    if (prctl(PR_SET_DUMPABLE, strcmp(mode, "nondumpable") == 0 ? 0 : 1) != 0) die("dumpable");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: holder MODE DIR\n");
        return 2;
    }
    take_credentials(argv[1]);
    char path[4096];
    snprintf(path, sizeof path, "%s/f", argv[2]);
    int fd = open(path, O_RDWR | O_APPEND);
    if (fd < 0) die("open");
    snprintf(path, sizeof path, "%s/cwd", argv[2]);
    if (chdir(path) != 0) die("chdir");
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "read") == 0) {
            char buf[256] = {0};
            ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
            if (n < 0) die("pread");
            buf[strcspn(buf, "\n")] = 0;
            printf("read %s\n", buf);
        } else if (strcmp(line, "pwd") == 0) {
            printf("pwd %s\n", access("here", F_OK) == 0 ? "here" : "elsewhere");
        } else if (strncmp(line, "append ", 7) == 0) {
            if (write(fd, line + 7, strlen(line + 7)) < 0) die("write");
            printf("appended\n");
        } else if (strncmp(line, "exit ", 5) == 0) {
            return atoi(line + 5);
        }
    }
    return 0;
}
