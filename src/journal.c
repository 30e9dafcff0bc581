/*
 * journal.c - see journal.h.
 *
 * The sync thread's whole interface is a FIFO of requests under a mutex and condition variable
 * ("sync fd up to position P", optionally also the directory, optionally closing fd afterwards: a
 * retired segment) and, back, the durable position and the last error under the same mutex plus one
 * eventfd write per finished request. The loop thread never waits on the disk, except in
 * cs_journal_close.
 */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "helper.h"
#include "jrecord.h"
#include "log.h"

#define SEG_SUFFIX      ".cjs"
#define SEG_NAME_LEN    (20 + 4)
#define DEFAULT_SEGMENT (64u << 20)

typedef struct jreq {
    int fd;       /* -1: none (the directory only) */
    int sync;     /* fdatasync fd */
    int close_fd; /* close fd afterwards (a retired segment) */
    int dirsync;  /* fsync the directory (a segment was created) */
    uint64_t upto;
    uint64_t delete_before; /* nonzero: delete the segments numbered below it, then fsync the directory */
    struct jreq *next;
} jreq_t;

struct cs_journal {
    char *dir;
    int dirfd;
    cs_jsync_t mode;
    size_t seg_bytes;

    int fd;              /* open segment, -1 before the first flush */
    int need_header;     /* its header is not written yet */
    int roll_next;       /* cs_journal_roll: the next flush starts a new segment */
    uint32_t roll_flags; /* ... whose header says this */
    uint32_t seg_flags;  /* the open segment's header flags */
    size_t seg_size;     /* bytes in it */
    uint64_t seg_first;
    uint64_t next_record; /* number of the next record appended */
    uint64_t flushed_records;

    cs_buf_t batch;
    uint64_t batch_records;
    uint64_t pending, written, durable, requested;
    int64_t last_req_ms;
    int need_dirsync;
    size_t segments;

    int efd;
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    jreq_t *q_head, *q_tail;
    int stop;
    uint64_t t_durable;
    uint64_t t_syncs;
    uint64_t t_sync_errors;
    uint64_t t_sync_us_sum, t_sync_us_max;
    int t_err;
    uint64_t t_deleted, t_deleted_bytes, t_deletes_asked, t_deletes_done;
};

int cs_journal_test_write_errno;
int cs_journal_test_sync_errno;

static uint64_t jmono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int cs_jsync_parse(const char *s, cs_jsync_t *out)
{
    if (strcmp(s, "none") == 0)
        *out = CS_JSYNC_NONE;
    else if (strcmp(s, "everysec") == 0)
        *out = CS_JSYNC_EVERYSEC;
    else if (strcmp(s, "always") == 0)
        *out = CS_JSYNC_ALWAYS;
    else
        return -EINVAL;
    return 0;
}

/* ---- Segment names ---- */

static int seg_name_number(const char *name, uint64_t *num)
{
    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 20, SEG_SUFFIX) != 0)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *num = v;
    return 0;
}

static int seg_filter(const struct dirent *de)
{
    uint64_t n;
    return seg_name_number(de->d_name, &n) == 0;
}

/* ---- The sync thread ---- */

/* Deletes every segment numbered below before (unlink, then the directory synced): on the sync thread, since
 * an unlink drops the file's pages from the page cache (ext4_evict_inode: ~2% of the loop thread's time
 * under ingest) and the directory's fsync waits for the disk. */
static void delete_segments(cs_journal_t *j, uint64_t before, uint64_t *n, uint64_t *bytes)
{
    struct dirent **names = NULL;
    int cnt = scandir(j->dir, &names, seg_filter, alphasort);
    if (cnt < 0) {
        cs_log_error("journal: cannot list %s to delete old segments: %s", j->dir, strerror(errno));
        return;
    }
    for (int i = 0; i < cnt; i++) {
        uint64_t num;
        struct stat sb;
        if (seg_name_number(names[i]->d_name, &num) == 0 && num < before) {
            if (fstatat(j->dirfd, names[i]->d_name, &sb, 0) == 0)
                *bytes += (uint64_t)sb.st_size;
            if (unlinkat(j->dirfd, names[i]->d_name, 0) != 0)
                cs_log_error("journal: cannot delete %s/%s: %s", j->dir, names[i]->d_name, strerror(errno));
            else
                (*n)++;
        }
        free(names[i]);
    }
    free(names);
    if (*n > 0 && fsync(j->dirfd) != 0)
        cs_log_warn("journal: fsync of %s after deleting segments: %s", j->dir, strerror(errno));
    if (*n > 0)
        cs_log_debug("journal: %" PRIu64 " segments (%" PRIu64 " bytes) before %" PRIu64 " deleted", *n,
                     *bytes, before);
}

static void *sync_main(void *arg)
{
    cs_journal_t *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (j->q_head == NULL && !j->stop)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->q_head == NULL)
            break;
        jreq_t *r = j->q_head;
        j->q_head = r->next;
        if (j->q_head == NULL)
            j->q_tail = NULL;
        pthread_mutex_unlock(&j->mu);

        if (r->delete_before != 0) {
            uint64_t n = 0, bytes = 0;
            delete_segments(j, r->delete_before, &n, &bytes);
            pthread_mutex_lock(&j->mu);
            j->t_deleted += n;
            j->t_deleted_bytes += bytes;
            j->t_deletes_done++;
            uint64_t one = 1;
            ssize_t w = write(j->efd, &one, sizeof(one));
            (void)w;
            free(r);
            continue;
        }
        int err = 0;
        uint64_t t0 = jmono_us();
        if (r->sync && r->fd >= 0 && fdatasync(r->fd) != 0)
            err = errno;
        if (r->dirsync && fsync(j->dirfd) != 0 && err == 0)
            err = errno;
        if (r->close_fd && r->fd >= 0)
            close(r->fd);
        if (err == 0 && cs_journal_test_sync_errno != 0)
            err = cs_journal_test_sync_errno;
        uint64_t took = jmono_us() - t0;

        pthread_mutex_lock(&j->mu);
        if (r->sync || r->dirsync) {
            if (err != 0) {
                j->t_err = err;
                j->t_sync_errors++;
            } else if (r->upto > j->t_durable) {
                j->t_durable = r->upto;
            }
            j->t_syncs++;
            j->t_sync_us_sum += took;
            if (took > j->t_sync_us_max)
                j->t_sync_us_max = took;
            uint64_t one = 1;
            ssize_t w = write(j->efd, &one, sizeof(one));
            (void)w; /* EAGAIN only when the counter is full: it is readable anyway */
        }
        free(r);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Queues a request; the last one for the same open fd is widened instead of adding another. */
static void enqueue(cs_journal_t *j, int fd, int sync, int close_fd, uint64_t upto)
{
    int dirsync = sync && j->need_dirsync;
    pthread_mutex_lock(&j->mu);
    jreq_t *t = j->q_tail;
    if (t != NULL && t->fd == fd && !t->close_fd) {
        t->sync |= sync;
        t->close_fd = close_fd;
        t->dirsync |= dirsync;
        if (upto > t->upto)
            t->upto = upto;
    } else {
        jreq_t *r = calloc(1, sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&j->mu);
            /* Out of memory: do it here rather than lose it. */
            cs_log_error("journal: out of memory for a sync request, syncing on the loop thread");
            int err = 0;
            if (sync && fd >= 0 && fdatasync(fd) != 0)
                err = errno;
            if (dirsync && fsync(j->dirfd) != 0 && err == 0)
                err = errno;
            if (close_fd && fd >= 0)
                close(fd);
            pthread_mutex_lock(&j->mu);
            if (err != 0)
                j->t_err = err;
            else if (sync && upto > j->t_durable)
                j->t_durable = upto;
            pthread_mutex_unlock(&j->mu);
            if (dirsync)
                j->need_dirsync = 0;
            uint64_t one = 1;
            ssize_t w = write(j->efd, &one, sizeof(one));
            (void)w;
            return;
        }
        r->fd = fd;
        r->sync = sync;
        r->close_fd = close_fd;
        r->dirsync = dirsync;
        r->upto = upto;
        if (t != NULL)
            t->next = r;
        else
            j->q_head = r;
        j->q_tail = r;
    }
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (dirsync)
        j->need_dirsync = 0;
}

/* ---- The writer ---- */

int cs_journal_open(cs_journal_t **out, const cs_journal_opts_t *opts, uint64_t first_record, char *detail,
                    size_t detail_len)
{
    struct dirent **names = NULL;
    int rc;

    *out = NULL;
    cs_journal_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->fd = -1;
    j->efd = -1;
    j->dirfd = -1;
    j->mode = opts->fsync;
    j->seg_bytes = opts->segment_bytes ? opts->segment_bytes : DEFAULT_SEGMENT;
    j->last_req_ms = INT64_MIN / 2;
    cs_buf_init(&j->batch, 0);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->dir = strdup(opts->dir);
    if (j->dir == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    j->dirfd = open(opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        rc = -errno;
        snprintf(detail, detail_len, "journal: cannot open directory %s: %s", opts->dir, strerror(errno));
        goto fail;
    }
    /* Name the first new segment after every one there. */
    int n = scandir(opts->dir, &names, seg_filter, alphasort);
    if (n < 0) {
        rc = -errno;
        snprintf(detail, detail_len, "journal: cannot list %s: %s", opts->dir, strerror(errno));
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        uint64_t num;
        if (seg_name_number(names[i]->d_name, &num) == 0 && num >= first_record)
            first_record = num + 1;
        free(names[i]);
    }
    free(names);
    j->next_record = first_record;
    j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (j->efd < 0) {
        rc = -errno;
        snprintf(detail, detail_len, "journal: eventfd: %s", strerror(errno));
        goto fail;
    }
    rc = cs_helper_start(&j->th, sync_main, j); /* it takes no signal (helper.h) */
    if (rc != 0) {
        snprintf(detail, detail_len, "journal: cannot start the sync thread: %s", strerror(rc));
        rc = -rc;
        goto fail;
    }
    j->th_started = 1;
    *out = j;
    return 0;
fail:
    cs_journal_close(j);
    return rc;
}

void cs_journal_close(cs_journal_t *j)
{
    if (j == NULL)
        return;
    if (j->th_started) {
        char detail[256];
        if (cs_buf_size(&j->batch) > 0 && cs_journal_flush(j, INT64_MAX / 2, detail, sizeof(detail)) != 0)
            cs_log_error("%s (at close: %" PRIu64 " records not written)", detail, j->batch_records);
        if (j->mode != CS_JSYNC_NONE && j->fd >= 0 && j->written > j->requested)
            cs_journal_sync(j);
        pthread_mutex_lock(&j->mu);
        j->stop = 1;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->th, NULL);
        uint64_t d;
        if (cs_journal_sync_done(j, &d) != 0)
            cs_log_error("journal: a sync failed before close: the last records may not be on disk");
    }
    if (j->fd >= 0)
        close(j->fd);
    if (j->efd >= 0)
        close(j->efd);
    if (j->dirfd >= 0)
        close(j->dirfd);
    cs_buf_free(&j->batch);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->dir);
    free(j);
}

int cs_journal_append(cs_journal_t *j, const cs_change_t *c, uint64_t *end)
{
    size_t before = cs_buf_size(&j->batch);
    int rc = cs_jrec_encode(&j->batch, c);
    if (rc != 0)
        return rc;
    j->pending += cs_buf_size(&j->batch) - before;
    j->batch_records++;
    if (end != NULL)
        *end = j->pending;
    return 0;
}

/* Starts a new segment, named by the number of the first record it will hold; the old one goes to the
 * sync thread (synced unless fsync is none, then closed). */
static int roll(cs_journal_t *j, char *detail, size_t detail_len)
{
    char name[SEG_NAME_LEN + 1];
    snprintf(name, sizeof(name), "%020" PRIu64 SEG_SUFFIX, j->next_record);
    int fd = openat(j->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(detail, detail_len, "journal: cannot create %s/%s: %s", j->dir, name, strerror(e));
        return -e;
    }
    if (j->fd >= 0)
        enqueue(j, j->fd, j->mode != CS_JSYNC_NONE, 1, j->written);
    j->fd = fd;
    j->need_header = 1;
    j->seg_flags = j->roll_next ? j->roll_flags : 0;
    j->roll_next = 0;
    j->seg_size = 0;
    j->seg_first = j->next_record;
    j->need_dirsync = 1;
    j->segments++;
    return 0;
}

static void request(cs_journal_t *j, int64_t now_ms)
{
    if (j->fd < 0 || j->written <= j->requested)
        return;
    enqueue(j, j->fd, 1, 0, j->written);
    j->requested = j->written;
    j->last_req_ms = now_ms;
}

int cs_journal_flush(cs_journal_t *j, int64_t now_ms, char *detail, size_t detail_len)
{
    size_t n = cs_buf_size(&j->batch);
    if (n > 0) {
        if (j->roll_next && j->need_header && j->fd >= 0) {
            /* The open segment has nothing in it yet: it becomes the new one. */
            j->seg_flags = j->roll_flags;
            j->roll_next = 0;
        }
        if (j->fd < 0 || j->roll_next || (j->seg_size >= j->seg_bytes && !j->need_header)) {
            int rc = roll(j, detail, detail_len);
            if (rc != 0)
                return rc;
        }
        unsigned char header[CS_JREC_HEADER_SIZE];
        cs_buf_t hb;
        cs_buf_init(&hb, 0);
        struct iovec iov[2];
        int iovcnt = 0;
        if (j->need_header) {
            if (cs_jrec_header_encode_flags(&hb, j->seg_first, j->seg_flags) != 0) {
                snprintf(detail, detail_len, "journal: out of memory");
                return -ENOMEM;
            }
            memcpy(header, hb.p, sizeof(header));
            cs_buf_free(&hb);
            iov[iovcnt++] = (struct iovec){header, sizeof(header)};
        }
        iov[iovcnt++] = (struct iovec){(void *)cs_buf_data(&j->batch), n};
        size_t total = n + (j->need_header ? sizeof(header) : 0), done = 0;
        struct iovec *v = iov;
        while (done < total) {
            ssize_t w;
            if (cs_journal_test_write_errno != 0) {
                w = -1;
                errno = cs_journal_test_write_errno;
            } else {
                w = writev(j->fd, v, iovcnt);
            }
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int e = w < 0 ? errno : ENOSPC;
                /* Cut the segment back: nothing of this batch is in the file, all of it stays pending. */
                if (done > 0 && ftruncate(j->fd, (off_t)j->seg_size) != 0)
                    cs_log_error("journal: cannot cut %s back after a failed write: %s", j->dir,
                                 strerror(errno));
                snprintf(detail, detail_len, "journal: write to %s failed: %s (%zu bytes pending)", j->dir,
                         strerror(e), n);
                return -e;
            }
            done += (size_t)w;
            while (iovcnt > 0 && (size_t)w >= v->iov_len) {
                w -= (ssize_t)v->iov_len;
                v++;
                iovcnt--;
            }
            if (iovcnt > 0) {
                v->iov_base = (char *)v->iov_base + w;
                v->iov_len -= (size_t)w;
            }
        }
        j->seg_size += total;
        j->need_header = 0;
        j->written += n;
        j->next_record += j->batch_records;
        j->flushed_records += j->batch_records;
        j->batch_records = 0;
        cs_buf_consume(&j->batch, n);
        cs_buf_shrink(&j->batch, 1 << 20);
    }
    if (j->mode == CS_JSYNC_ALWAYS)
        request(j, now_ms);
    else
        cs_journal_tick(j, now_ms);
    return 0;
}

int cs_journal_roll(cs_journal_t *j, int64_t now_ms, uint32_t flags, uint64_t *first_record, char *detail,
                    size_t detail_len)
{
    int rc = cs_journal_flush(j, now_ms, detail, detail_len);
    if (rc != 0)
        return rc;
    j->roll_next = 1;
    j->roll_flags = flags;
    if (first_record != NULL)
        *first_record = j->next_record;
    return 0;
}

void cs_journal_tick(cs_journal_t *j, int64_t now_ms)
{
    if (j->mode == CS_JSYNC_EVERYSEC && now_ms - j->last_req_ms >= 1000)
        request(j, now_ms);
}

void cs_journal_sync(cs_journal_t *j)
{
    /* Also when a sync covering it all was asked for already: that one may have failed. */
    if (j->fd < 0)
        return;
    enqueue(j, j->fd, 1, 0, j->written);
    j->requested = j->written;
}

void cs_journal_delete_before(cs_journal_t *j, uint64_t first_record)
{
    if (first_record == 0)
        return; /* no segment is numbered below 0 (and 0 in a request means "not a delete") */
    jreq_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        uint64_t n = 0, bytes = 0;
        cs_log_error("journal: out of memory for a delete request: deleting on the loop thread");
        delete_segments(j, first_record, &n, &bytes);
        pthread_mutex_lock(&j->mu);
        j->t_deleted += n;
        j->t_deleted_bytes += bytes;
        pthread_mutex_unlock(&j->mu);
        return;
    }
    r->fd = -1;
    r->delete_before = first_record;
    pthread_mutex_lock(&j->mu);
    if (j->q_tail != NULL)
        j->q_tail->next = r;
    else
        j->q_head = r;
    j->q_tail = r;
    j->t_deletes_asked++;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

int cs_journal_fd(const cs_journal_t *j)
{
    return j->efd;
}

int cs_journal_sync_done(cs_journal_t *j, uint64_t *durable)
{
    uint64_t v;
    ssize_t r = read(j->efd, &v, sizeof(v));
    (void)r; /* EAGAIN: nothing new, the position is still right */
    pthread_mutex_lock(&j->mu);
    int err = j->t_err;
    j->t_err = 0;
    j->durable = j->t_durable;
    pthread_mutex_unlock(&j->mu);
    *durable = j->durable;
    return -err;
}

void cs_journal_position(const cs_journal_t *j, cs_journal_pos_t *p)
{
    p->pending = j->pending;
    p->written = j->written;
    p->durable = j->durable;
    pthread_mutex_lock((pthread_mutex_t *)&j->mu);
    p->syncs = j->t_syncs;
    p->sync_errors = j->t_sync_errors;
    p->sync_us_sum = j->t_sync_us_sum;
    p->sync_us_max = j->t_sync_us_max;
    pthread_mutex_unlock((pthread_mutex_t *)&j->mu);
    pthread_mutex_lock((pthread_mutex_t *)&j->mu);
    p->segments_deleted = j->t_deleted;
    p->deleted_bytes = j->t_deleted_bytes;
    p->deletes_pending = j->t_deletes_asked - j->t_deletes_done;
    pthread_mutex_unlock((pthread_mutex_t *)&j->mu);
    p->segments = j->segments;
    p->records = j->flushed_records;
}

/* ---- The reader ---- */

static int read_all(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO; /* shorter than fstat said */
        got += (size_t)r;
    }
    return 0;
}

/* A mapped segment gives back the pages behind the read position every this many bytes: the replay's
 * memory stays the store's, not the store's plus a segment (a snapshot segment is as large as the store). */
#define READ_DROP_BEHIND (32u << 20)

/*
 * A segment's bytes, read-only: mapped (MADV_SEQUENTIAL: the kernel reads ahead), so nothing is copied
 * and only the pages looked at are read — a segment the filter leaves out costs its header. Where
 * mapping fails, read into *buf. *map gets what to munmap (NULL: nothing).
 */
static int seg_load(int fd, size_t size, const unsigned char **out, void **map, unsigned char **buf,
                    size_t *cap)
{
    *map = NULL;
    if (size == 0) {
        *out = (const unsigned char *)"";
        return 0;
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
        (void)madvise(m, size, MADV_SEQUENTIAL);
        *map = m;
        *out = m;
        return 0;
    }
    if (size > *cap) {
        unsigned char *nb = realloc(*buf, size);
        if (nb == NULL)
            return -ENOMEM;
        *buf = nb;
        *cap = size;
    }
    *out = *buf;
    return read_all(fd, *buf, size);
}

/* Gives back the mapped pages before upto, every READ_DROP_BEHIND bytes (the file's pages stay in the
 * page cache; the records' strings are only read during their callback), and asks the kernel to read the
 * next READ_AHEAD bytes now (MADV_WILLNEED: the I/O runs while the records before it are replayed; a
 * fault's own read-ahead is a few hundred KiB at a time, and a cold replay waited on each). */
#define READ_AHEAD (2 * READ_DROP_BEHIND)

static void seg_read_ahead(void *map, size_t size, size_t from)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    from &= ~(page - 1);
    if (map == NULL || from >= size)
        return;
    (void)madvise((unsigned char *)map + from, size - from < READ_AHEAD ? size - from : READ_AHEAD,
                  MADV_WILLNEED);
}

static void seg_drop_behind(void *map, size_t size, size_t *dropped, size_t upto)
{
    if (map == NULL || upto - *dropped < READ_DROP_BEHIND)
        return;
    size_t end = upto & ~((size_t)sysconf(_SC_PAGESIZE) - 1);
    if (end > *dropped) {
        (void)madvise((unsigned char *)map + *dropped, end - *dropped, MADV_DONTNEED);
        *dropped = end;
        /* The window ahead: what the last call asked for reached end + READ_DROP_BEHIND. */
        seg_read_ahead(map, size, end + READ_DROP_BEHIND);
    }
}

int cs_journal_read(const char *dir, cs_journal_record_fn fn, void *data, cs_journal_read_stats_t *st,
                    char *detail, size_t detail_len)
{
    return cs_journal_read_ex(dir, NULL, fn, data, st, detail, detail_len);
}

int cs_journal_read_ex(const char *dir, const cs_journal_read_opts_t *opts, cs_journal_record_fn fn,
                       void *data, cs_journal_read_stats_t *st, char *detail, size_t detail_len)
{
    int ro = opts != NULL && opts->readonly;
    struct dirent **names = NULL;
    unsigned char *buf = NULL; /* where a segment is read when it cannot be mapped */
    size_t cap = 0;
    void *map = NULL; /* the segment mapped (unmapped when the next one begins, and at the end) */
    size_t map_size = 0;
    int rc = 0, i, n;

    memset(st, 0, sizeof(*st));
    n = scandir(dir, &names, seg_filter, alphasort);
    if (n < 0) {
        rc = -errno;
        snprintf(detail, detail_len, "journal: cannot list %s: %s", dir, strerror(errno));
        return rc;
    }
    for (i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX];
        const char *name = names[i]->d_name;
        int last = i == n - 1;
        struct stat sb;
        uint64_t first = 0;
        uint32_t version = 0;

        if (map != NULL)
            munmap(map, map_size);
        map = NULL;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &sb) != 0) {
            rc = -errno;
            snprintf(detail, detail_len, "journal: cannot read %s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            break;
        }
        size_t size = (size_t)sb.st_size, dropped = 0;
        const unsigned char *seg;
        rc = seg_load(fd, size, &seg, &map, &buf, &cap);
        map_size = size;
        close(fd); /* a mapping outlives its descriptor */
        if (rc != 0) {
            snprintf(detail, detail_len, "journal: cannot read %s (%zu bytes): %s", path, size,
                     strerror(-rc));
            break;
        }
        st->segments++;

        cs_jrec_result_t r = cs_jrec_header_decode(seg, size, &version, &first);
        if (r == CS_JREC_NEWER_VERSION) {
            snprintf(detail, detail_len,
                     "journal: %s was written by journal format version %u; this build reads version %u "
                     "and older: refusing to start (upgrade crewstream or move the journal away)",
                     path, version, CS_JREC_VERSION);
            cs_log_error("%s", detail);
            rc = -EPROTONOSUPPORT;
            break;
        }
        if (r == CS_JREC_TORN && last && ro) {
            continue;
        }
        if (r == CS_JREC_TORN && last) {
            cs_log_warn("journal: %s is shorter than a segment header (%zu bytes; a crash while it was "
                        "created): removed",
                        path, size);
            if (unlink(path) != 0) {
                rc = -errno;
                snprintf(detail, detail_len, "journal: cannot remove %s: %s", path, strerror(errno));
                break;
            }
            st->truncated++;
            st->truncated_bytes += size;
            continue;
        }
        if (r != CS_JREC_OK) {
            if (ro)
                continue;
            cs_log_warn("journal: %s: %s header: the segment (%zu bytes) is skipped", path,
                        r == CS_JREC_TORN ? "incomplete" : "not a journal segment's", size);
            st->bad_segments++;
            st->skipped_bytes += size;
            continue;
        }

        if (opts != NULL && opts->segment != NULL &&
            opts->segment(data, first, cs_jrec_header_flags(seg)) != 0) {
            st->skipped_segments++;
            continue;
        }
        uint64_t recno = first;
        size_t off = CS_JREC_HEADER_SIZE;
        seg_read_ahead(map, size, 0);
        while (off < size) {
            cs_change_t c;
            size_t used;
            seg_drop_behind(map, size, &dropped, off);
            r = cs_jrec_decode(seg + off, size - off, &c, &used);
            if (r == CS_JREC_OK) {
                if (fn(data, &c, recno) != 0) {
                    snprintf(detail, detail_len, "journal: replay stopped at record %" PRIu64 " of %s", recno,
                             path);
                    rc = -ECANCELED;
                    break;
                }
                st->records++;
                st->bytes += used;
                recno++;
                off += used;
                continue;
            }
            if (ro) {
                /* Reading only: the next read logs and cuts it; counted (not logged) unless it is a torn
                 * tail, so a look can tell damage from a crash mid-write. */
                if (!(r == CS_JREC_TORN && last))
                    st->bad_segments++;
            } else if (r == CS_JREC_TORN && last) {
                cs_log_warn("journal: %s: torn record at offset %zu (record %" PRIu64 ", %zu bytes; a crash "
                            "mid-write): truncated",
                            path, off, recno, size - off);
                if (truncate(path, (off_t)off) != 0) {
                    rc = -errno;
                    snprintf(detail, detail_len, "journal: cannot truncate %s: %s", path, strerror(errno));
                    break;
                }
                st->truncated++;
                st->truncated_bytes += size - off;
            } else {
                cs_log_warn("journal: %s: %s at offset %zu (record %" PRIu64 "): the rest of the segment "
                            "(%zu bytes) is skipped",
                            path, cs_jrec_result_name(r), off, recno, size - off);
                st->bad_segments++;
                st->skipped_bytes += size - off;
            }
            break;
        }
        if (recno > st->next_record)
            st->next_record = recno;
    }
    if (map != NULL)
        munmap(map, map_size);
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(buf);
    return rc;
}
