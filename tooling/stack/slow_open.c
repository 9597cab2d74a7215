/* A slow issuer on OpenSSH: sshd with this library preloaded
 * - takes FISCALFLOW_SLOW_OPEN_MS in every read-only open(2) of a file whose name ends in
 *   FISCALFLOW_SLOW_OPEN_SUFFIX (the issuer's time to produce the file);
 * - drops a connection it accepts while FISCALFLOW_SLOW_MAX_CONNECTIONS are open (a busy issuer:
 *   clients must shrink their pools).  sshd's listener forks one child per connection and reaps it
 *   with waitpid when the connection ends, so the children it has not reaped are the open ones.
 *
 * sshd runs internal-sftp in a process of its own per SFTP channel, and that process serves one
 * request at a time: a channel serves one file per delay, the channels of a connection in parallel,
 * which is the model of tooling/stack/slow_sftp.py, at OpenSSH's CPU cost instead of a Python
 * server's.  Built by tooling/stack/sftp.py into the stack's directory (gcc -shared).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef int (*open_fn)(const char *, int, ...);

static long delay_ms, max_connections;
static char suffix[64];

/* Read at load, before sshd's main: its setproctitle later writes over the environment strings. */
__attribute__((constructor)) static void read_settings(void) {
    const char *v = getenv("FISCALFLOW_SLOW_OPEN_MS");
    const char *s = getenv("FISCALFLOW_SLOW_OPEN_SUFFIX");
    const char *c = getenv("FISCALFLOW_SLOW_MAX_CONNECTIONS");
    delay_ms = v ? atol(v) : 0;
    max_connections = c ? atol(c) : 0;
    if (s) strncpy(suffix, s, sizeof suffix - 1);
}

static void wait_if_issued(const char *path, int flags) {
    if (delay_ms <= 0 || !suffix[0] || !path || (flags & O_ACCMODE) != O_RDONLY) return;
    size_t n = strlen(path), m = strlen(suffix);
    if (n < m || strcmp(path + n - m, suffix) != 0) return;
    struct timespec left = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0) {
    }
}

static int call(open_fn *real, const char *name, const char *path, int flags, va_list ap) {
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) mode = va_arg(ap, mode_t);
    if (!*real) *real = (open_fn)dlsym(RTLD_NEXT, name);
    wait_if_issued(path, flags);
    return (*real)(path, flags, mode);
}

/* open and open64: the same wrapper (sshd calls open; a build with 64-bit offsets would call open64). */
#define SLOW_OPEN(name)                                   \
    int name(const char *path, int flags, ...) {          \
        static open_fn real;                              \
        va_list ap;                                       \
        va_start(ap, flags);                              \
        int fd = call(&real, #name, path, flags, ap);     \
        va_end(ap);                                       \
        return fd;                                        \
    }

SLOW_OPEN(open)
SLOW_OPEN(open64)

#define MAX_CHILDREN 4096
static volatile pid_t children[MAX_CHILDREN];  /* written from sshd's SIGCHLD handler too: no locks */

pid_t fork(void) {
    static pid_t (*real)(void);
    if (!real) real = (pid_t(*)(void))dlsym(RTLD_NEXT, "fork");
    pid_t pid = real();
    if (pid > 0) {
        for (int i = 0; i < MAX_CHILDREN; i++) {
            if (children[i] == 0) {
                children[i] = pid;
                break;
            }
        }
    } else if (pid == 0) {
        for (int i = 0; i < MAX_CHILDREN; i++) children[i] = 0;
    }
    return pid;
}

pid_t waitpid(pid_t pid, int *status, int options) {
    static pid_t (*real)(pid_t, int *, int);
    if (!real) real = (pid_t(*)(pid_t, int *, int))dlsym(RTLD_NEXT, "waitpid");
    pid_t done = real(pid, status, options);
    if (done > 0) {
        for (int i = 0; i < MAX_CHILDREN; i++) {
            if (children[i] == done) children[i] = 0;
        }
    }
    return done;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    int conn = real(fd, addr, len);
    if (conn < 0 || max_connections <= 0) return conn;
    long open_now = 0;
    for (int i = 0; i < MAX_CHILDREN; i++) open_now += children[i] != 0;
    if (open_now < max_connections) return conn;
    close(conn);
    errno = ECONNABORTED; /* sshd's accept loop goes on to the next connection */
    return -1;
}
