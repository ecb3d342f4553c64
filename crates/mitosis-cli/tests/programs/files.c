/* Files across a remote fork. argv[1] is a directory holding data.txt,
 * map.bin and replaced.bin (made by the test).
 *
 * Reads the first 100 bytes of data.txt (its descriptor stays open at
 * offset 100), maps map.bin privately and writes two of its pages, maps
 * replaced.bin privately read-only, opens an unbound Unix datagram socket
 * (children get it again), makes the symbolic link link -> data.txt and
 * holds it by an O_PATH | O_NOFOLLOW descriptor; holds a second link, gone,
 * the same way and removes it, and a character device node it made (/dev/null's
 * number, mode 0640), opened read-write and removed; prints "ready <pid>". On a
 * line "check" it prints
 *   "check <next 20 bytes of data.txt> map=<sum> replaced=<sum> socket=<open|closed>
 *    link=<symlink|not>:<its target> gone=<symlink|not>:<its target>
 *    node=<major>:<minor>:<mode in octal>:<bytes written to it>:<its name left|none>"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/socket.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void *map(const char *dir, const char *name, int prot, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    *len = st.st_size;
    void *p = mmap(NULL, *len, prot, MAP_PRIVATE, fd, 0);
    close(fd);
    return p;
}

static uint64_t sum(const unsigned char *p, size_t len) {
    uint64_t s = 0;
    for (size_t i = 0; i < len; i++) s = s * 31 + p[i];
    return s;
}

int main(int argc, char **argv) {
    const char *dir = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/data.txt", dir);
    int data = open(path, O_RDONLY);
    char head[100];
    if (data < 0 || read(data, head, sizeof head) != sizeof head) return 1;
    size_t map_len, rep_len;
    unsigned char *m = map(dir, "map.bin", PROT_READ | PROT_WRITE, &map_len);
    unsigned char *r = map(dir, "replaced.bin", PROT_READ, &rep_len);
    if (m == MAP_FAILED || r == MAP_FAILED) return 1;
    memset(m + 3 * 4096, 0x33, 4096);
    memset(m + 100 * 4096 + 17, 0x77, 100);
    int sock = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (sock < 0) return 1;
    snprintf(path, sizeof path, "%s/link", dir);
    if (symlink("data.txt", path)) return 1;
    int link = open(path, O_PATH | O_NOFOLLOW);
    if (link < 0) return 1;
    char gone_path[4096], node_path[4096];
    snprintf(gone_path, sizeof gone_path, "%s/gone", dir);
    if (symlink("data.txt", gone_path)) return 1;
    int gone = open(gone_path, O_PATH | O_NOFOLLOW);
    if (gone < 0 || unlink(gone_path)) return 1;
    snprintf(node_path, sizeof node_path, "%s/null", dir);
    if (mknod(node_path, S_IFCHR | 0640, makedev(1, 3))) return 1;
    int node = open(node_path, O_RDWR);
    if (node < 0 || unlink(node_path)) return 1;
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "check", 5)) {
            char next[21] = {0};
            ssize_t n = read(data, next, 20);
            for (int i = 0; i < 20; i++)
                if (next[i] == '\n') next[i] = '|';
            char target[64] = "";
            struct stat st;
            readlinkat(link, "", target, sizeof target - 1);
            int is_link = fstat(link, &st) == 0 && S_ISLNK(st.st_mode);
            char gone_target[64] = "";
            readlinkat(gone, "", gone_target, sizeof gone_target - 1);
            int gone_is_link = fstat(gone, &st) == 0 && S_ISLNK(st.st_mode);
            struct stat ns = {0};
            fstat(node, &ns);
            ssize_t written = write(node, "xyz", 3);
            int name_left = unlink(node_path) == 0 || errno != ENOENT;
            printf("check %zd:%s map=%llx replaced=%llx socket=%s link=%s:%s gone=%s:%s node=%u:%u:%o:%zd:%s\n", n, next,
                   (unsigned long long)sum(m, map_len), (unsigned long long)sum(r, rep_len), fcntl(sock, F_GETFD) < 0 ? "closed" : "open",
                   is_link ? "symlink" : "not", target, gone_is_link ? "symlink" : "not", gone_target, major(ns.st_rdev), minor(ns.st_rdev),
                   ns.st_mode, written, name_left ? "left" : "none");
            fflush(stdout);
        }
    }
    return 0;
}
