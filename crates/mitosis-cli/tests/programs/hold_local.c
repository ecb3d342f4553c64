/* A hostile local client: opens argv[2] connections to the Unix socket
 * argv[1] and leaves every one half-sent: even ones announce a 1 MiB
 * request and send 10 bytes of it, odd ones send nothing. Prints
 * "held <n>" (the connections made), then on each "open?" line of stdin
 * prints "open <k>": how many the daemon has not closed (nor answered). Exits
 * at end of stdin. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[2]);
    struct pollfd *fds = calloc(n, sizeof *fds);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
    int held = 0;
    for (int i = 0; i < n; i++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
            fprintf(stderr, "connection %d: %s\n", i, strerror(errno));
            if (s >= 0) close(s);
            fds[i].fd = -1;
            continue;
        }
        if (i % 2 == 0) {
            unsigned char half[14] = {0, 0, 0x10, 0}; /* 1 MiB, little-endian */
            memset(half + 4, 0x41, 10);
            (void)send(s, half, sizeof half, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        fds[i].fd = s;
        fds[i].events = POLLIN | POLLRDHUP;
        held++;
    }
    printf("held %d\n", held);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "open?", 5) != 0) continue;
        for (int i = 0; i < n; i++) fds[i].revents = 0;
        poll(fds, n, 0);
        int open = 0;
        for (int i = 0; i < n; i++)
            if (fds[i].fd >= 0 && fds[i].revents == 0) open++;
        printf("open %d\n", open);
        fflush(stdout);
    }
    return 0;
}
