/*
 * faultfs: an LD_PRELOAD shim that makes one process's disk slow, failing
 * or full, for the fault tests and the chaos suite (built at run time with
 * cc by faultfs.rs).
 *
 * The process reads the file named by FAULTFS_CTL at every intercepted call,
 * so a test changes the fault while the process runs. One line:
 *   (empty) or "ok"     pass every call through
 *   "slow MS"           every fsync/fdatasync sleeps MS ms, then syncs
 *   "eio N [MS]"        the next N fsync/fdatasync calls sleep MS ms and fail
 *                       with EIO without syncing; then calls pass through
 *                       again, as a disk whose error was reported once
 *   "enospc N"          the next N pwrite calls on regular files fail with
 *                       ENOSPC; then calls pass through again
 * A count is consumed by rewriting the file. Only the calls the Raft log
 * makes are intercepted (pwrite/pwrite64, fsync/fdatasync); plain write(),
 * which the process logs with, is left alone.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

struct ctl {
    char mode[16];
    long n;
    long ms;
};

static void read_ctl(const char *path, struct ctl *c) {
    memset(c, 0, sizeof *c);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[128];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return;
    buf[r] = 0;
    if (sscanf(buf, "%15s %ld %ld", c->mode, &c->n, &c->ms) < 1) c->mode[0] = 0;
}

static void write_ctl(const char *path, const struct ctl *c) {
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return;
    char buf[128];
    int len = snprintf(buf, sizeof buf, "%s %ld %ld\n", c->mode, c->n, c->ms);
    if (len > 0) {
        ssize_t w = write(fd, buf, (size_t)len);
        (void)w;
    }
    close(fd);
}

static void sleep_ms(long ms) {
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* 0 to pass the call through, else the errno to fail it with. */
static int decide(int is_sync) {
    const char *path = getenv("FAULTFS_CTL");
    if (!path) return 0;
    int err = 0;
    long delay = 0;
    pthread_mutex_lock(&mu);
    struct ctl c;
    read_ctl(path, &c);
    if (is_sync && strcmp(c.mode, "slow") == 0) {
        delay = c.n;
    } else if (is_sync && strcmp(c.mode, "eio") == 0 && c.n > 0) {
        err = EIO;
        delay = c.ms;
        c.n--;
        write_ctl(path, &c);
    } else if (!is_sync && strcmp(c.mode, "enospc") == 0 && c.n > 0) {
        err = ENOSPC;
        c.n--;
        write_ctl(path, &c);
    }
    pthread_mutex_unlock(&mu);
    sleep_ms(delay);
    return err;
}

static int is_regular(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

typedef int (*sync_fn)(int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);

/* The real function `name`, looked up once per call site. */
static void *real_fn(void **slot, const char *name) {
    if (!*slot) *slot = dlsym(RTLD_NEXT, name);
    return *slot;
}

/* A sync, failed or delayed as the control file says. */
static int faulted_sync(void **slot, const char *name, int fd) {
    sync_fn real = (sync_fn)real_fn(slot, name);
    int err = decide(1);
    if (err) {
        errno = err;
        return -1;
    }
    return real(fd);
}

/* A positioned write; only writes to regular files can be failed. */
static ssize_t faulted_pwrite(void **slot, const char *name, int fd, const void *buf,
                              size_t count, off_t offset) {
    pwrite_fn real = (pwrite_fn)real_fn(slot, name);
    if (is_regular(fd)) {
        int err = decide(0);
        if (err) {
            errno = err;
            return -1;
        }
    }
    return real(fd, buf, count, offset);
}

int fdatasync(int fd) {
    static void *real;
    return faulted_sync(&real, "fdatasync", fd);
}

int fsync(int fd) {
    static void *real;
    return faulted_sync(&real, "fsync", fd);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    static void *real;
    return faulted_pwrite(&real, "pwrite64", fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    static void *real;
    return faulted_pwrite(&real, "pwrite", fd, buf, count, offset);
}
