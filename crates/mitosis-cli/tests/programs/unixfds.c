/* Unix sockets, fifos and inotify instances whose whole state is inside the
 * process, across a remote fork.
 *
 *   unixfds [DIR]
 *             opens, at fixed numbers (NAME is DIR/unixfds-<pid>; DIR is the
 *             working directory by default):
 *               30, 31 a SOCK_STREAM socketpair: 100000 patterned bytes
 *                  written on 31 wait on 30, "hello from 30" written on 30
 *                  waits on 31; 30 is non-blocking, 31 close-on-exec
 *               32, 33 a SOCK_SEQPACKET socketpair: "one", "" and 3000 bytes
 *                  wait on 33, "back" on 32; then 32 is shut for writing
 *               34, 35 a SOCK_DGRAM socketpair: five messages of 1, 2, 3,
 *                  100 and 5000 bytes wait on 35; SO_SNDBUF of 34 set
 *               36 a SOCK_STREAM socket bound to the path NAME.sock (chmod
 *                  0600), listening
 *               37 a SOCK_SEQPACKET socket bound to the abstract name
 *                  unixfds-<pid> (\0 first), listening
 *               38 a SOCK_DGRAM socket bound to the abstract name
 *                  unixfds-<pid>-dgram, with two messages from 49 waiting
 *               39 a SOCK_STREAM socket, unbound
 *               40 the fifo NAME.fifo (mode 0640) opened read-write, holding
 *                  5000 patterned bytes; 41 the same fifo opened read-only
 *                  (non-blocking); 42 the fifo NAME.ghost opened read-write
 *                  holding "ghost", then unlinked
 *               43 an inotify instance (non-blocking) watching DIR for
 *                  IN_CREATE under watch descriptor 2 (watch 1, of "/",
 *                  added first and removed; its pending IN_IGNORED event
 *                  read)
 *               44 a client connected to 36, accepted as 45: "to server"
 *                  waits on 45, "to client" on 44
 *               46 a client connected to 36, waiting to be accepted
 *               47 a SOCK_STREAM socket whose peer wrote "last words" and
 *                  closed
 *               49 a SOCK_DGRAM socket connected to 38 (sending to it by default)
 *               50 a SOCK_STREAM socket connected to a socket of another
 *                  process (a child that accepted it, and dies with this
 *                  process): not listed by "report", which says whether it
 *                  is open
 *               51 a SOCK_DGRAM socket bound to NAME.d/sk, whose name and
 *                  directory NAME.d were then removed
 *             prints "ready <pid>" and answers stdin lines:
 *
 *   report    "fds <numbers from 30 to 63>", then one line per object with its
 *             state (reading the queues, using the listeners, creating a
 *             file in DIR and finding its event among others)
 *   cleanup   remove NAME.sock and NAME.fifo at exit
 *   exit      exit 0
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define STREAM_BYTES 100000

static int at(int fd, int want) {
    if (fd < 0) { perror("create"); exit(1); }
    if (fd == want) return fd;
    if (dup2(fd, want) != want) { perror("dup2"); exit(1); }
    close(fd);
    return want;
}

static void pair(int type, int a, int b) {
    int sv[2];
    if (socketpair(AF_UNIX, type, 0, sv)) { perror("socketpair"); exit(1); }
    at(sv[0], a);
    at(sv[1], b);
}

static void list_fds(void) {
    /* From 30: a test harness may leak a descriptor of its own into the seed below. */
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
    for (int i = 30; i < 64; i++)
        if (i != 50)
            if (seen[i]) printf(" %d", i);
    printf("\n");
}

static int cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }
static int nonblock(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

static socklen_t abstract(struct sockaddr_un *a, const char *name) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(a->sun_path + 1, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static int sockint(int fd, int opt) {
    int v = -1;
    socklen_t l = sizeof v;
    getsockopt(fd, SOL_SOCKET, opt, &v, &l);
    return v;
}

/* Connects a new socket of `type` to listener `fd` by its own name, accepts,
 * and sends a byte each way: 1 when all of it works. */
static int accepts(int fd, int type) {
    struct sockaddr_un name;
    socklen_t nl = sizeof name;
    if (getsockname(fd, (struct sockaddr *)&name, &nl)) return 0;
    int c = socket(AF_UNIX, type, 0), a = -1, ok = 0;
    char x = 0, y = 0;
    if (connect(c, (struct sockaddr *)&name, nl) == 0 && (a = accept(fd, NULL, NULL)) >= 0)
        ok = write(c, "c", 1) == 1 && read(a, &x, 1) == 1 && write(a, "a", 1) == 1 && read(c, &y, 1) == 1 && x == 'c' && y == 'a';
    close(c);
    if (a >= 0) close(a);
    return ok;
}

int main(int argc, char **argv) {
    const char *watch = argc > 1 ? argv[1] : ".";
    char name[64], path[96], fifo[96], ghost[96];
    snprintf(name, sizeof name, "unixfds-%d", (int)getpid());
    snprintf(path, sizeof path, "%s/%s.sock", watch, name);
    snprintf(fifo, sizeof fifo, "%s/%s.fifo", watch, name);
    snprintf(ghost, sizeof ghost, "%s/%s.ghost", watch, name);
    static unsigned char pattern[STREAM_BYTES];
    for (int i = 0; i < STREAM_BYTES; i++) pattern[i] = (unsigned char)(i * 13 + i / 257);

    pair(SOCK_STREAM, 30, 31);
    if (write(31, pattern, STREAM_BYTES) != STREAM_BYTES || write(30, "hello from 30", 13) != 13) { perror("stream"); return 1; }
    fcntl(30, F_SETFL, O_NONBLOCK);
    fcntl(31, F_SETFD, FD_CLOEXEC);

    pair(SOCK_SEQPACKET, 32, 33);
    static char big[5000];
    char events[4096];
    memset(big, 'b', sizeof big);
    if (send(32, "one", 3, 0) != 3 || send(32, "", 0, 0) != 0 || send(32, big, 3000, 0) != 3000 || send(33, "back", 4, 0) != 4 ||
        shutdown(32, SHUT_WR)) { perror("seqpacket"); return 1; }

    pair(SOCK_DGRAM, 34, 35);
    int sndbuf = 100000;
    if (setsockopt(34, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf)) { perror("SO_SNDBUF"); return 1; }
    int sizes[5] = {1, 2, 3, 100, 5000};
    for (int i = 0; i < 5; i++) {
        memset(big, 'a' + i, (size_t)sizes[i]);
        if (send(34, big, (size_t)sizes[i], 0) != sizes[i]) { perror("dgram"); return 1; }
    }

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, path);
    unlink(path);
    at(socket(AF_UNIX, SOCK_STREAM, 0), 36);
    if (bind(36, (struct sockaddr *)&addr, sizeof addr) || chmod(path, 0600) || listen(36, 7)) { perror("bind path"); return 1; }
    at(socket(AF_UNIX, SOCK_SEQPACKET, 0), 37);
    socklen_t al = abstract(&addr, name);
    if (bind(37, (struct sockaddr *)&addr, al) || listen(37, 3)) { perror("bind abstract"); return 1; }
    char dgram_name[80];
    snprintf(dgram_name, sizeof dgram_name, "%s-dgram", name);
    at(socket(AF_UNIX, SOCK_DGRAM, 0), 38);
    al = abstract(&addr, dgram_name);
    if (bind(38, (struct sockaddr *)&addr, al)) { perror("bind dgram"); return 1; }
    at(socket(AF_UNIX, SOCK_STREAM, 0), 39);

    unlink(fifo);
    unlink(ghost);
    if (mkfifo(fifo, 0600) || chmod(fifo, 0640) || mkfifo(ghost, 0600)) { perror("mkfifo"); return 1; }
    at(open(fifo, O_RDWR), 40);
    at(open(fifo, O_RDONLY | O_NONBLOCK), 41);
    if (write(40, pattern, 5000) != 5000) { perror("fifo"); return 1; }
    at(open(ghost, O_RDWR), 42);
    if (write(42, "ghost", 5) != 5 || unlink(ghost)) { perror("ghost"); return 1; }

    at(inotify_init1(IN_NONBLOCK), 43);
    int first = inotify_add_watch(43, "/", IN_CREATE);
    int second = inotify_add_watch(43, watch, IN_CREATE);
    if (first != 1 || second != 2 || inotify_rm_watch(43, first)) { perror("inotify"); return 1; }
    if (read(43, events, sizeof events) <= 0) { perror("inotify read"); return 1; }

    struct sockaddr_un listener = {.sun_family = AF_UNIX};
    strcpy(listener.sun_path, path);
    at(socket(AF_UNIX, SOCK_STREAM, 0), 44);
    if (connect(44, (struct sockaddr *)&listener, sizeof listener)) { perror("connect"); return 1; }
    at(accept(36, NULL, NULL), 45);
    if (write(44, "to server", 9) != 9 || write(45, "to client", 9) != 9) { perror("connection"); return 1; }
    at(socket(AF_UNIX, SOCK_STREAM, 0), 46);
    if (connect(46, (struct sockaddr *)&listener, sizeof listener)) { perror("connect"); return 1; }

    pair(SOCK_STREAM, 47, 48);
    if (write(48, "last words", 10) != 10) { perror("orphan"); return 1; }
    close(48);

    at(socket(AF_UNIX, SOCK_DGRAM, 0), 49);
    al = abstract(&addr, dgram_name);
    if (connect(49, (struct sockaddr *)&addr, al)) { perror("connect dgram"); return 1; }
    if (send(49, "waiting one", 11, 0) != 11 || send(49, "waiting two", 11, 0) != 11) { perror("queue dgram"); return 1; }

    char outside[80];
    snprintf(outside, sizeof outside, "%s-outside", name);
    int helper_sk = socket(AF_UNIX, SOCK_STREAM, 0);
    al = abstract(&addr, outside);
    if (bind(helper_sk, (struct sockaddr *)&addr, al) || listen(helper_sk, 1)) { perror("outside"); return 1; }
    pid_t self = getpid();
    if (fork() == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != self) _exit(0);
        int c = accept(helper_sk, NULL, NULL);
        char b;
        while (read(c, &b, 1) > 0) {}
        _exit(0);
    }
    at(socket(AF_UNIX, SOCK_STREAM, 0), 50);
    if (connect(50, (struct sockaddr *)&addr, al)) { perror("connect outside"); return 1; }
    close(helper_sk);

    char gone_dir[sizeof path];
    snprintf(gone_dir, sizeof gone_dir, "%s/%s.d", watch, name);
    struct sockaddr_un in_gone = {.sun_family = AF_UNIX};
    snprintf(in_gone.sun_path, sizeof in_gone.sun_path, "%s/sk", gone_dir);
    at(socket(AF_UNIX, SOCK_DGRAM, 0), 51);
    if (mkdir(gone_dir, 0755) || bind(51, (struct sockaddr *)&in_gone, sizeof in_gone) || unlink(in_gone.sun_path) || rmdir(gone_dir)) {
        perror("a socket in a removed directory");
        return 1;
    }

    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[128];
    int cleanup = 0;
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "report")) {
            list_fds();
            printf("flags cloexec %d%d nonblock %d%d%d\n", cloexec(30), cloexec(31), nonblock(30), nonblock(31), nonblock(41));
            /* The stream pair, both ways, and still a pair. */
            static unsigned char got[STREAM_BYTES + 1];
            long total = 0, r;
            while ((r = read(30, got + total, sizeof got - total)) > 0) total += r;
            printf("stream 30 %ld bytes %s, then %s\n", total,
                   total == STREAM_BYTES && !memcmp(got, pattern, STREAM_BYTES) ? "as written" : "differ", r < 0 && errno == EAGAIN ? "EAGAIN" : "other");
            char small[64] = "";
            r = recv(31, small, sizeof small, MSG_DONTWAIT);
            printf("stream 31 %ld \"%.*s\"\n", r, r > 0 ? (int)r : 0, small);
            printf("stream pair connected %d\n", write(31, "z", 1) == 1 && read(30, small, 1) == 1 && small[0] == 'z');
            /* The seqpacket pair: boundaries, the shutdown. */
            /* "one", the empty one, 3000 bytes, then end of file (0 again and again). */
            printf("seqpacket 33");
            for (int i = 0; i < 5; i++) printf(" %ld", (long)recv(33, big, sizeof big, MSG_DONTWAIT));
            printf("\n");
            r = recv(32, small, sizeof small, MSG_DONTWAIT);
            printf("seqpacket 32 %ld \"%.*s\", sends %s\n", r, r > 0 ? (int)r : 0, small, send(32, "x", 1, MSG_NOSIGNAL) < 0 ? "no" : "yes");
            /* The datagram pair. */
            printf("dgram 35");
            while ((r = recv(35, big, sizeof big, MSG_DONTWAIT)) >= 0) {
                int same = 1;
                for (long i = 0; i < r; i++) same &= big[i] == big[0];
                printf(" %ld%c", r, same && r ? big[0] : '?');
            }
            printf("; sndbuf of 34 %d\n", sockint(34, SO_SNDBUF));
            printf("dgram pair connected %d\n", send(35, "q", 1, 0) == 1 && recv(34, small, 1, MSG_DONTWAIT) == 1 && small[0] == 'q');
            /* The connections through 36: accepted, and waiting. */
            r = recv(45, small, sizeof small, MSG_DONTWAIT);
            long r2 = recv(44, small + 32, 32, MSG_DONTWAIT);
            struct sockaddr_un n36, n45;
            socklen_t l36 = sizeof n36, l45 = sizeof n45;
            getsockname(36, (struct sockaddr *)&n36, &l36);
            getsockname(45, (struct sockaddr *)&n45, &l45);
            printf("accepted 45 \"%.*s\" 44 \"%.*s\" named as the listener %d\n", r > 0 ? (int)r : 0, small, r2 > 0 ? (int)r2 : 0, small + 32,
                   l36 == l45 && !memcmp(&n36, &n45, l36));
            int waiting = accept(36, NULL, NULL);
            char x = 0;
            printf("waiting 46 accepted %d delivers %d\n", waiting >= 0,
                   waiting >= 0 && write(46, "w", 1) == 1 && read(waiting, &x, 1) == 1 && x == 'w');
            if (waiting >= 0) close(waiting);
            r = recv(47, small, sizeof small, MSG_DONTWAIT);
            r2 = recv(47, small + 32, 32, MSG_DONTWAIT);
            printf("orphan 47 \"%.*s\" then %ld\n", r > 0 ? (int)r : 0, small, r2);
            /* The lone sockets. */
            struct stat st;
            int bound = stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
            printf("path listener type %d listening %d file %d mode %04o accepts %d\n", sockint(36, SO_TYPE), sockint(36, SO_ACCEPTCONN),
                   bound, bound ? st.st_mode & 07777 : 0, accepts(36, SOCK_STREAM));
            struct sockaddr_un got_name;
            socklen_t nl = sizeof got_name;
            getsockname(37, (struct sockaddr *)&got_name, &nl);
            al = abstract(&addr, name);
            printf("abstract listener type %d listening %d named %d accepts %d\n", sockint(37, SO_TYPE), sockint(37, SO_ACCEPTCONN),
                   nl == al && !memcmp(&got_name, &addr, al), accepts(37, SOCK_SEQPACKET));
            char first[32] = "", second[32] = "";
            ssize_t q1 = recv(38, first, sizeof first - 1, MSG_DONTWAIT), q2 = recv(38, second, sizeof second - 1, MSG_DONTWAIT);
            printf("dgram 38 queued %zd %s, %zd %s, then %zd\n", q1, first, q2, second, recv(38, small, sizeof small, MSG_DONTWAIT));
            int s = socket(AF_UNIX, SOCK_DGRAM, 0);
            al = abstract(&addr, dgram_name);
            int sent = sendto(s, "to-38", 5, 0, (struct sockaddr *)&addr, al) == 5;
            close(s);
            printf("abstract dgram delivers %d\n", sent && recv(38, small, sizeof small, MSG_DONTWAIT) == 5 && !memcmp(small, "to-38", 5));
            sent = send(49, "by default", 10, 0) == 10;
            printf("dgram 49 sends to 38 %d\n", sent && recv(38, small, sizeof small, MSG_DONTWAIT) == 10 && !memcmp(small, "by default", 10));
            nl = sizeof got_name;
            getsockname(39, (struct sockaddr *)&got_name, &nl);
            printf("unbound type %d name length %d listening %d\n", sockint(39, SO_TYPE), (int)nl, sockint(39, SO_ACCEPTCONN));
            /* The fifos. */
            fstat(40, &st);
            printf("fifo %d mode %04o rdwr %d capacity %d", S_ISFIFO(st.st_mode), st.st_mode & 07777, (fcntl(40, F_GETFL) & O_ACCMODE) == O_RDWR,
                   fcntl(40, F_GETPIPE_SZ));
            total = 0;
            while ((r = read(41, got + total, 4096)) > 0) total += r;
            printf(" %ld bytes %s\n", total, total == 5000 && !memcmp(got, pattern, 5000) ? "as written" : "differ");
            printf("fifo ends one fifo %d\n", write(40, "f", 1) == 1 && read(41, small, 1) == 1 && small[0] == 'f');
            fstat(42, &st);
            r = read(42, small, sizeof small);
            printf("ghost fifo %d links %ld \"%.*s\"\n", S_ISFIFO(st.st_mode), (long)st.st_nlink, r > 0 ? (int)r : 0, small);
            /* The inotify watch fires. */
            char file[160];
            snprintf(file, sizeof file, "%s/made-by-%d", watch, (int)getpid());
            int fd = open(file, O_CREAT | O_WRONLY, 0600);
            close(fd);
            unlink(file);
            /* DIR may be a busy one (/tmp): ours among the events of the next 2 s. */
            char want[64];
            snprintf(want, sizeof want, "made-by-%d", (int)getpid());
            int found = 0, wd = 0;
            unsigned mask = 0;
            for (int tries = 0; tries < 200 && !found; tries++) {
                r = read(43, events, sizeof events);
                if (r <= 0) { usleep(10000); continue; }
                for (char *p = events; p < events + r; p += sizeof(struct inotify_event) + ((struct inotify_event *)p)->len) {
                    struct inotify_event *ev = (struct inotify_event *)p;
                    if (ev->len && !strcmp(ev->name, want)) { found = 1; wd = ev->wd; mask = ev->mask; break; }
                }
            }
            printf("inotify %s wd %d mask %#x, nonblock %d\n", found ? "event" : "nothing", wd, mask, nonblock(43));
            struct sockaddr_un n51;
            socklen_t l51 = sizeof n51;
            struct stat gone_st;
            int named = !getsockname(51, (struct sockaddr *)&n51, &l51) && !strcmp(n51.sun_path, in_gone.sun_path);
            printf("removed directory 51 named %d directory there %d\n", named, !stat(gone_dir, &gone_st));
            printf("outside 50 open %d\n", fcntl(50, F_GETFD) >= 0);
            printf("report done\n");
        } else if (!strcmp(line, "cleanup")) {
            cleanup = 1;
        } else if (!strcmp(line, "exit")) {
            break;
        }
        fflush(stdout);
    }
    if (cleanup) {
        unlink(path);
        unlink(fifo);
    }
    return 0;
}
