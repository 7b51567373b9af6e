/* bench_daemon — load generator for the daemon benchmarks (BENCHMARKS.md,
 * "Daemon"), and the client side of the beanstalkd anchor. Not part of
 * pass/fail; tests/bench/run_daemon.py starts the daemon and the anchors.
 *
 *   bench_daemon rtt SOCKET PIPELINE [N]              one Submit per round trip
 *   bench_daemon batch SOCKET PIPELINE [N [IN_FLIGHT]] SubmitBatch of 1000, pipelined
 *   bench_daemon clients SOCKET PIPELINE THREADS [N]  THREADS connections, one Submit
 *                                                     per round trip each, N in all
 *   bench_daemon latency SOCKET PIPELINE RATE [N]     GetInfo round trips, then Submit →
 *                                                     "ended" event, at RATE per second
 *   bench_daemon flood SOCKET PIPELINE PID [N]        batches into a slow pipeline while
 *                                                     sampling PID's VmRSS every 100 ms
 *   bench_daemon beanstalk SOCKET [N [WINDOW]]        beanstalkd "put", WINDOW outstanding
 *   bench_daemon redis-rtt SOCKET [N]                 rtt and clients against redis
 *   bench_daemon redis-clients SOCKET THREADS [N]     (LPUSH), with the same client code
 *
 * Links nothing but libc and pthread. Every call is a prebuilt NUL-terminated
 * JSON message written on a blocking Unix socket; replies are only scanned
 * (split at NUL, a prefix compared, an id read with strtoull), so the time
 * measured is the daemon's, not a JSON library's.
 *
 * Each mode prints what it measured for people and one line
 * "RESULT <mode> key=value ..." for the driver. Exit status 0; 1 when a
 * reply was an error, a reply or job went missing, or the peer hung up. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The payload of every job, and the data of every beanstalkd put: the same
 * bytes as bench_engine's. */
static const char PAYLOAD[] = "{\"url\":\"http://127.0.0.1:8080/img/000001.png\",\"size\":640}";

/* SubmitBatch's limit (proto/limits.h PROTO_BATCH_MAX). */
#define BATCH 1000u

/* The largest reply read: a Stats or SubmitBatch reply is a few KiB. */
#define READ_BUFFER (1u << 20)

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench_daemon: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / 1000000000u),
		               .tv_nsec = (long)(t % 1000000000u) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static uint64_t parse_count(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0)
		die("%s: not a positive number: '%s'", what, s);
	return v;
}

/* ---- connection ------------------------------------------------------------ */

static int connect_unix(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		die("%s: path too long", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect %s: %s", path, strerror(errno));
	return fd;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("write: %s", strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
}

/* Wait in poll() for input before each read(), as event-loop clients (and
 * redis-benchmark) do, rather than block in read(): a thread asleep in a
 * Unix stream socket's read() is also woken each time the peer consumes
 * data it sent (unix_write_space wakes every sleeper, without the key
 * filter poll and epoll apply), so a blocking client would make the
 * server's every read() pay a spurious cross-CPU wake-up that the
 * anchors' servers do not pay. BENCH_BLOCKING_READ=1 turns this off, to
 * measure that effect. */
static bool poll_before_read = true;

/* Splits what a peer sends into messages ending with a delimiter byte. */
typedef struct Reader {
	int fd;
	char *buf;         /* READ_BUFFER bytes */
	size_t start, len; /* unread bytes: buf[start .. len) */
	size_t scanned;    /* bytes after start already searched for the delimiter */
} Reader;

static void reader_init(Reader *r, int fd)
{
	*r = (Reader){ .fd = fd, .buf = malloc(READ_BUFFER) };
	if (!r->buf)
		die("out of memory");
}

static void reader_free(Reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

/* The next message up to and including delim (NUL for Varlink, '\n' for
 * beanstalkd's lines); *ret_len counts the delimiter. The text is valid
 * until the next call; a Varlink message is a C string. */
static const char *reader_next(Reader *r, char delim, size_t *ret_len)
{
	for (;;) {
		char *p = memchr(r->buf + r->start + r->scanned, delim,
		                 r->len - r->start - r->scanned);
		if (p) {
			const char *msg = r->buf + r->start;
			*ret_len = (size_t)(p - msg) + 1;
			r->start += *ret_len;
			r->scanned = 0;
			return msg;
		}
		r->scanned = r->len - r->start;
		if (r->start > 0) {
			memmove(r->buf, r->buf + r->start, r->len - r->start);
			r->len -= r->start;
			r->start = 0;
		}
		if (r->len == READ_BUFFER)
			die("a reply over %u bytes", READ_BUFFER);
		if (poll_before_read) {
			struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
			if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
				die("poll: %s", strerror(errno));
		}
		ssize_t n = read(r->fd, r->buf + r->len, READ_BUFFER - r->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read: %s", strerror(errno));
		if (n == 0)
			die("the peer hung up");
		r->len += (size_t)n;
	}
}

static const char *reply_next(Reader *r)
{
	size_t len;
	return reader_next(r, '\0', &len);
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_error(const char *msg)
{
	return starts_with(msg, "{\"error\":");
}

/* The number after the first "key": in msg; -1 when absent. */
static int64_t scan_int(const char *msg, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(msg, pat);
	if (!p)
		return -1;
	return (int64_t)strtoll(p + strlen(pat), NULL, 10);
}

/* ---- messages --------------------------------------------------------------- */

/* A message with its terminating NUL counted in len. */
typedef struct Msg {
	char *text;
	size_t len;
} Msg;

static Msg msg_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text;
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("out of memory");
	return (Msg){ text, (size_t)n + 1 };
}

static Msg msg_submit(const char *pipeline)
{
	return msg_printf("{\"method\":\"io.pipelined.Submit\",\"parameters\":"
	                  "{\"pipeline\":\"%s\",\"payload\":%s}}",
	                  pipeline, PAYLOAD);
}

static Msg msg_batch(const char *pipeline, unsigned n)
{
	size_t cap = 256 + n * (sizeof(PAYLOAD) + 1);
	char *text = malloc(cap);
	if (!text)
		die("out of memory");
	int len = snprintf(text, cap,
	                   "{\"method\":\"io.pipelined.SubmitBatch\",\"parameters\":"
	                   "{\"pipeline\":\"%s\",\"payloads\":[",
	                   pipeline);
	for (unsigned i = 0; i < n; i++)
		len += snprintf(text + len, cap - (size_t)len, "%s%s", i ? "," : "", PAYLOAD);
	len += snprintf(text + len, cap - (size_t)len, "]}}");
	return (Msg){ text, (size_t)len + 1 };
}

/* One call, waiting for its reply (a copy: free it). */
static char *call(int fd, Reader *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text;
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("out of memory");
	write_all(fd, text, (size_t)n + 1);
	free(text);
	char *reply = strdup(reply_next(r));
	if (!reply)
		die("out of memory");
	return reply;
}

/* Waits for the pipeline to have no job in flight, then returns its "done"
 * count from Stats. */
static int64_t drain_and_count(const char *sock, const char *pipeline)
{
	int fd = connect_unix(sock);
	Reader r;
	reader_init(&r, fd);
	char *rep = call(fd, &r,
	                 "{\"method\":\"io.pipelined.Drain\",\"parameters\":{\"pipeline\":\"%s\"}}",
	                 pipeline);
	if (is_error(rep))
		die("Drain: %s", rep);
	free(rep);
	rep = call(fd, &r,
	           "{\"method\":\"io.pipelined.Stats\",\"parameters\":{\"pipeline\":\"%s\"}}",
	           pipeline);
	int64_t done = scan_int(rep, "done");
	free(rep);
	reader_free(&r);
	close(fd);
	return done;
}

/* ---- rtt and clients -------------------------------------------------------- */

/* One request per round trip, to pipelined or (the anchor, through the very
 * same client code) to redis. */
typedef struct Proto {
	const char *name;     /* "rtt", "clients", "redis-rtt", "redis-clients" */
	Msg msg;              /* the request */
	char delim;           /* ends a reply */
	const char *pipeline; /* pipelined: drained and counted at the end; redis: NULL */
} Proto;

static Proto proto_new(const char *name, const char *pipeline)
{
	Proto p = { .name = name, .pipeline = pipeline };
	if (pipeline) {
		p.msg = msg_submit(pipeline);
		p.delim = '\0';
	} else {
		/* RESP: LPUSH bench PAYLOAD; the reply is ":LENGTH\r\n". */
		p.msg = msg_printf("*3\r\n$5\r\nLPUSH\r\n$5\r\nbench\r\n$%zu\r\n%s\r\n",
		                   strlen(PAYLOAD), PAYLOAD);
		p.msg.len--; /* no NUL on the wire */
		p.delim = '\n';
	}
	return p;
}

static bool proto_call(const Proto *p, int fd, Reader *r)
{
	size_t len;
	write_all(fd, p->msg.text, p->msg.len);
	const char *rep = reader_next(r, p->delim, &len);
	return p->pipeline ? !is_error(rep) : rep[0] == ':'; /* not "-ERR ..." */
}

/* The "done" count after a drain, or n for redis (nothing runs there). */
static int64_t proto_done(const Proto *p, const char *sock, uint64_t n)
{
	return p->pipeline ? drain_and_count(sock, p->pipeline) : (int64_t)n;
}

static int mode_rtt(const char *sock, const Proto *p, uint64_t n)
{
	int fd = connect_unix(sock);
	Reader r;
	reader_init(&r, fd);
	uint64_t errors = 0, t0 = now_ns();
	for (uint64_t i = 0; i < n; i++)
		if (!proto_call(p, fd, &r))
			errors++;
	double s = (double)(now_ns() - t0) / 1e9;
	int64_t done = proto_done(p, sock, n);
	printf("%s: %" PRIu64 " %s, one per round trip, in %.3f s: %.0f jobs/s "
	       "(%.1f us per round trip); errors %" PRIu64 ", done after drain %" PRId64 "\n",
	       p->name, n, p->pipeline ? "Submits" : "LPUSHes", s, (double)n / s,
	       s * 1e6 / (double)n, errors, done);
	printf("RESULT %s jobs_per_s=%.0f errors=%" PRIu64 " done=%" PRId64 "\n", p->name,
	       (double)n / s, errors, done);
	reader_free(&r);
	close(fd);
	return errors == 0 && done == (int64_t)n ? 0 : 1;
}

typedef struct ClientArg {
	const char *sock;
	const Proto *proto;
	uint64_t n;
	pthread_barrier_t *start;
	uint64_t errors;
} ClientArg;

static void *client_thread(void *p)
{
	ClientArg *a = p;
	int fd = connect_unix(a->sock);
	Reader r;
	reader_init(&r, fd);
	pthread_barrier_wait(a->start);
	for (uint64_t i = 0; i < a->n; i++)
		if (!proto_call(a->proto, fd, &r))
			a->errors++;
	reader_free(&r);
	close(fd);
	return NULL;
}

static int mode_clients(const char *sock, const Proto *p, unsigned threads, uint64_t n)
{
	ClientArg *args = calloc(threads, sizeof(*args));
	pthread_t *tids = calloc(threads, sizeof(*tids));
	pthread_barrier_t start;
	if (!args || !tids)
		die("out of memory");
	pthread_barrier_init(&start, NULL, threads + 1);
	for (unsigned i = 0; i < threads; i++) {
		args[i] = (ClientArg){ .sock = sock,
			               .proto = p,
			               .start = &start,
			               .n = n / threads + (i < n % threads) };
		if (pthread_create(&tids[i], NULL, client_thread, &args[i]) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&start);
	uint64_t t0 = now_ns(), errors = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(tids[i], NULL);
		errors += args[i].errors;
	}
	double s = (double)(now_ns() - t0) / 1e9;
	int64_t done = proto_done(p, sock, n);
	printf("%s: %u connections, %" PRIu64 " %s in all, one per round trip each, "
	       "in %.3f s: %.0f jobs/s; errors %" PRIu64 ", done after drain %" PRId64 "\n",
	       p->name, threads, n, p->pipeline ? "Submits" : "LPUSHes", s, (double)n / s, errors,
	       done);
	printf("RESULT %s jobs_per_s=%.0f errors=%" PRIu64 " done=%" PRId64 "\n", p->name,
	       (double)n / s, errors, done);
	pthread_barrier_destroy(&start);
	free(args);
	free(tids);
	return errors == 0 && done == (int64_t)n ? 0 : 1;
}

/* ---- batch -------------------------------------------------------------------- */

static int mode_batch(const char *sock, const char *pipeline, uint64_t n, unsigned in_flight)
{
	uint64_t batches = (n + BATCH - 1) / BATCH;
	n = batches * BATCH;
	int fd = connect_unix(sock);
	Reader r;
	reader_init(&r, fd);
	Msg m = msg_batch(pipeline, BATCH);
	uint64_t sent = 0, got = 0, ids = 0, errors = 0, t0 = now_ns();
	while (got < batches) {
		while (sent < batches && sent - got < in_flight) {
			write_all(fd, m.text, m.len);
			sent++;
		}
		const char *rep = reply_next(&r);
		got++;
		if (is_error(rep) || !starts_with(rep, "{\"parameters\":{\"ids\":[")) {
			if (errors++ == 0)
				fprintf(stderr, "batch: %.200s\n", rep);
			continue;
		}
		for (const char *p = rep + 22; *p && *p != ']'; p++)
			if (*p == ',')
				ids++;
		ids++;
	}
	uint64_t t1 = now_ns();
	int64_t done = drain_and_count(sock, pipeline);
	uint64_t t2 = now_ns();
	double s = (double)(t1 - t0) / 1e9, s2 = (double)(t2 - t0) / 1e9;
	printf("batch: %" PRIu64 " jobs in %" PRIu64 " SubmitBatch calls of %u, %u in flight "
	       "(%zu bytes each): accepted in %.3f s = %.0f jobs/s; all done after %.3f s = "
	       "%.0f jobs/s; ids %" PRIu64 ", errors %" PRIu64 ", done %" PRId64 "\n",
	       n, batches, BATCH, in_flight, m.len, s, (double)n / s, s2, (double)n / s2, ids,
	       errors, done);
	printf("RESULT batch jobs_per_s=%.0f done_jobs_per_s=%.0f errors=%" PRIu64 " done=%" PRId64
	       "\n",
	       (double)n / s, (double)n / s2, errors, done);
	free(m.text);
	reader_free(&r);
	close(fd);
	return errors == 0 && ids == n && done == (int64_t)n ? 0 : 1;
}

/* ---- latency ------------------------------------------------------------------ */

typedef struct Paced {
	int fd;
	const Msg *msg;
	uint64_t n, interval_ns, t0;
	uint64_t *sent_ns;  /* [n]: when call i was written */
	uint64_t *reply_ns; /* [n]: when its reply was read */
	int64_t *reply_id;  /* [n]: the "id" in that reply, or -1 */
	uint64_t behind;    /* ticks sent more than one interval late (the client's
	                     * scheduling, not the daemon's: reported, not failed) */
	uint64_t errors;
} Paced;

/* Writes call i at t0 + i * interval (absolute deadlines: a late tick does
 * not push the later ones back). */
static void *paced_writer(void *p)
{
	Paced *a = p;
	for (uint64_t i = 0; i < a->n; i++) {
		uint64_t due = a->t0 + i * a->interval_ns;
		sleep_until_ns(due);
		uint64_t t = now_ns();
		if (t > due + a->interval_ns)
			a->behind++;
		a->sent_ns[i] = t;
		write_all(a->fd, a->msg->text, a->msg->len);
	}
	return NULL;
}

static void *paced_reader(void *p)
{
	Paced *a = p;
	Reader r;
	reader_init(&r, a->fd);
	for (uint64_t i = 0; i < a->n; i++) {
		const char *rep = reply_next(&r);
		a->reply_ns[i] = now_ns();
		if (is_error(rep))
			a->errors++;
		a->reply_id[i] = scan_int(rep, "id");
	}
	reader_free(&r);
	return NULL;
}

typedef struct Watcher {
	int fd;
	Reader r;
	uint64_t want;    /* "ended" events to wait for */
	uint64_t *end_ns; /* [want] receipt times, in arrival order */
	int64_t *end_id;  /* [want] their job ids */
	uint64_t got;
} Watcher;

static void *watcher_thread(void *p)
{
	Watcher *w = p;
	while (w->got < w->want) {
		const char *ev = reply_next(&w->r);
		uint64_t t = now_ns();
		if (!starts_with(ev, "{\"parameters\":{\"event\":\"ended\""))
			continue;
		const char *job = strstr(ev, "\"job\":");
		if (!job)
			die("an ended event without a job: %.200s", ev);
		w->end_ns[w->got] = t;
		w->end_id[w->got] = scan_int(job, "id");
		w->got++;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sorts v and prints its percentiles in microseconds. */
static void print_percentiles(const char *label, const char *key, uint64_t *v, uint64_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	double q[] = { 0.50, 0.99, 0.999 };
	double us[3];
	for (int i = 0; i < 3; i++)
		us[i] = (double)v[(uint64_t)(q[i] * (double)(n - 1))] / 1e3;
	double max = (double)v[n - 1] / 1e3;
	printf("  %-44s p50 %8.1f us  p99 %8.1f us  p99.9 %8.1f us  max %8.1f us\n", label, us[0],
	       us[1], us[2], max);
	printf("RESULT latency_%s p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f n=%" PRIu64 "\n",
	       key, us[0], us[1], us[2], max, n);
}

/* Runs n paced calls of msg on a new connection; fills a. */
static void run_paced(Paced *a, const char *sock, const Msg *msg, uint64_t rate, uint64_t n)
{
	*a = (Paced){ .fd = connect_unix(sock),
		      .msg = msg,
		      .n = n,
		      .interval_ns = 1000000000u / rate,
		      .sent_ns = calloc(n, sizeof(uint64_t)),
		      .reply_ns = calloc(n, sizeof(uint64_t)),
		      .reply_id = calloc(n, sizeof(int64_t)) };
	if (!a->sent_ns || !a->reply_ns || !a->reply_id)
		die("out of memory");
	pthread_t wt, rt;
	a->t0 = now_ns() + 10000000u; /* 10 ms from now */
	if (pthread_create(&rt, NULL, paced_reader, a) != 0 ||
	    pthread_create(&wt, NULL, paced_writer, a) != 0)
		die("pthread_create");
	pthread_join(wt, NULL);
	pthread_join(rt, NULL);
	close(a->fd);
}

static void paced_free(Paced *a)
{
	free(a->sent_ns);
	free(a->reply_ns);
	free(a->reply_id);
}

static int mode_latency(const char *sock, const char *pipeline, uint64_t rate, uint64_t n)
{
	/* Timer slack: the default 50 us would be a quarter of a 200 us tick. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	int ok = 1;

	/* The floor: GetInfo round trips at the same rate (the loop and the
	 * socket, no job, no pipeline). */
	Msg info = msg_printf("{\"method\":\"org.varlink.service.GetInfo\"}");
	Paced a;
	run_paced(&a, sock, &info, rate, n);
	uint64_t *d = malloc(n * sizeof(uint64_t));
	if (!d)
		die("out of memory");
	for (uint64_t i = 0; i < n; i++)
		d[i] = a.reply_ns[i] - a.sent_ns[i];
	printf("latency: %" PRIu64 " calls at %" PRIu64 "/s (one every %" PRIu64 " us)\n", n, rate,
	       a.interval_ns / 1000);
	print_percentiles("GetInfo round trip (anchor: protocol floor)", "getinfo", d, n);
	if (a.errors)
		ok = 0;
	uint64_t behind_info = a.behind;
	paced_free(&a);

	/* The pipeline: Watch on a second connection, then paced Submits. */
	Watcher w = { .fd = connect_unix(sock),
		      .want = n,
		      .end_ns = calloc(n, sizeof(uint64_t)),
		      .end_id = calloc(n, sizeof(int64_t)) };
	if (!w.end_ns || !w.end_id)
		die("out of memory");
	reader_init(&w.r, w.fd);
	char *rep = call(w.fd, &w.r,
	                 "{\"method\":\"io.pipelined.Watch\",\"parameters\":{\"pipeline\":\"%s\"},"
	                 "\"more\":true}",
	                 pipeline);
	if (!strstr(rep, "\"watching\""))
		die("Watch: %s", rep);
	free(rep);
	pthread_t wt;
	if (pthread_create(&wt, NULL, watcher_thread, &w) != 0)
		die("pthread_create");
	Msg submit = msg_submit(pipeline);
	run_paced(&a, sock, &submit, rate, n);
	pthread_join(wt, NULL);

	/* Ids are given in order of acceptance, and one connection's Submits
	 * are accepted in order: call i got id first + i. */
	int64_t first = a.reply_id[0];
	uint64_t missing = 0;
	for (uint64_t i = 0; i < n; i++)
		if (a.reply_id[i] != first + (int64_t)i)
			die("Submit %" PRIu64 " got id %" PRId64 ", not %" PRId64, i, a.reply_id[i],
			    first + (int64_t)i);
	uint64_t *e2e = calloc(n, sizeof(uint64_t));
	bool *seen = calloc(n, sizeof(bool));
	if (!e2e || !seen)
		die("out of memory");
	for (uint64_t k = 0; k < w.got; k++) {
		int64_t i = w.end_id[k] - first;
		if (i < 0 || (uint64_t)i >= n || seen[i])
			die("an ended event for job %" PRId64 " not submitted here", w.end_id[k]);
		seen[i] = true;
		e2e[i] = w.end_ns[k] - a.sent_ns[i];
	}
	for (uint64_t i = 0; i < n; i++)
		missing += !seen[i];
	for (uint64_t i = 0; i < n; i++)
		d[i] = a.reply_ns[i] - a.sent_ns[i];
	print_percentiles("Submit round trip (reply with the id)", "submit", d, n);
	print_percentiles("end to end (Submit sent -> \"ended\" event)", "e2e", e2e, n);
	printf("  ticks sent late by over one interval: GetInfo %" PRIu64 ", Submit %" PRIu64
	       "; Submit errors %" PRIu64 ", jobs without an ended event %" PRIu64 "\n",
	       behind_info, a.behind, a.errors, missing);
	printf("RESULT latency_check late_getinfo=%" PRIu64 " late_submit=%" PRIu64
	       " errors=%" PRIu64 " missing=%" PRIu64 "\n",
	       behind_info, a.behind, a.errors, missing);
	if (a.errors || missing)
		ok = 0;
	paced_free(&a);
	free(e2e);
	free(seen);
	free(d);
	free(w.end_ns);
	free(w.end_id);
	reader_free(&w.r);
	close(w.fd);
	free(info.text);
	free(submit.text);
	return ok ? 0 : 1;
}

/* ---- flood -------------------------------------------------------------------- */

typedef struct Sample {
	uint64_t t_ns;
	long rss_kib, hwm_kib;
	int64_t accepted, done;
} Sample;

typedef struct Sampler {
	const char *sock, *pipeline;
	int pid;
	Sample *samples;
	size_t n, cap;
	atomic_bool stop;
} Sampler;

/* VmRSS and VmHWM of pid, in KiB. */
static void read_rss(int pid, long *ret_rss, long *ret_hwm)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		die("%s: %s", path, strerror(errno));
	*ret_rss = *ret_hwm = -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "VmRSS:", 6) == 0)
			*ret_rss = strtol(line + 6, NULL, 10);
		else if (strncmp(line, "VmHWM:", 6) == 0)
			*ret_hwm = strtol(line + 6, NULL, 10);
	}
	fclose(f);
}

/* Every 100 ms: the daemon's RSS, and its accepted and done counts (Stats on
 * a connection of its own). */
static void *sampler_thread(void *p)
{
	Sampler *s = p;
	int fd = connect_unix(s->sock);
	Reader r;
	reader_init(&r, fd);
	uint64_t next = now_ns();
	while (!atomic_load(&s->stop)) {
		Sample x = { .t_ns = now_ns() };
		read_rss(s->pid, &x.rss_kib, &x.hwm_kib);
		char *rep = call(fd, &r,
		                 "{\"method\":\"io.pipelined.Stats\",\"parameters\":"
		                 "{\"pipeline\":\"%s\"}}",
		                 s->pipeline);
		x.accepted = scan_int(rep, "accepted");
		x.done = scan_int(rep, "done");
		free(rep);
		if (s->n == s->cap) {
			s->cap = s->cap ? 2 * s->cap : 1024;
			s->samples = realloc(s->samples, s->cap * sizeof(Sample));
			if (!s->samples)
				die("out of memory");
		}
		s->samples[s->n++] = x;
		next += 100000000u;
		sleep_until_ns(next);
	}
	reader_free(&r);
	close(fd);
	return NULL;
}

static int mode_flood(const char *sock, const char *pipeline, int pid, uint64_t n)
{
	const unsigned in_flight = 4;
	uint64_t batches = (n + BATCH - 1) / BATCH;
	n = batches * BATCH;
	Sampler s = { .sock = sock, .pipeline = pipeline, .pid = pid };
	long rss0, hwm0;
	read_rss(pid, &rss0, &hwm0);
	pthread_t st;
	if (pthread_create(&st, NULL, sampler_thread, &s) != 0)
		die("pthread_create");

	int fd = connect_unix(sock);
	Reader r;
	reader_init(&r, fd);
	Msg m = msg_batch(pipeline, BATCH);
	uint64_t sent = 0, got = 0, errors = 0, t0 = now_ns();
	while (got < batches) {
		while (sent < batches && sent - got < in_flight) {
			write_all(fd, m.text, m.len);
			sent++;
		}
		const char *rep = reply_next(&r);
		got++;
		if (is_error(rep) && errors++ == 0)
			fprintf(stderr, "flood: %.200s\n", rep);
	}
	uint64_t t1 = now_ns();
	char *rep = call(fd, &r,
	                 "{\"method\":\"io.pipelined.Drain\",\"parameters\":"
	                 "{\"pipeline\":\"%s\"}}",
	                 pipeline);
	if (is_error(rep))
		die("Drain: %s", rep);
	free(rep);
	uint64_t t2 = now_ns();
	rep = call(fd, &r,
	           "{\"method\":\"io.pipelined.Stats\",\"parameters\":{\"pipeline\":\"%s\"}}",
	           pipeline);
	int64_t accepted = scan_int(rep, "accepted"), done = scan_int(rep, "done");
	free(rep);
	/* One sample after the drain. */
	sleep_until_ns(now_ns() + 150000000u);
	atomic_store(&s.stop, true);
	pthread_join(st, NULL);
	long rss_end, hwm_end;
	read_rss(pid, &rss_end, &hwm_end);

	long peak = rss0;
	for (size_t i = 0; i < s.n; i++)
		if (s.samples[i].rss_kib > peak)
			peak = s.samples[i].rss_kib;
	printf("flood: %" PRIu64 " jobs in SubmitBatch calls of %u, %u in flight: all accepted "
	       "after %.1f s, all done after %.1f s (%.0f jobs/s)\n",
	       n, BATCH, in_flight, (double)(t1 - t0) / 1e9, (double)(t2 - t0) / 1e9,
	       (double)n / ((double)(t2 - t0) / 1e9));
	printf("  RSS start %ld KiB, peak sampled %ld KiB (+%ld), VmHWM %ld KiB, after drain "
	       "%ld KiB; %zu samples\n",
	       rss0, peak, peak - rss0, hwm_end, rss_end, s.n);
	printf("  RSS KiB at 0%%,10%%..100%% of jobs done:");
	long tenths[11];
	for (int k = 0; k <= 10; k++) {
		tenths[k] = -1;
		uint64_t want = n * (uint64_t)k / 10;
		for (size_t i = 0; i < s.n; i++)
			if (s.samples[i].done >= (int64_t)want) {
				tenths[k] = s.samples[i].rss_kib;
				break;
			}
		printf(" %ld", tenths[k]);
	}
	printf("\n  accepted %" PRId64 ", done %" PRId64 " of %" PRIu64 "; errors %" PRIu64 "\n",
	       accepted, done, n, errors);
	printf("RESULT flood start_kib=%ld peak_kib=%ld hwm_kib=%ld end_kib=%ld accept_s=%.2f "
	       "done_s=%.2f accepted=%" PRId64 " done=%" PRId64 " errors=%" PRIu64 " tenths=",
	       rss0, peak, hwm_end, rss_end, (double)(t1 - t0) / 1e9, (double)(t2 - t0) / 1e9,
	       accepted, done, errors);
	for (int k = 0; k <= 10; k++)
		printf("%s%ld", k ? "," : "", tenths[k]);
	printf("\n");
	free(s.samples);
	free(m.text);
	reader_free(&r);
	close(fd);
	return errors == 0 && done == (int64_t)n ? 0 : 1;
}

/* ---- beanstalkd anchor ---------------------------------------------------------- */

/* "put" with the same bytes as a job's payload, window commands outstanding
 * at most, written in chunks of 100. */
static int mode_beanstalk(const char *sock, uint64_t n, unsigned window)
{
	const unsigned chunk = 100;
	if (window < chunk)
		window = chunk;
	size_t plen = strlen(PAYLOAD);
	char cmd[256];
	int clen = snprintf(cmd, sizeof(cmd), "put 0 0 60 %zu\r\n%s\r\n", plen, PAYLOAD);
	char *buf = malloc((size_t)clen * chunk);
	if (!buf)
		die("out of memory");
	for (unsigned i = 0; i < chunk; i++)
		memcpy(buf + (size_t)i * (size_t)clen, cmd, (size_t)clen);

	int fd = connect_unix(sock);
	Reader r;
	reader_init(&r, fd);
	uint64_t sent = 0, got = 0, errors = 0, t0 = now_ns();
	while (got < n) {
		while (sent < n && sent - got + chunk <= window) {
			unsigned k = n - sent < chunk ? (unsigned)(n - sent) : chunk;
			write_all(fd, buf, (size_t)clen * k);
			sent += k;
		}
		size_t len;
		const char *line = reader_next(&r, '\n', &len);
		got++;
		if (!starts_with(line, "INSERTED ") && errors++ == 0)
			fprintf(stderr, "beanstalk: %.*s\n", (int)len, line);
	}
	double s = (double)(now_ns() - t0) / 1e9;
	printf("beanstalk: %" PRIu64 " puts of %zu bytes, up to %u outstanding, in %.3f s: "
	       "%.0f jobs/s; errors %" PRIu64 "\n",
	       n, plen, window, s, (double)n / s, errors);
	printf("RESULT beanstalk jobs_per_s=%.0f errors=%" PRIu64 "\n", (double)n / s, errors);
	free(buf);
	reader_free(&r);
	close(fd);
	return errors == 0 ? 0 : 1;
}

/* ---- main ----------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_daemon rtt SOCKET PIPELINE [N]\n"
	                "       bench_daemon batch SOCKET PIPELINE [N [IN_FLIGHT]]\n"
	                "       bench_daemon clients SOCKET PIPELINE THREADS [N]\n"
	                "       bench_daemon latency SOCKET PIPELINE RATE [N]\n"
	                "       bench_daemon flood SOCKET PIPELINE DAEMON_PID [N]\n"
	                "       bench_daemon beanstalk SOCKET [N [WINDOW]]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *blocking = getenv("BENCH_BLOCKING_READ");
	if (blocking && strcmp(blocking, "1") == 0)
		poll_before_read = false;
	if (argc < 3)
		usage();
	const char *mode = argv[1], *sock = argv[2];
#define ARG(i, def) (argc > (i) ? parse_count(argv[i], #i) : (def))
	if (strcmp(mode, "beanstalk") == 0)
		return mode_beanstalk(sock, ARG(3, 1000000), (unsigned)ARG(4, 1000));
	if (strcmp(mode, "redis-rtt") == 0) {
		Proto p = proto_new(mode, NULL);
		return mode_rtt(sock, &p, ARG(3, 100000));
	}
	if (strcmp(mode, "redis-clients") == 0 && argc >= 4) {
		Proto p = proto_new(mode, NULL);
		return mode_clients(sock, &p, (unsigned)ARG(3, 50), ARG(4, 100000));
	}
	if (argc < 4)
		usage();
	const char *pipeline = argv[3];
	if (strcmp(mode, "rtt") == 0) {
		Proto p = proto_new(mode, pipeline);
		return mode_rtt(sock, &p, ARG(4, 100000));
	}
	if (strcmp(mode, "batch") == 0)
		return mode_batch(sock, pipeline, ARG(4, 1000000), (unsigned)ARG(5, 4));
	if (strcmp(mode, "clients") == 0 && argc >= 5) {
		Proto p = proto_new(mode, pipeline);
		return mode_clients(sock, &p, (unsigned)ARG(4, 50), ARG(5, 100000));
	}
	if (strcmp(mode, "latency") == 0 && argc >= 5)
		return mode_latency(sock, pipeline, ARG(4, 5000), ARG(5, 50000));
	if (strcmp(mode, "flood") == 0 && argc >= 5)
		return mode_flood(sock, pipeline, (int)ARG(4, 0), ARG(5, 1000000));
#undef ARG
	usage();
	return 2;
}
