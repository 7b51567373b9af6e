/* Unit tests for daemon/spawn.c.
 *
 * Children are /bin/sh scripts. Nothing asserts on elapsed time: a request's
 * own timeout (HANG_GUARD_USEC, asserted not reached) bounds what a broken
 * spawn_run could wait for, and Check's case timeout guards the rest.
 * Grandchildren are checked through PR_SET_CHILD_SUBREAPER: once their
 * parent shell exits they become the test process's children, so the test
 * can wait for them and see the signal that ended them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "heartbeat.h"
#include "spawn.h"
#include "testutil.h"
#include "util.h"

/* Longer than any child here needs, even in a sanitizer build on a loaded
 * machine; a case that reaches it fails on timed_out. */
#define HANG_GUARD_USEC (60 * 1000000ull)

static char *const test_env[] = { "PATH=/usr/bin:/bin", NULL };

#define SH(script) ((char *const[]){ "/bin/sh", "-c", (char *)(script), NULL })

/* A request with room for every output here and the hang guard. */
static SpawnRequest request(char *const *argv)
{
	return (SpawnRequest){
		.argv = argv,
		.envp = test_env,
		.stdout_max = 1 << 20,
		.stderr_tail = 4096,
		.timeout_usec = HANG_GUARD_USEC,
		.grace_usec = 1000000,
	};
}

/* Runs req, which must start; checks what every result promises. */
static SpawnResult run(const SpawnRequest *req)
{
	SpawnResult res;
	char err[256];
	int r = spawn_run(req, &res, err, sizeof(err));
	ck_assert_msg(r == 0, "spawn_run: %d (%s)", r, err);
	ck_assert_ptr_nonnull(res.out);
	ck_assert_ptr_nonnull(res.err);
	ck_assert_int_eq(res.out[res.out_len], '\0');
	ck_assert_int_eq(res.err[res.err_len], '\0');
	ck_assert_uint_le(res.out_len, req->stdout_max);
	ck_assert_uint_le(res.err_len, req->stderr_tail);
	ck_assert_uint_ge(res.out_total, res.out_len);
	ck_assert_uint_ge(res.err_total, res.err_len);
	return res;
}

/* Runs a script that must exit 0 within the hang guard. */
static SpawnResult run_script(const char *script)
{
	SpawnRequest req = request(SH(script));
	SpawnResult res = run(&req);
	ck_assert_msg(res.exit_status == 0 && !res.timed_out, "%s: status %d signal %d, stderr %s",
	              script, res.exit_status, res.term_signal, res.err);
	return res;
}

static unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	ck_assert_ptr_nonnull(d);
	unsigned n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void assert_no_children(void)
{
	errno = 0;
	ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
}

/* Waits for a grandchild adopted through PR_SET_CHILD_SUBREAPER and returns
 * the signal that ended it (0 if it exited). */
static int wait_adopted(pid_t pid)
{
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

static void become_subreaper(void)
{
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
}

/* Makes the calling thread's (and its children's) syscalls `nr` fail with
 * err. The forked test process ends with the case, and the filter with it.
 * Native syscalls only: no architecture check. */
static void deny_syscall(long nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = ELEMENTSOF(f), .filter = f };
	ck_assert_int_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	ck_assert_int_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}

START_TEST(test_stdin_to_stdout)
{
	/* More than a pipe holds, so input and output must flow together. */
	size_t n = 100 * 1024;
	char *input = malloc(n);
	for (size_t i = 0; i < n; i++)
		input[i] = (char)('a' + i * 7 % 26);
	SpawnRequest req = request((char *const[]){ "/bin/cat", NULL });
	req.input = input;
	req.input_len = n;
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, 0);
	ck_assert_uint_eq(res.out_len, n);
	ck_assert_uint_eq(res.out_total, n);
	ck_assert(memcmp(res.out, input, n) == 0);
	ck_assert_uint_eq(res.err_len, 0);
	spawn_result_free(&res);

	/* A small input, written before the program starts. */
	req.input = "{}";
	req.input_len = 2;
	res = run(&req);
	ck_assert_str_eq(res.out, "{}");
	spawn_result_free(&res);
	free(input);
}
END_TEST

START_TEST(test_no_input_is_dev_null)
{
	SpawnRequest req = request(SH("readlink /proc/$$/fd/0; cat"));
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, 0);
	ck_assert_str_eq(res.out, "/dev/null\n");
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_no_output_wanted_is_dev_null)
{
	SpawnRequest req =
	        request(SH("x=$(readlink /proc/$$/fd/1 /proc/$$/fd/2); echo \"$x\" >&2"));
	req.stdout_max = 0;
	SpawnResult res = run(&req);
	ck_assert_msg(strncmp(res.err, "/dev/null\npipe:[", 16) == 0, "%s", res.err);
	ck_assert_uint_eq(res.out_total, 0);
	spawn_result_free(&res);

	req = request(SH("readlink /proc/$$/fd/2; echo lost >&2"));
	req.stderr_tail = 0;
	res = run(&req);
	ck_assert_str_eq(res.out, "/dev/null\n");
	ck_assert_str_eq(res.err, "");
	ck_assert_uint_eq(res.err_total, 0);
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_timeout_sigterm)
{
	SpawnRequest req = request(SH("sleep 1000"));
	req.timeout_usec = 200 * 1000;
	req.grace_usec = 5 * 1000000;
	SpawnResult res = run(&req);
	ck_assert(res.timed_out);
	ck_assert(!res.killed);
	ck_assert_int_eq(res.exit_status, -1);
	ck_assert_int_eq(res.term_signal, SIGTERM);
	ck_assert_uint_ge(res.usec, req.timeout_usec); /* never signalled early */
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_timeout_sigkill_after_grace)
{
	SpawnRequest req = request(SH("trap '' TERM; sleep 1000"));
	req.timeout_usec = 200 * 1000;
	req.grace_usec = 200 * 1000;
	SpawnResult res = run(&req);
	ck_assert(res.timed_out);
	ck_assert(res.killed);
	ck_assert_int_eq(res.exit_status, -1);
	ck_assert_int_eq(res.term_signal, SIGKILL);
	ck_assert_uint_ge(res.usec, req.timeout_usec + req.grace_usec);
	spawn_result_free(&res);
}
END_TEST

/* The timeout's SIGTERM goes to the whole group, not just the leader: a
 * background sleep dies of SIGTERM too (the SIGKILL that follows the
 * leader's exit would otherwise be what ended it). */
START_TEST(test_timeout_signals_the_group)
{
	become_subreaper();
	SpawnRequest req = request(SH("sleep 1000 & echo $!; wait"));
	req.timeout_usec = 1000000; /* time enough to start sleep and say its pid */
	req.grace_usec = 5 * 1000000;
	SpawnResult res = run(&req);
	ck_assert(res.timed_out && !res.killed);
	ck_assert_int_eq(res.term_signal, SIGTERM);
	pid_t pid = atoi(res.out);
	ck_assert_int_gt(pid, 1);
	ck_assert_int_eq(wait_adopted(pid), SIGTERM);
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_stdout_past_limit_is_read_and_dropped)
{
	SpawnRequest req = request(SH("head -c 100000000 /dev/zero"));
	req.stdout_max = 64 * 1024;
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, 0);
	ck_assert(!res.timed_out);
	ck_assert_uint_eq(res.out_len, 65536);
	ck_assert_uint_eq(res.out_total, 100000000);
	for (size_t i = 0; i < res.out_len; i++)
		ck_assert_int_eq(res.out[i], 0);
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_output_limits_exactly)
{
	/* At the limit and one past it, for both streams: stdout keeps its
	 * first bytes, stderr its last. */
	SpawnRequest req = request(SH("printf abc; printf xyz >&2"));
	req.stdout_max = 3;
	req.stderr_tail = 3;
	SpawnResult res = run(&req);
	ck_assert_str_eq(res.out, "abc");
	ck_assert_str_eq(res.err, "xyz");
	ck_assert_uint_eq(res.out_total, 3);
	ck_assert_uint_eq(res.err_total, 3);
	spawn_result_free(&res);

	req.stdout_max = 2;
	req.stderr_tail = 2;
	res = run(&req);
	ck_assert_str_eq(res.out, "ab");
	ck_assert_str_eq(res.err, "yz");
	ck_assert_uint_eq(res.out_total, 3);
	ck_assert_uint_eq(res.err_total, 3);
	spawn_result_free(&res);

	/* Nothing written: empty strings, never NULL. */
	res = run_script("true");
	ck_assert_str_eq(res.out, "");
	ck_assert_str_eq(res.err, "");
	ck_assert_uint_eq(res.out_total + res.err_total, 0);
	spawn_result_free(&res);
}
END_TEST

/* Everything the program wrote is read, also when it is still in the pipe
 * when the program exits. */
START_TEST(test_output_left_in_the_pipe_at_exit)
{
	SpawnResult res = run_script("head -c 60000 /dev/zero");
	ck_assert_uint_eq(res.out_len, 60000);
	spawn_result_free(&res);
	res = run_script("head -c 300000 /dev/zero; head -c 50000 /dev/zero >&2");
	ck_assert_uint_eq(res.out_len, 300000);
	ck_assert_uint_eq(res.err_total, 50000);
	spawn_result_free(&res);
}
END_TEST

/* The pipe holds more than one read when the program exits: it enlarged its
 * stdout pipe to 1 MiB (F_SETPIPE_SZ = 1031) and filled it with one write
 * just before exiting. Everything is still read. (Whether the pipe is still
 * full when the exit is seen depends on scheduling: a correct spawn_run
 * passes either way, one that stops reading at the exit fails most runs.) */
START_TEST(test_big_pipe_drained_after_exit)
{
	SpawnRequest req =
	        request((char *const[]){ "/usr/bin/perl", "-e",
	                                 "fcntl(STDOUT, 1031, 1 << 20) or die; syswrite(STDOUT, "
	                                 "'x' x 1000000) == 1000000 or die",
	                                 NULL });
	SpawnResult res = run(&req);
	ck_assert_msg(res.exit_status == 0, "%s", res.err);
	ck_assert_uint_eq(res.out_total, 1000000);
	ck_assert_uint_eq(res.out_len, 1000000);
	spawn_result_free(&res);
}
END_TEST

/* A grandchild in the group holds stdout open: spawn_run returns when the
 * leader exits, and the grandchild has been killed. */
START_TEST(test_grandchild_in_group_is_killed)
{
	become_subreaper();
	/* sleep 30, not 1000: without the kill the wait below ends anyway,
	 * and the case fails on how the sleep ended. */
	SpawnResult res = run_script("sleep 30 & echo $!; exit 0");
	pid_t pid = atoi(res.out);
	ck_assert_int_gt(pid, 1);
	ck_assert_int_eq(wait_adopted(pid), SIGKILL);
	spawn_result_free(&res);
}
END_TEST

/* A grandchild that left the group holds stdout open and is not killed:
 * spawn_run still returns when the leader exits (it does not wait for EOF). */
START_TEST(test_grandchild_outside_group_does_not_hold_the_job)
{
	become_subreaper();
	/* The script waits until the grandchild has its own session. */
	SpawnResult res = run_script(
	        "setsid sleep 1000 & p=$!\n"
	        "while read -r a b c d e sid f </proc/$p/stat; [ \"$sid\" != $p ]; do :; done\n"
	        "echo $p");
	pid_t pid = atoi(res.out);
	ck_assert_int_gt(pid, 1);
	ck_assert_int_eq(kill(pid, 0), 0); /* alive: the case tested what it meant to */
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(wait_adopted(pid), SIGKILL);
	spawn_result_free(&res);
}
END_TEST

/* SIGPIPE keeps its default disposition here: writing to a pipe nobody reads
 * would kill the test process. */
START_TEST(test_child_that_does_not_read_its_input)
{
	size_t n = 1 << 20;
	char *input = calloc(1, n);
	SpawnRequest req = request(SH("exit 3"));
	req.input = input;
	req.input_len = n;
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, 3);
	ck_assert_int_eq(res.term_signal, 0);
	ck_assert(!res.timed_out);
	spawn_result_free(&res);

	/* Stops reading and keeps running. */
	req = request(SH("head -c 10 >/dev/null; exec 0<&-; echo done"));
	req.input = input;
	req.input_len = n;
	res = run(&req);
	ck_assert_int_eq(res.exit_status, 0);
	ck_assert(!res.timed_out);
	ck_assert_str_eq(res.out, "done\n");
	spawn_result_free(&res);
	free(input);
}
END_TEST

START_TEST(test_killed_by_signal)
{
	SpawnRequest req = request(SH("kill -9 $$"));
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, -1);
	ck_assert_int_eq(res.term_signal, SIGKILL);
	ck_assert(!res.timed_out && !res.killed);
	char buf[128];
	spawn_result_describe(&res, &req, buf, sizeof(buf));
	ck_assert_str_eq(buf, "killed by signal 9 (SIGKILL)");
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_stderr_tail)
{
	SpawnRequest req = request(SH("i=1; while [ $i -le 10000 ]; do echo \"line $i\" >&2; "
	                              "i=$((i + 1)); done"));
	req.stderr_tail = 100;
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, 0);

	size_t cap = 200000, len = 0;
	char *all = malloc(cap);
	for (int i = 1; i <= 10000; i++)
		len += (size_t)snprintf(all + len, cap - len, "line %d\n", i);
	ck_assert_uint_eq(res.err_total, len);
	ck_assert_uint_eq(res.err_len, 100);
	ck_assert_str_eq(res.err, all + len - 100);
	free(all);
	spawn_result_free(&res);
}
END_TEST

/* A tail bigger than one read: the ring wraps with reads shorter than
 * itself, at every offset. */
START_TEST(test_stderr_tail_wraps)
{
	SpawnRequest req = request(SH("seq 1 100000 >&2"));
	req.stderr_tail = 100000;
	SpawnResult res = run(&req);
	ck_assert_int_eq(res.exit_status, 0);

	size_t cap = 1000000, len = 0;
	char *all = malloc(cap);
	for (int i = 1; i <= 100000; i++)
		len += (size_t)snprintf(all + len, cap - len, "%d\n", i);
	ck_assert_uint_eq(res.err_total, len);
	ck_assert_uint_eq(res.err_len, 100000);
	ck_assert(memcmp(res.err, all + len - 100000, 100000) == 0);
	free(all);
	spawn_result_free(&res);
}
END_TEST

static void assert_fails(const SpawnRequest *req, int want, const char *needle)
{
	SpawnResult res = { .exit_status = 12345 };
	char err[256];
	ck_assert_int_eq(spawn_run(req, &res, err, sizeof(err)), want);
	ck_assert_msg(strstr(err, needle), "'%s' does not name '%s'", err, needle);
	ck_assert_int_eq(res.exit_status, 12345); /* not written on failure */
}

START_TEST(test_cannot_run)
{
	char dir[] = "/tmp/test_spawn.XXXXXX", path[64];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/script", dir);
	FILE *f = fopen(path, "we");
	fputs("#!/bin/sh\necho hi\n", f);
	fclose(f);
	chmod(path, 0644);

	SpawnRequest req = request((char *const[]){ "/no/such/program", NULL });
	assert_fails(&req, -ENOENT, "cannot run /no/such/program: No such file or directory");
	req = request((char *const[]){ path, NULL });
	assert_fails(&req, -EACCES, path);
	req = request(SH("true"));
	req.cwd = "/no/such/dir";
	assert_fails(&req, -ENOENT, "/no/such/dir");
	req = request((char *const[]){ "sh", NULL });
	assert_fails(&req, -EINVAL, "invalid");
	assert_no_children();

	unlink(path);
	rmdir(dir);
}
END_TEST

/* A mix of runs that succeed, fail to start and time out. */
static void run_mix(unsigned rounds)
{
	char *const *no_such = (char *const[]){ "/no/such/program", NULL };
	char *const *sleeper = SH("sleep 1000");
	SpawnResult res;
	char err[256];
	for (unsigned i = 0; i < rounds; i++) {
		SpawnRequest req = request(SH("echo out; echo err >&2; exit 1"));
		switch (i % 4) {
		case 0:
			req.input = "{}";
			req.input_len = 2;
			break;
		case 1:
			req.argv = no_such;
			break;
		case 2:
			req.cwd = "/no/such/dir";
			break;
		case 3:
			if (i % 20 == 3) {
				req.argv = sleeper;
				req.timeout_usec = 1000;
				req.grace_usec = 1000;
			}
			break;
		}
		if (spawn_run(&req, &res, err, sizeof(err)) == 0)
			spawn_result_free(&res);
	}
}

START_TEST(test_no_fd_leaks_no_zombies)
{
	unsigned before = count_fds();
	run_mix(200);
	ck_assert_uint_eq(count_fds(), before);
	assert_no_children();
}
END_TEST

/* Runs /bin/ls /proc/self/fd: the child's fds are 0, 1, 2 and ls's own
 * directory (3), nothing inherited. */
static void assert_child_has_stdio_only(void)
{
	SpawnRequest req = request((char *const[]){ "/bin/ls", "/proc/self/fd", NULL });
	SpawnResult res = run(&req);
	ck_assert_msg(res.exit_status == 0, "ls: status %d signal %d: %s", res.exit_status,
	              res.term_signal, res.err);
	ck_assert_str_eq(res.out, "0\n1\n2\n3\n");
	spawn_result_free(&res);
}

START_TEST(test_child_inherits_no_fds)
{
	/* One the right way, and one another module forgot to make
	 * close-on-exec: neither reaches the child. */
	int a = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int b = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(a, 0);
	ck_assert_int_ge(b, 0);
	assert_child_has_stdio_only();
	close(a);
	close(b);
}
END_TEST

static void *ls_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < 50; i++)
		assert_child_has_stdio_only();
	return NULL;
}

START_TEST(test_concurrent_children_inherit_no_fds)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, ls_thread, NULL), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
	assert_no_children();
}
END_TEST

typedef struct {
	SpawnRequest req;
	SpawnResult res;
	int r;
	char err[256];
} RunArg;

static void *run_thread(void *arg)
{
	RunArg *a = arg;
	a->r = spawn_run(&a->req, &a->res, a->err, sizeof(a->err));
	return NULL;
}

/* The pid behind a pidfd this process has open, or 0 if there is none. */
static pid_t find_pidfd(void)
{
	DIR *d = opendir("/proc/self/fd");
	ck_assert_ptr_nonnull(d);
	pid_t pid = 0;
	struct dirent *e;
	while (!pid && (e = readdir(d))) {
		char path[300], target[64], line[128];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, "anon_inode:[pidfd]") != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", e->d_name);
		FILE *f = fopen(path, "re");
		ck_assert_ptr_nonnull(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Pid: %d", &pid) == 1)
				break;
		fclose(f);
	}
	closedir(d);
	return pid;
}

/* While a program runs, every fd spawn_run holds is close-on-exec, so a
 * program another thread starts (with fork, or any spawner that does not
 * close fds) cannot inherit it. */
START_TEST(test_fds_are_cloexec_while_running)
{
	bool before[1024] = { false };
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && atoi(e->d_name) < 1024)
			before[atoi(e->d_name)] = true;
	closedir(d);

	/* Input bigger than the pipe, so the stdin pipe stays open too. */
	size_t n = 1 << 20;
	char *input = calloc(1, n);
	RunArg a = { .req = request((char *const[]){ "/bin/sleep", "1000", NULL }) };
	a.req.input = input;
	a.req.input_len = n;
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, run_thread, &a), 0);
	pid_t pid;
	WAIT_UNTIL((pid = find_pidfd()) > 0);

	unsigned seen = 0;
	for (int fd = 0; fd < 1024; fd++) {
		int flags = fcntl(fd, F_GETFD);
		if (flags < 0 || before[fd])
			continue;
		ck_assert_msg(flags & FD_CLOEXEC, "fd %d is not close-on-exec", fd);
		seen++;
	}
	ck_assert_uint_ge(seen, 4); /* stdin, stdout, stderr, pidfd */

	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(a.r, 0);
	ck_assert_int_eq(a.res.term_signal, SIGKILL);
	ck_assert(!a.res.timed_out);
	spawn_result_free(&a.res);
	free(input);
}
END_TEST

START_TEST(test_environment_and_cwd)
{
	SpawnRequest req = request((char *const[]){ "/usr/bin/env", NULL });
	req.envp = (char *const[]){ "A=1", "B=two words", NULL };
	SpawnResult res = run(&req);
	ck_assert_str_eq(res.out, "A=1\nB=two words\n"); /* exactly envp */
	spawn_result_free(&res);

	req.envp = NULL; /* no environment at all */
	res = run(&req);
	ck_assert_str_eq(res.out, "");
	spawn_result_free(&res);

	req = request(SH("echo \"$A\"; pwd"));
	req.envp = (char *const[]){ "A=1", NULL };
	req.cwd = "/tmp";
	res = run(&req);
	ck_assert_str_eq(res.out, "1\n/tmp\n");
	spawn_result_free(&res);

	/* No cwd: the caller's. */
	char cwd[4096], want[4200];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s\n", cwd);
	req.cwd = NULL;
	req.argv = (char *const[]){ "/bin/pwd", NULL };
	res = run(&req);
	ck_assert_str_eq(res.out, want);
	spawn_result_free(&res);
}
END_TEST

START_TEST(test_own_process_group)
{
	SpawnResult res = run_script("read -r pid comm state ppid pgrp rest </proc/$$/stat; "
	                             "echo $$ $pgrp");
	int pid, pgrp;
	ck_assert_int_eq(sscanf(res.out, "%d %d", &pid, &pgrp), 2);
	ck_assert_int_eq(pgrp, pid);
	ck_assert_int_ne(pgrp, getpgrp());
	spawn_result_free(&res);
}
END_TEST

static void on_usr1(int sig)
{
	(void)sig;
}

/* The caller blocks every signal (as workers do), ignores SIGPIPE (as the
 * daemon does) and more; the child starts clean. */
START_TEST(test_child_signal_state_is_clean)
{
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, on_usr1);
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);

	SpawnRequest req = request(
	        (char *const[]){ "/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", NULL });
	SpawnResult res = run(&req);
	ck_assert_str_eq(res.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
	spawn_result_free(&res);

	/* And the defaults act. */
	res = run(
	        &(SpawnRequest){ .argv = SH("kill -TERM $$"), .stdout_max = 1, .stderr_tail = 1 });
	ck_assert_int_eq(res.term_signal, SIGTERM);
	spawn_result_free(&res);
	res = run(
	        &(SpawnRequest){ .argv = SH("kill -PIPE $$"), .stdout_max = 1, .stderr_tail = 1 });
	ck_assert_int_eq(res.term_signal, SIGPIPE);
	spawn_result_free(&res);
}
END_TEST

/* A daemon started with 0..2 closed: our pipes get those numbers, and the
 * child must still see the right ones on 0, 1, 2. */
START_TEST(test_caller_without_stdio)
{
	int saved[3];
	for (int i = 0; i < 3; i++) {
		saved[i] = fcntl(i, F_DUPFD_CLOEXEC, 10);
		ck_assert_int_ge(saved[i], 0);
		close(i);
	}
	SpawnResult res[3];
	char err[3][256];
	int r[3];
	SpawnRequest req = request(SH("cat; echo e >&2"));
	req.input = "hi";
	req.input_len = 2;
	r[0] = spawn_run(&req, &res[0], err[0], sizeof(err[0]));
	req.input_len = 0;
	r[1] = spawn_run(&req, &res[1], err[1], sizeof(err[1]));
	req.input_len = 2;
	req.stdout_max = 0;
	r[2] = spawn_run(&req, &res[2], err[2], sizeof(err[2]));
	for (int i = 0; i < 3; i++) {
		dup2(saved[i], i);
		close(saved[i]);
	}
	const char *want_out[3] = { "hi", "", "" };
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(r[i] == 0, "%s", err[i]);
		ck_assert_str_eq(res[i].out, want_out[i]);
		ck_assert_str_eq(res[i].err, "e\n");
		ck_assert_int_eq(res[i].exit_status, 0);
		spawn_result_free(&res[i]);
	}
}
END_TEST

/* Every fd spawn_run opens can be the one that fails (fd limit lowered step
 * by step): a clean -EMFILE, nothing leaked, no child left. */
START_TEST(test_fd_exhaustion)
{
	struct rlimit old;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
	close(lowest);
	unsigned before = count_fds(), failed = 0, ran = 0;
	for (int extra = 0; extra < 12; extra++) {
		SpawnRequest req = request(SH("cat; echo e >&2"));
		req.input = "hi";
		req.input_len = 2;
		struct rlimit lim = { (rlim_t)(lowest + extra), old.rlim_max };
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
		SpawnResult res;
		char err[256];
		int r = spawn_run(&req, &res, err, sizeof(err));
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
		if (r == 0) {
			ran++;
			spawn_result_free(&res);
		} else {
			ck_assert_int_eq(r, -EMFILE);
			ck_assert_ptr_nonnull(strstr(err, "Too many open files"));
			failed++;
		}
		ck_assert_uint_eq(count_fds(), before);
		assert_no_children();
	}
	ck_assert_uint_gt(failed, 0);
	ck_assert_uint_gt(ran, 0);
}
END_TEST

/* Failures after the program started: it is killed and reaped, nothing leaks. */
START_TEST(test_pidfd_open_fails)
{
	unsigned before = count_fds();
	deny_syscall(SYS_pidfd_open, EMFILE);
	SpawnRequest req = request((char *const[]){ "/bin/sleep", "1000", NULL });
	assert_fails(&req, -EMFILE, "Too many open files");
	assert_no_children();
	ck_assert_uint_eq(count_fds(), before);
}
END_TEST

START_TEST(test_poll_fails)
{
	unsigned before = count_fds();
#ifdef SYS_poll
	deny_syscall(SYS_poll, ENOMEM);
#else
	deny_syscall(SYS_ppoll, ENOMEM); /* glibc's poll where there is no poll syscall */
#endif
	SpawnRequest req = request((char *const[]){ "/bin/sleep", "1000", NULL });
	assert_fails(&req, -ENOMEM, "Cannot allocate memory");
	assert_no_children();
	ck_assert_uint_eq(count_fds(), before);
}
END_TEST

static void assert_describes(const SpawnResult *res, const SpawnRequest *req, const char *want)
{
	char buf[256];
	spawn_result_describe(res, req, buf, sizeof(buf));
	ck_assert_str_eq(buf, want);
}

START_TEST(test_describe)
{
	SpawnRequest req = { .timeout_usec = 2000000, .grace_usec = 1000000 };
	assert_describes(&(SpawnResult){ .exit_status = 3 }, &req, "exited with status 3");
	assert_describes(&(SpawnResult){ .exit_status = 0 }, &req, "exited with status 0");
	assert_describes(&(SpawnResult){ .exit_status = -1, .term_signal = SIGKILL }, &req,
	                 "killed by signal 9 (SIGKILL)");
	assert_describes(&(SpawnResult){ .exit_status = -1, .term_signal = SIGRTMIN + 2 }, &req,
	                 "killed by signal 36 (SIGRTMIN+2)");
	assert_describes(
	        &(SpawnResult){ .exit_status = -1, .term_signal = SIGTERM, .timed_out = true },
	        &req, "timed out after 2s; killed by SIGTERM");
	assert_describes(&(SpawnResult){ .exit_status = -1,
	                                 .term_signal = SIGKILL,
	                                 .timed_out = true,
	                                 .killed = true },
	                 &req, "timed out after 2s; killed by SIGKILL after a 1s grace period");
	/* It caught SIGTERM and exited. */
	assert_describes(&(SpawnResult){ .exit_status = 0, .timed_out = true }, &req,
	                 "timed out after 2s; exited with status 0");

	/* Durations. */
	req = (SpawnRequest){ .timeout_usec = 1500000, .grace_usec = 500000 };
	assert_describes(&(SpawnResult){ .exit_status = -1,
	                                 .term_signal = SIGKILL,
	                                 .timed_out = true,
	                                 .killed = true },
	                 &req,
	                 "timed out after 1.5s; killed by SIGKILL after a 500ms grace period");
	req = (SpawnRequest){ .timeout_usec = 1234567, .grace_usec = 250 };
	assert_describes(&(SpawnResult){ .exit_status = -1,
	                                 .term_signal = SIGKILL,
	                                 .timed_out = true,
	                                 .killed = true },
	                 &req,
	                 "timed out after 1.234s; killed by SIGKILL after a 250us grace period");
	req = (SpawnRequest){ .timeout_usec = 90000000, .grace_usec = 1500 };
	assert_describes(&(SpawnResult){ .exit_status = -1,
	                                 .term_signal = SIGKILL,
	                                 .timed_out = true,
	                                 .killed = true },
	                 &req, "timed out after 90s; killed by SIGKILL after a 1.5ms grace period");

	/* A short buffer is truncated, still terminated. */
	char buf[8];
	spawn_result_describe(&(SpawnResult){ .exit_status = 3 }, &req, buf, sizeof(buf));
	ck_assert_str_eq(buf, "exited ");
}
END_TEST

START_TEST(test_invalid_requests)
{
	SpawnResult res;
	char err[128];
	SpawnRequest req = request(NULL);
	ck_assert_int_eq(spawn_run(&req, &res, err, sizeof(err)), -EINVAL);
	req = request(SH("true"));
	req.input_len = 1; /* and no input */
	ck_assert_int_eq(spawn_run(&req, &res, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(spawn_run(NULL, &res, err, sizeof(err)), -EINVAL);
	spawn_result_free(NULL);
}
END_TEST

/* ---- heartbeats ---------------------------------------------------------- */

/* Watches a heartbeat; once it has seen it move `want` times, creates the
 * file the child waits for. */
typedef struct BeatWatch {
	Heartbeat *hb;
	unsigned want;
	const char *release;
	_Atomic unsigned seen;
} BeatWatch;

static void *beat_watch_main(void *arg)
{
	BeatWatch *w = arg;
	uint64_t last = atomic_load(&w->hb->usec);
	uint64_t guard = mono_usec() + HANG_GUARD_USEC / 2;
	while (atomic_load(&w->seen) < w->want && mono_usec() < guard) {
		uint64_t now = atomic_load(&w->hb->usec);
		if (now != last) {
			last = now;
			atomic_fetch_add(&w->seen, 1);
		}
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	close(open(w->release, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
	return NULL;
}

START_TEST(test_a_watched_thread_beats_while_its_program_runs)
{
	/* The child writes nothing and waits for a file that appears only
	 * after the caller's heartbeat has moved 5 times: without beats from
	 * the poll loop it would wait for the watcher's hang guard. */
	char dir[] = "/tmp/spawn-beat-XXXXXX", release[64], script[160];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(release, sizeof(release), "%s/go", dir);
	snprintf(script, sizeof(script), "while [ ! -e %s ]; do sleep 0.01; done", release);
	Heartbeat hb = { 0 };
	heartbeat_set_period(20000);
	ck_assert_uint_eq(heartbeat_period_usec(), 0); /* none bound yet */
	heartbeat_bind(&hb);
	ck_assert_uint_eq(heartbeat_period_usec(), 20000);
	BeatWatch w = { .hb = &hb, .want = 5, .release = release };
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, beat_watch_main, &w), 0);
	SpawnRequest req = request(SH(script));
	SpawnResult res = run(&req);
	pthread_join(t, NULL);
	unsigned seen = atomic_load(&w.seen);
	ck_assert_uint_ge(seen, 5);
	ck_assert_int_eq(res.exit_status, 0);
	ck_assert(!res.timed_out);
	spawn_result_free(&res);
	heartbeat_bind(NULL);
	heartbeat_set_period(0);
	unlink(release);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("spawn");
	TCase *tc = tcase("io");
	tcase_add_test(tc, test_stdin_to_stdout);
	tcase_add_test(tc, test_no_input_is_dev_null);
	tcase_add_test(tc, test_no_output_wanted_is_dev_null);
	tcase_add_test(tc, test_stdout_past_limit_is_read_and_dropped);
	tcase_add_test(tc, test_output_limits_exactly);
	tcase_add_test(tc, test_output_left_in_the_pipe_at_exit);
	tcase_add_test(tc, test_stderr_tail);
	tcase_add_test(tc, test_stderr_tail_wraps);
	tcase_add_test(tc, test_big_pipe_drained_after_exit);
	tcase_add_test(tc, test_child_that_does_not_read_its_input);
	suite_add_tcase(s, tc);

	tc = tcase("processes");
	tcase_add_test(tc, test_timeout_sigterm);
	tcase_add_test(tc, test_timeout_sigkill_after_grace);
	tcase_add_test(tc, test_timeout_signals_the_group);
	tcase_add_test(tc, test_grandchild_in_group_is_killed);
	tcase_add_test(tc, test_grandchild_outside_group_does_not_hold_the_job);
	tcase_add_test(tc, test_killed_by_signal);
	tcase_add_test(tc, test_own_process_group);
	tcase_add_test(tc, test_child_signal_state_is_clean);
	tcase_add_test(tc, test_environment_and_cwd);
	tcase_add_test(tc, test_a_watched_thread_beats_while_its_program_runs);
	suite_add_tcase(s, tc);

	tc = tcase("resources");
	tcase_add_test(tc, test_cannot_run);
	tcase_add_test(tc, test_invalid_requests);
	tcase_add_test(tc, test_no_fd_leaks_no_zombies);
	tcase_add_test(tc, test_child_inherits_no_fds);
	tcase_add_test(tc, test_concurrent_children_inherit_no_fds);
	tcase_add_test(tc, test_fds_are_cloexec_while_running);
	tcase_add_test(tc, test_caller_without_stdio);
	tcase_add_test(tc, test_fd_exhaustion);
	tcase_add_test(tc, test_pidfd_open_fails);
	tcase_add_test(tc, test_poll_fails);
	suite_add_tcase(s, tc);

	tcase_add_test(tc = tcase("describe"), test_describe);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
