/* Descriptors whose whole state is inside the process, across a remote fork.
 *
 *   fds       opens, at fixed numbers:
 *               10 read end of a pipe (O_NONBLOCK), 11 its write end
 *                  (close-on-exec) and 12 a dup of the write end; the pipe's
 *                  buffer is 256 KiB and holds 100000 patterned bytes
 *               13 an eventfd with counter 42, 14 a semaphore eventfd
 *                  (O_NONBLOCK) with counter 3
 *               15 a timerfd (CLOCK_MONOTONIC) armed for 600 s, interval
 *                  1.5 s; 16 a timerfd that expired once, not read
 *               17 a signalfd for SIGUSR1 and SIGUSR2 (both blocked)
 *               18 an epoll instance watching 10 (EPOLLIN, data 0xabc)
 *                  and 13 (EPOLLIN | EPOLLET, data 77), and the pipe
 *                  under number 19 (data 0x19), which is then given to a
 *                  dup of 13; 20 an epoll instance watching 18 (data 5)
 *               21 the pipe's read end opened again (/proc/self/fd/10:
 *                  another open file description, blocking)
 *               22 a timerfd with a 1 h interval that expired once, not read
 *               23 a memfd "mitosis-fds" holding "memfd-content" at 5000
 *                  (a hole before it), sealed against growing and shrinking,
 *                  position 7
 *               24 a file of the working directory, unlinked, write-only,
 *                  mode 0640, 3 bytes then 64 KiB of "u" from offset 1 MiB,
 *                  mtime 1234567890, position 100; 25 the same file opened
 *                  again read-only (/proc/self/fd/24), position 1 MiB,
 *                  and as 31 read-write
 *               26 a TCP socket listening on 127.0.0.1 (a port the kernel
 *                  chose), SO_REUSEADDR and TCP_NODELAY set
 *               27 a UDP socket bound to 127.0.0.1 (a chosen port), with a
 *                  two-instruction filter that accepts everything; 28 a UDP
 *                  socket connected to it, SO_BROADCAST, SO_LINGER (7 s),
 *                  SO_RCVTIMEO (2.5 s) and SO_BUF_LOCK (send) set
 *               32 a UDP socket connected to 27 and shut for sending
 *               29 and 30 TCP sockets listening on one port: both were
 *                  bound with SO_REUSEPORT, which 29 then turned off (no
 *                  connection is made to them: either could take it)
 *             prints "ready <pid>" and answers stdin lines:
 *
 *   report    "fds <numbers from 3 to 63>", then one line per object with its
 *             state (reading it: the pipe's bytes, the counters, the
 *             timer's ticks, a signal raised for the signalfd)
 *   exit      exit 0
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <linux/filter.h>
#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#ifndef SO_GET_FILTER
#define SO_GET_FILTER SO_ATTACH_FILTER
#endif
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BYTES 100000

static int at(int fd, int want) {
    if (fd < 0) { perror("create"); exit(1); }
    if (fd == want) return fd;
    if (dup2(fd, want) != want) { perror("dup2"); exit(1); }
    close(fd);
    return want;
}

/* Descriptors 3-63 (a test harness may leak higher ones into the seed). */
static void list_fds(void) {
    int seen[64] = {0};
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self = dirfd(d);
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd >= 3 && fd != self && fd < 64) seen[fd] = 1;
    }
    closedir(d);
    printf("fds");
    for (int i = 3; i < 64; i++)
        if (seen[i]) printf(" %d", i);
    printf("\n");
}

static int cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }
static int nonblock(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

int main(void) {
    int p[2];
    if (pipe(p)) { perror("pipe"); return 1; }
    at(p[0], 10);
    at(p[1], 11);
    if (fcntl(11, F_SETPIPE_SZ, 256 << 10) < 0) { perror("F_SETPIPE_SZ"); return 1; }
    static unsigned char pattern[PIPE_BYTES];
    for (int i = 0; i < PIPE_BYTES; i++) pattern[i] = (unsigned char)(i * 7 + i / 251);
    if (write(11, pattern, PIPE_BYTES) != PIPE_BYTES) { perror("write"); return 1; }
    fcntl(10, F_SETFL, O_NONBLOCK);
    fcntl(11, F_SETFD, FD_CLOEXEC);
    if (dup2(11, 12) != 12) { perror("dup2"); return 1; }
    at(eventfd(40, 0), 13);
    uint64_t two = 2;
    if (write(13, &two, 8) != 8) { perror("eventfd write"); return 1; }
    at(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK), 14);
    at(timerfd_create(CLOCK_MONOTONIC, 0), 15);
    struct itimerspec armed = {.it_interval = {1, 500000000}, .it_value = {600, 0}};
    if (timerfd_settime(15, 0, &armed, NULL)) { perror("timerfd_settime"); return 1; }
    at(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), 16);
    struct itimerspec once = {.it_value = {0, 1000000}};
    if (timerfd_settime(16, 0, &once, NULL)) { perror("timerfd_settime"); return 1; }
    usleep(20000);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    at(signalfd(-1, &mask, SFD_NONBLOCK), 17);
    at(epoll_create1(0), 18);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xabc};
    struct epoll_event et = {.events = EPOLLIN | EPOLLET, .data.u64 = 77};
    if (epoll_ctl(18, EPOLL_CTL_ADD, 10, &ev) || epoll_ctl(18, EPOLL_CTL_ADD, 13, &et)) { perror("epoll_ctl"); return 1; }
    struct epoll_event renumbered = {.events = EPOLLIN, .data.u64 = 0x19};
    if (dup2(10, 19) != 19 || epoll_ctl(18, EPOLL_CTL_ADD, 19, &renumbered) || dup2(13, 19) != 19) { perror("epoll_ctl"); return 1; }
    at(epoll_create1(EPOLL_CLOEXEC), 20); /* dup2 clears close-on-exec */
    struct epoll_event nested = {.events = EPOLLIN, .data.u64 = 5};
    if (epoll_ctl(20, EPOLL_CTL_ADD, 18, &nested)) { perror("epoll_ctl"); return 1; }
    at(open("/proc/self/fd/10", O_RDONLY), 21);
    at(timerfd_create(CLOCK_MONOTONIC, 0), 22);
    struct itimerspec hourly = {.it_interval = {3600, 0}, .it_value = {0, 1000000}};
    if (timerfd_settime(22, 0, &hourly, NULL)) { perror("timerfd_settime"); return 1; }
    usleep(20000);
    at(memfd_create("mitosis-fds", MFD_ALLOW_SEALING), 23);
    if (pwrite(23, "memfd-content", 13, 5000) != 13 || fcntl(23, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) ||
        lseek(23, 7, SEEK_SET) != 7) { perror("memfd"); return 1; }
    /* Named after this process: tests of this program run side by side in one directory. */
    char unlinked[64];
    snprintf(unlinked, sizeof unlinked, "fds-unlinked-%d", (int)getpid());
    at(open(unlinked, O_WRONLY | O_CREAT | O_TRUNC, 0600), 24);
    static char u[65536];
    memset(u, 'u', sizeof u);
    if (write(24, "abc", 3) != 3 || pwrite(24, u, sizeof u, 1 << 20) != sizeof u || fchmod(24, 0640)) { perror("file"); return 1; }
    struct timespec times[2] = {{1234567890, 0}, {1234567890, 500}};
    if (futimens(24, times) || lseek(24, 100, SEEK_SET) != 100) { perror("file"); return 1; }
    at(open("/proc/self/fd/24", O_RDONLY), 25);
    at(open("/proc/self/fd/24", O_RDWR), 31);
    if (lseek(25, 1 << 20, SEEK_SET) != 1 << 20 || unlink(unlinked)) { perror("file"); return 1; }
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof lo;
    int one = 1;
    at(socket(AF_INET, SOCK_STREAM, 0), 26);
    if (setsockopt(26, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || setsockopt(26, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        bind(26, (struct sockaddr *)&lo, sizeof lo) || listen(26, 8)) { perror("tcp"); return 1; }
    struct sockaddr_in shared;
    socklen_t shared_len = sizeof shared;
    int zero = 0;
    at(socket(AF_INET, SOCK_STREAM, 0), 29);
    at(socket(AF_INET, SOCK_STREAM, 0), 30);
    if (setsockopt(29, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) || bind(29, (struct sockaddr *)&lo, sizeof lo) || listen(29, 8) ||
        getsockname(29, (struct sockaddr *)&shared, &shared_len) || setsockopt(30, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(30, (struct sockaddr *)&shared, shared_len) || listen(30, 8) || setsockopt(29, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof zero)) {
        perror("tcp port shared");
        return 1;
    }
    at(socket(AF_INET, SOCK_DGRAM, 0), 27);
    struct sockaddr_in udp;
    if (bind(27, (struct sockaddr *)&lo, sizeof lo) || getsockname(27, (struct sockaddr *)&udp, &len)) { perror("udp"); return 1; }
    at(socket(AF_INET, SOCK_DGRAM, 0), 28);
    if (setsockopt(28, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) || connect(28, (struct sockaddr *)&udp, sizeof udp)) { perror("udp"); return 1; }
    at(socket(AF_INET, SOCK_DGRAM, 0), 32);
    if (connect(32, (struct sockaddr *)&udp, sizeof udp) || shutdown(32, SHUT_WR)) { perror("udp shut"); return 1; }
    struct sock_filter accept_all[2] = {{BPF_RET | BPF_K, 0, 0, 0xffff}, {BPF_RET | BPF_K, 0, 0, 0xffff}};
    struct sock_fprog program = {.len = 2, .filter = accept_all};
    struct linger linger = {.l_onoff = 1, .l_linger = 7};
    struct timeval timeout = {.tv_sec = 2, .tv_usec = 500000};
    int send_lock = 1;
    if (setsockopt(27, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) ||
        setsockopt(28, SOL_SOCKET, SO_LINGER, &linger, sizeof linger) ||
        setsockopt(28, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) ||
        setsockopt(28, SOL_SOCKET, SO_BUF_LOCK, &send_lock, sizeof send_lock)) { perror("socket options"); return 1; }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "report")) {
            list_fds();
            printf("flags cloexec %d%d%d%d%d%d%d%d%d%d nonblock %d%d%d%d%d%d%d%d%d%d\n", cloexec(10), cloexec(11), cloexec(12),
                   cloexec(13), cloexec(14), cloexec(15), cloexec(16), cloexec(17), cloexec(18), cloexec(20), nonblock(10),
                   nonblock(11), nonblock(12), nonblock(13), nonblock(14), nonblock(15), nonblock(16), nonblock(17), nonblock(18),
                   nonblock(20));
            printf("second read description nonblock %d\n", nonblock(21));
            char link[64] = "";
            readlink("/proc/self/fd/19", link, sizeof link - 1);
            printf("fd 19 %s\n", link);
            struct epoll_event got[4];
            int n = epoll_wait(20, got, 4, 0);
            printf("nested epoll %d data %llu\n", n, n > 0 ? (unsigned long long)got[0].data.u64 : 0ull);
            n = epoll_wait(18, got, 4, 0);
            unsigned long long d[3] = {0, 0, 0};
            for (int i = 0; i < n && i < 3; i++) d[i] = got[i].data.u64;
            for (int i = 0; i < 3; i++)
                for (int j = i + 1; j < 3; j++)
                    if (d[j] < d[i]) { unsigned long long t = d[i]; d[i] = d[j]; d[j] = t; }
            printf("epoll %d data %#llx %#llx %#llx\n", n, d[0], d[1], d[2]);
            printf("pipe capacity %d\n", fcntl(10, F_GETPIPE_SZ));
            static unsigned char got_bytes[PIPE_BYTES + 1];
            long total = 0, r;
            while ((r = read(10, got_bytes + total, sizeof got_bytes - total)) > 0) total += r;
            printf("pipe %ld bytes %s, then %s\n", total, total == PIPE_BYTES && !memcmp(got_bytes, pattern, PIPE_BYTES) ? "as written" : "differ",
                   r < 0 ? "EAGAIN" : "end of file");
            if (write(12, "x", 1) != 1 || read(10, got_bytes, 2) != 1) printf("pipe write end does not reach the read end\n");
            uint64_t v = 0;
            printf("eventfd %lld\n", read(13, &v, 8) == 8 ? (long long)v : -1ll);
            int sem = 0;
            while (read(14, &v, 8) == 8) sem++;
            printf("semaphore reads %d\n", sem);
            struct itimerspec cur;
            timerfd_gettime(15, &cur);
            printf("timer interval %ld.%09ld armed %s\n", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec,
                   cur.it_value.tv_sec > 500 && cur.it_value.tv_sec <= 600 ? "yes" : "no");
            printf("expired timer ticks %lld\n", read(16, &v, 8) == 8 ? (long long)v : -1ll);
            timerfd_gettime(22, &cur);
            printf("expired interval timer %ld rearmed %s ticks %lld\n", (long)cur.it_interval.tv_sec,
                   cur.it_value.tv_sec > 3000 ? "yes" : "no",
                   read(22, &v, 8) == 8 ? (long long)v : -1ll);
            char mem[16] = "";
            struct stat st;
            fstat(23, &st);
            printf("memfd size %lld seals %#x pos %lld content %s", (long long)st.st_size, fcntl(23, F_GET_SEALS),
                   (long long)lseek(23, 0, SEEK_CUR), pread(23, mem, 13, 5000) == 13 && !memcmp(mem, "memfd-content", 13) ? "as written" : "differs");
            printf(", hole %s\n", pread(23, mem, 8, 100) == 8 && !memcmp(mem, "\0\0\0\0\0\0\0\0", 8) ? "zero" : "not zero");
            fstat(24, &st);
            printf("unlinked size %lld mode %04o links %ld mtime %lld.%09ld write-only %d pos %lld %lld\n", (long long)st.st_size,
                   st.st_mode & 07777, (long)st.st_nlink, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                   (fcntl(24, F_GETFL) & O_ACCMODE) == O_WRONLY, (long long)lseek(24, 0, SEEK_CUR), (long long)lseek(25, 0, SEEK_CUR));
            printf("unlinked read-write flags %#x\n", fcntl(31, F_GETFL));
            static char back[65536];
            long r1 = read(25, back, sizeof back), r0 = pread(25, mem, 3, 0);
            char where[64] = "";
            readlink("/proc/self/fd/24", where, sizeof where - 1);
            printf("unlinked in %s\n", strstr(where, "memfd:") ? "a memfd" : "a directory");
            printf("unlinked content %s\n", r1 == sizeof back && !memcmp(back, u, sizeof u) && r0 == 3 && !memcmp(mem, "abc", 3) ? "as written" : "differs");
            struct sockaddr_in name, peer;
            socklen_t nl = sizeof name, pl = sizeof peer;
            int listening = 0, reuse = 0, nodelay = 0, bcast = 0;
            socklen_t il = sizeof(int);
            getsockopt(26, SOL_SOCKET, SO_ACCEPTCONN, &listening, &il);
            getsockopt(26, SOL_SOCKET, SO_REUSEADDR, &reuse, &il);
            getsockopt(26, IPPROTO_TCP, TCP_NODELAY, &nodelay, &il);
            getsockopt(28, SOL_SOCKET, SO_BROADCAST, &bcast, &il);
            getsockname(26, (struct sockaddr *)&name, &nl);
            int c = socket(AF_INET, SOCK_STREAM, 0), a = -1;
            if (connect(c, (struct sockaddr *)&name, nl) == 0) a = accept(26, NULL, NULL);
            printf("tcp listening %d reuseaddr %d nodelay %d on 127.0.0.1 %s, accepts %s\n", listening, reuse, nodelay,
                   name.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && name.sin_port ? "with a port" : "without a port", a >= 0 ? "yes" : "no");
            close(c);
            if (a >= 0) close(a);
            nl = sizeof name;
            getsockname(27, (struct sockaddr *)&name, &nl);
            int peered = getpeername(28, (struct sockaddr *)&peer, &pl) == 0 && peer.sin_port == name.sin_port;
            char dgram[8] = "";
            int delivered = send(28, "dgram", 5, 0) == 5 && recv(27, dgram, sizeof dgram, 0) == 5 && !memcmp(dgram, "dgram", 5);
            printf("udp connected to the bound one %d, broadcast %d, delivers %d\n", peered, bcast, delivered);
            struct sockaddr_in second;
            socklen_t sl = sizeof second;
            int reuse29 = -1, reuse30 = -1, listening29 = 0, listening30 = 0;
            nl = sizeof name;
            getsockname(29, (struct sockaddr *)&name, &nl);
            getsockname(30, (struct sockaddr *)&second, &sl);
            getsockopt(29, SOL_SOCKET, SO_REUSEPORT, &reuse29, &il);
            getsockopt(30, SOL_SOCKET, SO_REUSEPORT, &reuse30, &il);
            getsockopt(29, SOL_SOCKET, SO_ACCEPTCONN, &listening29, &il);
            getsockopt(30, SOL_SOCKET, SO_ACCEPTCONN, &listening30, &il);
            printf("tcp reuseport 29 %d 30 %d, listening %d %d, one port %d\n", reuse29, reuse30, listening29, listening30,
                   name.sin_port == second.sin_port && name.sin_port != 0);
            socklen_t entries = 0, ll = sizeof linger, tl = sizeof timeout;
            getsockopt(27, SOL_SOCKET, SO_GET_FILTER, NULL, &entries);
            memset(&linger, 0, sizeof linger);
            memset(&timeout, 0, sizeof timeout);
            send_lock = 0;
            getsockopt(28, SOL_SOCKET, SO_LINGER, &linger, &ll);
            getsockopt(28, SOL_SOCKET, SO_RCVTIMEO, &timeout, &tl);
            getsockopt(28, SOL_SOCKET, SO_BUF_LOCK, &send_lock, &il);
            printf("udp filter %u entries, linger %d %d, receive timeout %ld.%06ld, buffer lock %d\n", entries, linger.l_onoff,
                   linger.l_linger, (long)timeout.tv_sec, (long)timeout.tv_usec, send_lock);
            errno = 0;
            long shut_sent = send(32, "x", 1, MSG_NOSIGNAL);
            printf("udp shut for sending: send %ld errno %d\n", shut_sent, errno);
            raise(SIGUSR2);
            struct signalfd_siginfo si;
            printf("signalfd %d\n", read(17, &si, sizeof si) == sizeof si ? (int)si.ssi_signo : -1);
            printf("report done\n");
        } else if (!strcmp(line, "exit")) {
            return 0;
        }
        fflush(stdout);
    }
    return 0;
}
