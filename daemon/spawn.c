/* spawn.c — run one program to completion from a worker thread.
 *
 * One call, one child, all state on the caller's stack:
 *
 *   pipes     stdin, stdout and stderr are pipe2(O_CLOEXEC); O_NONBLOCK is set
 *             with fcntl on our ends only: pipe2(O_NONBLOCK) would set it on
 *             the child's ends too, and a program whose stdin or stdout is
 *             non-blocking fails with EAGAIN. An end that is not wanted (no
 *             input, stdout_max 0, stderr_tail 0) is /dev/null.
 *   input     written before posix_spawn, as far as the empty pipe takes it
 *             (all of it, usually: the write end is then closed at once and
 *             the child reads input and EOF without the poll loop ever
 *             seeing stdin). The rest goes out from the poll loop. While any
 *             input is left we keep our own copy of the pipe's read end open,
 *             so a write can never fail with EPIPE nor raise SIGPIPE, whatever
 *             the caller's SIGPIPE disposition: a child that stops reading
 *             just leaves the pipe full, and we stop writing when it exits.
 *   child     posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), which also
 *             reports exec errors): its own process group, empty signal mask,
 *             every disposition default, fds 0..2 dup2'd from the file
 *             actions and every other fd closed (closefrom(3): an fd another
 *             module forgot to make close-on-exec still does not reach it).
 *   wait      one poll() over the pidfd, stdin (POLLOUT), stdout and stderr
 *             (POLLIN), with the timeout from a CLOCK_MONOTONIC deadline.
 *             Output past the limits is read and dropped. When the calling
 *             thread's heartbeat is watched (heartbeat.h) the poll wakes at
 *             least once per period, and every wake-up beats it.
 *   deadline  SIGTERM (and SIGCONT, so a stopped group can act on it) to the
 *             group; grace_usec later SIGKILL.
 *   exit      the pidfd is readable once the leader has exited. Then, in this
 *             order: SIGKILL to its group, reap it, read what the pipes hold
 *             without blocking, close them. Signalling before reaping is what
 *             makes the group kill safe: the unreaped leader pins its pid, so
 *             the group id cannot belong to anyone else yet. Reading before
 *             the kill would gain nothing: pipe contents survive the death of
 *             their writers, and the leader's writes had all completed when
 *             it exited, so the one drain after the kill sees everything it
 *             wrote (and whatever the group wrote until it died). We never
 *             wait for EOF after the leader exits: a grandchild that left the
 *             group (setsid) could hold the pipes open for ever. The drain
 *             stops at "nothing to read now" (EAGAIN) or EOF, and after
 *             DRAIN_READS_MAX reads in case such a process keeps writing.
 *
 * Only our own pid is waited for (waitpid(pid)), and only after its pidfd
 * said it exited, so the wait never blocks on the normal path. On every
 * failure after the child started (pidfd_open, poll, out of memory) the
 * group is killed and the leader reaped before returning. */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
/* glibc's <spawn.h>, by its full path: daemon/ is on the include path, so
 * <spawn.h> would find this module's own header. */
#include </usr/include/spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "heartbeat.h"
#include "util.h"

/* Bytes asked of one read(2): the default pipe capacity, so that one read
 * usually empties a pipe. Lives on the caller's stack (worker threads have
 * the default 8 MiB stacks). */
#define READ_CHUNK 65536

/* Reads per pipe after the leader has exited and its group was killed. A
 * pipe then holds at most its capacity, and an unprivileged program can
 * enlarge its pipe to 1 MiB (/proc/sys/fs/pipe-max-size): 16 reads of
 * READ_CHUNK take that in. Only a process that left the group can still be
 * writing, and it may not hold the job. */
#define DRAIN_READS_MAX 16

/* Smallest capture buffer allocated: small outputs ("{}") cost one malloc. */
#define CAPTURE_MIN_ALLOC 256

static char *const empty_env[] = { NULL };

/* One captured stream. stdout keeps its first `limit` bytes (linear buffer);
 * stderr keeps its last `limit` bytes: a linear buffer until it first fills,
 * then a ring of exactly `limit` bytes whose oldest byte is at `head`. The
 * buffer grows by doubling, to limit + 1 at most (the NUL). */
typedef struct Capture {
	int fd;         /* our read end, non-blocking; -1 when closed or unused */
	bool tail;      /* keep the last bytes (stderr) rather than the first */
	size_t limit;   /* bytes kept at most; > 0 whenever fd was opened */
	char *buf;      /* cap bytes, NULL until the first byte */
	size_t len;     /* bytes kept, <= limit */
	size_t cap;     /* bytes allocated */
	size_t head;    /* tail && len == limit: index of the oldest byte */
	uint64_t total; /* bytes read, kept or not */
} Capture;

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Makes room for `need` bytes plus the NUL. need <= c->limit. */
static int capture_reserve(Capture *c, size_t need)
{
	if (need < c->cap)
		return 0;
	size_t cap = c->cap > SIZE_MAX / 2 ? SIZE_MAX : c->cap * 2;
	if (cap < need + 1)
		cap = need + 1;
	if (cap < CAPTURE_MIN_ALLOC)
		cap = CAPTURE_MIN_ALLOC;
	if (cap > c->limit + 1)
		cap = c->limit + 1;
	char *b = realloc(c->buf, cap);
	if (!b)
		return -ENOMEM;
	c->buf = b;
	c->cap = cap;
	return 0;
}

static int capture_add(Capture *c, const char *p, size_t n)
{
	int r;

	c->total += n;
	if (!c->tail) {
		size_t keep = min_size(n, c->limit - c->len);
		if (keep == 0)
			return 0;
		r = capture_reserve(c, c->len + keep);
		if (r < 0)
			return r;
		memcpy(c->buf + c->len, p, keep);
		c->len += keep;
		return 0;
	}
	if (c->len + n <= c->limit) {
		r = capture_reserve(c, c->len + n);
		if (r < 0)
			return r;
		memcpy(c->buf + c->len, p, n);
		c->len += n;
		return 0;
	}
	r = capture_reserve(c, c->limit);
	if (r < 0)
		return r;
	if (n >= c->limit) {
		memcpy(c->buf, p + (n - c->limit), c->limit);
		c->len = c->limit;
		c->head = 0;
		return 0;
	}
	if (c->len < c->limit) {
		/* Fill the linear part; the ring starts with its oldest byte at 0. */
		size_t m = c->limit - c->len;
		memcpy(c->buf + c->len, p, m);
		c->len = c->limit;
		c->head = 0;
		p += m;
		n -= m;
	}
	size_t first = min_size(n, c->limit - c->head);
	memcpy(c->buf + c->head, p, first);
	memcpy(c->buf, p + first, n - first);
	c->head = (c->head + n) % c->limit;
	return 0;
}

static void reverse(char *p, size_t n)
{
	for (size_t i = 0, j = n; i + 1 < j; i++, j--) {
		char t = p[i];
		p[i] = p[j - 1];
		p[j - 1] = t;
	}
}

/* Puts the bytes in order, NUL-terminates them and hands the buffer over
 * (never NULL). Returns -ENOMEM if even the empty string cannot be had. */
static int capture_take(Capture *c, char **ret, size_t *ret_len)
{
	if (c->tail && c->len == c->limit && c->head != 0) {
		/* Rotate the ring left by head, in place. */
		reverse(c->buf, c->head);
		reverse(c->buf + c->head, c->len - c->head);
		reverse(c->buf, c->len);
		c->head = 0;
	}
	if (!c->buf) {
		c->buf = malloc(1);
		if (!c->buf)
			return -ENOMEM;
	}
	c->buf[c->len] = '\0';
	*ret = c->buf;
	*ret_len = c->len;
	c->buf = NULL;
	c->len = c->cap = 0;
	return 0;
}

/* One read from c->fd into scratch[READ_CHUNK]. Returns 1 when it read
 * something, 0 when there is nothing to read now (EAGAIN) or the pipe is at
 * EOF (the fd is then closed), -errno. */
static int capture_read(Capture *c, char *scratch)
{
	ssize_t n = read(c->fd, scratch, READ_CHUNK);
	if (n > 0) {
		int r = capture_add(c, scratch, (size_t)n);
		return r < 0 ? r : 1;
	}
	if (n == 0) {
		close_fd(&c->fd);
		return 0;
	}
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	return -errno;
}

/* The file actions dup2 the child's ends onto 0, 1, 2 in that order, so an
 * end that is itself 0..2 (the daemon was started with those closed) could be
 * overwritten before it is copied: move it out of the way. */
static int move_above_stdio(int *fd)
{
	if (*fd > STDERR_FILENO)
		return 0;
	int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	if (nfd < 0)
		return -errno;
	close(*fd);
	*fd = nfd;
	return 0;
}

/* A pipe for the child's stdout or stderr: both ends close-on-exec, our
 * read end non-blocking, the child's end moved above 0..2. */
static int output_pipe(int *ret_ours, int *ret_child)
{
	int p[2], r;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
		r = -errno;
		goto fail;
	}
	r = move_above_stdio(&p[1]);
	if (r < 0)
		goto fail;
	*ret_ours = p[0];
	*ret_child = p[1];
	return 0;
fail:
	close(p[0]);
	close(p[1]);
	return r;
}

/* Closes the ends meant for the child; any of them may be devnull. */
static void close_child_ends(int child_fd[3], int *devnull)
{
	for (int i = 0; i < 3; i++) {
		if (child_fd[i] != *devnull)
			close_fd(&child_fd[i]);
		child_fd[i] = -1;
	}
	close_fd(devnull);
}

/* Signals the leader's process group, and the leader itself if it has moved
 * to another group. Only while the leader is unreaped: it pins its pid, so
 * neither id can name anyone else. */
static void signal_group(pid_t pid, int sig)
{
	(void)kill(-pid, sig);
	if (getpgid(pid) != pid)
		(void)kill(pid, sig);
}

/* Waits for our own child; returns its wait status (0 if the wait failed,
 * which needs SIGCHLD set to SIG_IGN or someone else reaping our pid). */
static int reap(pid_t pid, int *ret_errno)
{
	int status;

	*ret_errno = 0;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			*ret_errno = errno;
			return 0;
		}
	}
	return status;
}

static void set_err(char *err, size_t errlen, const char *what, const char *name, int e)
{
	if (errlen > 0)
		snprintf(err, errlen, "%s%s%s: %s", what, name ? " " : "", name ? name : "",
		         strerror(e));
}

/* Every signal that can be caught or ignored. Not sigfillset: glibc leaves
 * out its two internal signals (32, 33), and its posix_spawn then sets them
 * to SIG_IGN in the child, which exec keeps; every bit set makes them
 * default too. */
static void catchable_signals(sigset_t *set)
{
	memset(set, 0xff, sizeof(*set));
	sigdelset(set, SIGKILL);
	sigdelset(set, SIGSTOP);
}

int spawn_run(const SpawnRequest *req, SpawnResult *res, char *err, size_t errlen)
{
	char scratch[READ_CHUNK];
	Capture out = { .fd = -1 }, errc = { .fd = -1, .tail = true };
	int in_w = -1;    /* our write end of stdin, non-blocking; -1 once all is written */
	int in_keep = -1; /* our copy of the child's stdin end while in_w is open */
	int child_fd[3] = { -1, -1, -1 };
	int devnull = -1, pidfd = -1;
	size_t in_off = 0;
	pid_t pid = 0;
	bool fa_init = false, attr_init = false, timed_out = false, killed = false;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int r, e, status = 0;
	uint64_t start = 0, end = 0;

	if (errlen > 0)
		err[0] = '\0';
	if (!req || !res || !req->argv || !req->argv[0] || req->argv[0][0] != '/' ||
	    (req->input_len > 0 && !req->input)) {
		set_err(err, errlen, "invalid spawn request", NULL, EINVAL);
		return -EINVAL;
	}

	if (req->input_len == 0 || req->stdout_max == 0 || req->stderr_tail == 0) {
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		r = devnull < 0 ? -errno : move_above_stdio(&devnull);
		if (r < 0) {
			set_err(err, errlen, "cannot open", "/dev/null", -r);
			goto finish;
		}
	}
	if (req->input_len > 0) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			r = -errno;
			set_err(err, errlen, "cannot create a pipe", NULL, -r);
			goto finish;
		}
		child_fd[0] = p[0];
		in_w = p[1];
		/* Up to PIPE_BUF bytes always fit an empty pipe; only more needs
		 * a non-blocking write end. */
		if (req->input_len > PIPE_BUF && fcntl(in_w, F_SETFL, O_NONBLOCK) < 0) {
			r = -errno;
			set_err(err, errlen, "cannot create a pipe", NULL, -r);
			goto finish;
		}
		ssize_t n = write(in_w, req->input, req->input_len);
		if (n < 0 && errno != EAGAIN) {
			r = -errno;
			set_err(err, errlen, "cannot write the input", NULL, -r);
			goto finish;
		}
		in_off = n > 0 ? (size_t)n : 0;
		if (in_off == req->input_len)
			close_fd(&in_w);
		r = move_above_stdio(&child_fd[0]);
		if (r < 0) {
			set_err(err, errlen, "cannot create a pipe", NULL, -r);
			goto finish;
		}
	} else {
		child_fd[0] = devnull;
	}
	Capture *caps[2] = { &out, &errc };
	size_t limits[2] = { req->stdout_max, req->stderr_tail };
	for (int i = 0; i < 2; i++) {
		if (limits[i] == 0) {
			child_fd[i + 1] = devnull;
			continue;
		}
		caps[i]->limit = min_size(limits[i], SIZE_MAX - 1); /* room for the NUL */
		r = output_pipe(&caps[i]->fd, &child_fd[i + 1]);
		if (r < 0) {
			set_err(err, errlen, "cannot create a pipe", NULL, -r);
			goto finish;
		}
	}

	/* posix_spawn_* setup only fails for ENOMEM (file actions) or EINVAL. */
	sigset_t none, all;
	sigemptyset(&none);
	catchable_signals(&all);
	r = -posix_spawnattr_init(&attr);
	if (r == 0) {
		attr_init = true;
		r = -posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
		                                             POSIX_SPAWN_SETSIGDEF |
		                                             POSIX_SPAWN_SETPGROUP);
	}
	if (r == 0)
		r = -posix_spawnattr_setsigmask(&attr, &none);
	if (r == 0)
		r = -posix_spawnattr_setsigdefault(&attr, &all);
	if (r == 0)
		r = -posix_spawnattr_setpgroup(&attr, 0);
	if (r == 0) {
		r = -posix_spawn_file_actions_init(&fa);
		fa_init = r == 0;
	}
	if (r == 0 && req->cwd)
		r = -posix_spawn_file_actions_addchdir_np(&fa, req->cwd);
	for (int i = 0; r == 0 && i < 3; i++)
		r = -posix_spawn_file_actions_adddup2(&fa, child_fd[i], i);
	if (r == 0)
		r = -posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
	if (r < 0) {
		set_err(err, errlen, "cannot prepare to run", req->argv[0], -r);
		goto finish;
	}

	start = mono_usec();
	r = -posix_spawn(&pid, req->argv[0], &fa, &attr, req->argv,
	                 req->envp ? req->envp : empty_env);
	if (r < 0) {
		/* glibc has reaped the child that failed. The error is the chdir's
		 * or the exec's; tell them apart for the message. */
		struct stat st;
		pid = 0;
		if (req->cwd &&
		    (stat(req->cwd, &st) < 0 || !S_ISDIR(st.st_mode) || access(req->cwd, X_OK) < 0))
			set_err(err, errlen, "cannot change directory to", req->cwd, -r);
		else
			set_err(err, errlen, "cannot run", req->argv[0], -r);
		goto finish;
	}

	/* The child has its copies; ours would keep its output pipes from ever
	 * reaching EOF. The stdin end stays while we have input to write (see
	 * the top of the file). */
	if (in_w >= 0) {
		in_keep = child_fd[0];
		child_fd[0] = -1;
	}
	close_child_ends(child_fd, &devnull);

	pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* always close-on-exec */
	if (pidfd < 0) {
		r = -errno;
		set_err(err, errlen, "cannot watch", req->argv[0], -r);
		goto kill;
	}

	uint64_t deadline = req->timeout_usec ? start + req->timeout_usec : UINT64_MAX;
	uint64_t period = heartbeat_period_usec();
	int beat_ms = period == 0          ? 0
	              : period >= 1000000u ? 1000
	              : period < 1000u     ? 1
	                                   : (int)(period / 1000u);
	for (;;) {
		struct pollfd pfd[4];
		nfds_t n = 0;
		int i_in = -1, i_out = -1, i_err = -1;

		pfd[n++] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
		if (in_w >= 0) {
			i_in = (int)n;
			pfd[n++] = (struct pollfd){ .fd = in_w, .events = POLLOUT };
		}
		if (out.fd >= 0) {
			i_out = (int)n;
			pfd[n++] = (struct pollfd){ .fd = out.fd, .events = POLLIN };
		}
		if (errc.fd >= 0) {
			i_err = (int)n;
			pfd[n++] = (struct pollfd){ .fd = errc.fd, .events = POLLIN };
		}
		int ms = -1;
		if (deadline != UINT64_MAX) {
			uint64_t now = mono_usec();
			uint64_t left = now >= deadline ? 0 : (deadline - now + 999) / 1000;
			ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		/* A watched worker shows it is alive while the program runs
		 * (heartbeat.h): wake at least once a period to beat. */
		if (beat_ms > 0 && (ms < 0 || ms > beat_ms))
			ms = beat_ms;
		int polled = poll(pfd, n, ms);
		heartbeat_beat();
		if (polled < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			set_err(err, errlen, "cannot wait for", req->argv[0], -r);
			goto kill;
		}

		if (i_in >= 0 && pfd[i_in].revents) {
			ssize_t w = write(in_w, req->input + in_off, req->input_len - in_off);
			if (w > 0)
				in_off += (size_t)w;
			/* EPIPE cannot happen while we hold in_keep; if anything
			 * but "try again" does, the child will get no more input. */
			if (in_off == req->input_len ||
			    (w < 0 && errno != EAGAIN && errno != EINTR)) {
				close_fd(&in_w);
				close_fd(&in_keep);
			}
		}
		if (i_out >= 0 && pfd[i_out].revents) {
			r = capture_read(&out, scratch);
			if (r < 0)
				goto read_failed;
		}
		if (i_err >= 0 && pfd[i_err].revents) {
			r = capture_read(&errc, scratch);
			if (r < 0)
				goto read_failed;
		}
		if (pfd[0].revents)
			break; /* the leader exited */

		if (deadline != UINT64_MAX && mono_usec() >= deadline) {
			if (!timed_out) {
				signal_group(pid, SIGTERM);
				signal_group(pid, SIGCONT);
				timed_out = true;
				deadline = mono_usec() + req->grace_usec;
			} else {
				signal_group(pid, SIGKILL);
				killed = true;
				deadline = UINT64_MAX;
			}
		}
	}

	/* The leader is a zombie: end the rest of its group (see the top of the
	 * file for why before reaping), reap it, then drain the pipes without
	 * waiting for EOF. */
	(void)kill(-pid, SIGKILL);
	status = reap(pid, &e);
	end = mono_usec();
	pid = 0;
	if (e != 0) {
		r = -e;
		set_err(err, errlen, "cannot get the exit status of", req->argv[0], e);
		goto finish;
	}
	for (int c = 0; c < 2; c++) {
		for (int i = 0; i < DRAIN_READS_MAX && caps[c]->fd >= 0; i++) {
			r = capture_read(caps[c], scratch);
			if (r < 0)
				goto read_failed;
			if (r == 0)
				break;
		}
	}

	SpawnResult done = {
		.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1,
		.term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0,
		.timed_out = timed_out,
		.killed = killed,
		.out_total = out.total,
		.err_total = errc.total,
		.usec = end - start,
	};
	r = capture_take(&out, &done.out, &done.out_len);
	if (r == 0) {
		r = capture_take(&errc, &done.err, &done.err_len);
		if (r < 0)
			free(done.out);
	}
	if (r < 0) {
		set_err(err, errlen, "cannot capture the output of", req->argv[0], -r);
		goto finish;
	}
	*res = done;
	goto finish;

read_failed:
	set_err(err, errlen, "cannot capture the output of", req->argv[0], -r);
kill:
	if (pid > 0) {
		signal_group(pid, SIGKILL);
		(void)reap(pid, &e);
		pid = 0;
	}
finish:
	/* Closed by the raw syscall it was made with. ThreadSanitizer sees
	 * neither: libuv also closes with a raw close(2), so a libc close of
	 * a reused number here would look to it like a race with whatever
	 * libuv did with that number before (a false report). */
	if (pidfd >= 0)
		(void)syscall(SYS_close, pidfd);
	close_fd(&in_w);
	close_fd(&in_keep);
	close_fd(&out.fd);
	close_fd(&errc.fd);
	close_child_ends(child_fd, &devnull);
	if (fa_init)
		posix_spawn_file_actions_destroy(&fa);
	if (attr_init)
		posix_spawnattr_destroy(&attr);
	free(out.buf);
	free(errc.buf);
	return r;
}

void spawn_result_free(SpawnResult *res)
{
	if (!res)
		return;
	free(res->out);
	free(res->err);
	res->out = res->err = NULL;
	res->out_len = res->err_len = 0;
}

/* "2s", "1.5s", "1.234s", "500ms", "1.5ms", "250us": the largest unit that
 * fits, up to three decimals, truncated (never rounds up into the next unit). */
static void format_duration(uint64_t usec, char *buf, size_t len)
{
	uint64_t unit;
	const char *name;

	if (usec >= 1000000) {
		unit = 1000000;
		name = "s";
	} else if (usec >= 1000) {
		unit = 1000;
		name = "ms";
	} else {
		snprintf(buf, len, "%" PRIu64 "us", usec);
		return;
	}
	/* Thousandths of the unit, trailing zeros dropped. */
	uint64_t whole = usec / unit, frac = usec % unit / (unit / 1000);
	if (frac == 0) {
		snprintf(buf, len, "%" PRIu64 "%s", whole, name);
		return;
	}
	int digits = 3;
	while (frac % 10 == 0) {
		frac /= 10;
		digits--;
	}
	snprintf(buf, len, "%" PRIu64 ".%0*" PRIu64 "%s", whole, digits, frac, name);
}

/* "SIGKILL", "SIGRTMIN+2"; NULL for a number with no name. */
static const char *signal_name(int sig, char *buf, size_t len)
{
	const char *abbrev = sigabbrev_np(sig);
	if (abbrev)
		snprintf(buf, len, "SIG%s", abbrev);
	else if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(buf, len, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		return NULL;
	return buf;
}

void spawn_result_describe(const SpawnResult *res, const SpawnRequest *req, char *buf, size_t len)
{
	char name[32], timeout[32], grace[32];

	if (len == 0)
		return;
	const char *sig =
	        res->term_signal ? signal_name(res->term_signal, name, sizeof(name)) : NULL;
	if (!res->timed_out) {
		if (res->term_signal == 0)
			snprintf(buf, len, "exited with status %d", res->exit_status);
		else if (sig)
			snprintf(buf, len, "killed by signal %d (%s)", res->term_signal, sig);
		else
			snprintf(buf, len, "killed by signal %d", res->term_signal);
		return;
	}

	char ending[64], grace_period[64] = "";
	if (res->term_signal == 0)
		snprintf(ending, sizeof(ending), "exited with status %d", res->exit_status);
	else if (sig)
		snprintf(ending, sizeof(ending), "killed by %s", sig);
	else
		snprintf(ending, sizeof(ending), "killed by signal %d", res->term_signal);
	if (!req) {
		snprintf(buf, len, "timed out; %s", ending);
		return;
	}
	format_duration(req->timeout_usec, timeout, sizeof(timeout));
	if (res->killed && res->term_signal == SIGKILL) {
		format_duration(req->grace_usec, grace, sizeof(grace));
		snprintf(grace_period, sizeof(grace_period), " after a %s grace period", grace);
	}
	snprintf(buf, len, "timed out after %s; %s%s", timeout, ending, grace_period);
}
