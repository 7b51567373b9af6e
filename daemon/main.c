/* main.c — pipelined: command line, configuration, the event loop's life.
 *
 *   pipelined [--config FILE] [--socket PATH]
 *   pipelined --check-config [FILE]
 *
 * Exit status: 0 after a clean shutdown; 1 when the shutdown deadline passed
 * with jobs still running, the journal failed, or the daemon could not start
 * (a damaged journal among other reasons); 2 for a usage error; 78
 * (EX_CONFIG) for a bad configuration. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#include "action.h"
#include "config.h"
#include "crashpoint.h"
#include "heartbeat.h"
#include "journal.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "testvfs.h"

#define EXIT_USAGE  2
#define EXIT_CONFIG 78 /* sysexits.h EX_CONFIG */

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: pipelined [--config FILE] [--socket PATH]\n"
	        "       pipelined --check-config [FILE]\n"
	        "\n"
	        "Runs jobs through the pipelines defined in FILE (default %s).\n"
	        "\n"
	        "  -c, --config FILE     configuration file\n"
	        "  -s, --socket PATH     control socket (overrides Socket= in the file)\n"
	        "      --check-config    validate the configuration and exit (0 ok, 78 bad)\n"
	        "  -h, --help            this text\n"
	        "      --version         print the version\n"
	        "\n"
	        "Signals: SIGTERM/SIGINT shut down (every accepted job finishes; a second one\n"
	        "discards queued jobs), SIGHUP reloads the configuration.\n"
	        "Exit status: 0 clean shutdown, 1 deadline passed, journal failed or start\n"
	        "failed, 2 usage, 78 bad configuration.\n",
	        CONFIG_DEFAULT_PATH);
}

static int load_config(const char *path, Config **ret)
{
	ConfigError err = { 0 };
	char line[600];
	int r = config_load(path, ret, &err);
	if (r < 0) {
		config_error_format(&err, line, sizeof(line));
		log_error("bad configuration: %s", line);
	}
	return r;
}

static int check_config(const char *path)
{
	Config *c;
	if (load_config(path, &c) < 0)
		return EXIT_CONFIG;
	printf("%s: ok, %u pipeline%s:", path, c->n_pipelines, c->n_pipelines == 1 ? "" : "s");
	for (unsigned i = 0; i < c->n_pipelines; i++)
		printf("%s %s (%u stage%s)", i ? "," : "", c->pipelines[i].name,
		       c->pipelines[i].n_stages, c->pipelines[i].n_stages == 1 ? "" : "s");
	printf("\n");
	config_free(c);
	return EXIT_SUCCESS;
}

/* Creates the state directory if it is missing (mode 0750). */
static int ensure_state_dir(const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (errno != ENOENT)
		return -errno;
	return mkdir(path, 0750) == 0 ? 0 : -errno;
}

/* STATE_DIR/jobs holds the jobs' scratch directories. With Durability=none
 * jobs live in memory only, so what an earlier run left there belongs to
 * jobs that are gone, and job ids start again at 1: a new job must never
 * find an old job's files in its directory. Empties it (creating it if
 * needed). Blocks: before the loop starts. (With a journal, ids go on and
 * server_recover removes only what belongs to no job.) */
static int reset_scratch_root(const char *state_dir, bool empty)
{
	char path[ACTION_WORKDIR_MAX];
	if (snprintf(path, sizeof(path), "%s/jobs", state_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	struct stat st;
	if (lstat(path, &st) == 0 && !empty)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (lstat(path, &st) == 0) {
		log_info("removing the scratch directories an earlier run left in %s", path);
		int r = action_remove_workdir(path);
		if (r < 0)
			return r;
	}
	return mkdir(path, 0700) == 0 ? 0 : -errno;
}

/* One daemon per state directory: two would both recover the same jobs
 * and write one journal. An flock on STATE/lock, held (by the open fd)
 * until the process ends, whatever way it ends. Returns 0, -EBUSY if
 * another process holds it, -errno. */
static int lock_state_dir(const char *state_dir)
{
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/lock", state_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return r;
	}
	return 0; /* fd stays open: the lock lasts as long as the process */
}

/* Socket activation (sd_listen_fds(3)): the listening socket systemd passed
 * in *ret_fd, or -1 if it passed none (then we bind our own). Exactly one
 * listening Unix stream socket is accepted: anything else is a unit file
 * mistake, said in err, and the daemon does not start (-EINVAL). The
 * LISTEN_* variables are removed from the environment. */
static int socket_from_systemd(int *ret_fd, char *err, size_t errlen)
{
	int n = sd_listen_fds(1);
	if (n < 0) {
		snprintf(err, errlen, "socket activation: LISTEN_FDS: %s", strerror(-n));
		return n;
	}
	if (n == 0) {
		*ret_fd = -1;
		return 0;
	}
	if (n > 1) {
		snprintf(
		        err, errlen,
		        "socket activation: systemd passed %d sockets; pipelined takes exactly one "
		        "(one ListenStream= path in pipelined.socket)",
		        n);
		return -EINVAL;
	}
	int r = sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0);
	if (r <= 0) {
		snprintf(
		        err, errlen,
		        "socket activation: the socket systemd passed (fd %d) is not a listening "
		        "Unix stream socket%s%s (pipelined.socket needs ListenStream= with a path)",
		        SD_LISTEN_FDS_START, r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
		return -EINVAL;
	}
	*ret_fd = SD_LISTEN_FDS_START;
	return 0;
}

/* Where fd listens ("<unknown>" if it does not say), for the log. */
static void socket_name(int fd, char *buf, size_t len)
{
	struct sockaddr_un sa = { 0 };
	socklen_t sl = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sun_family == AF_UNIX &&
	    sl > offsetof(struct sockaddr_un, sun_path) && sa.sun_path[0])
		snprintf(buf, len, "%.*s", (int)(sl - offsetof(struct sockaddr_un, sun_path)),
		         sa.sun_path);
	else
		snprintf(buf, len, "<unknown>");
}

/* Every connection is a file descriptor, and the usual soft limit on open
 * files (1024) is below the default MaxConnections: raise the soft limit to
 * MaxConnections plus room for the daemon's own files (journal, loop, the
 * pipes of running jobs), within the hard limit (systemd gives services
 * 524288). Not all the way to the hard limit: the programs stages run
 * inherit the soft limit (posix_spawn cannot lower it for them), and some
 * programs (select(), closing every fd up to the limit) break or crawl with
 * a huge one. Past the limit libuv accepts and closes new connections at
 * once, unanswered and unlogged (its EMFILE trick): warn at start if the
 * limit is that low. */
#define OPEN_FILES_SPARE 1024u
static void raise_open_files_limit(unsigned max_connections)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = (rlim_t)max_connections + OPEN_FILES_SPARE;
	if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
		want = rl.rlim_max;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	/* 64: the daemon's own files at the least. */
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_connections + 64)
		log_warning("the open files limit (%llu) is below MaxConnections=%u plus 64: "
		            "connections past it are closed without an answer",
		            (unsigned long long)rl.rlim_cur, max_connections);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int main(int argc, char **argv)
{
	enum { OPT_CHECK = 256, OPT_VERSION };
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ 0 },
	};
	const char *config_path = CONFIG_DEFAULT_PATH, *socket_path = NULL;
	bool check = false;
	int opt;

	log_init();
	while ((opt = getopt_long(argc, argv, "c:s:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 's':
			socket_path = optarg;
			break;
		case OPT_CHECK:
			check = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		case OPT_VERSION:
			printf("pipelined 0.1.0\n");
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (check && optind < argc)
		config_path = argv[optind++];
	if (optind < argc) {
		log_error("unexpected argument '%s'", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (check)
		return check_config(config_path);

	Config *config;
	if (load_config(config_path, &config) < 0)
		return EXIT_CONFIG;
	/* What systemd passed, read (and removed from the environment, which
	 * the stages' programs inherit) before anything starts. */
	char why[512];
	int listen_fd;
	int r = socket_from_systemd(&listen_fd, why, sizeof(why));
	if (r < 0) {
		log_error("%s", why);
		config_free(config);
		return EXIT_FAILURE;
	}
	if (notify_init() < 0)
		log_warning("WATCHDOG_USEC/WATCHDOG_PID are malformed: no watchdog");
	if (notify_stale_usec() > 0) {
		/* A program's worker beats 4 times per stale period (at most
		 * once a second is needed, at least every millisecond is useful). */
		uint64_t period = notify_stale_usec() / 4;
		heartbeat_set_period(period < 1000 ? 1000 : period > 1000000 ? 1000000 : period);
		log_info("watchdog: pinging every %.3f s while every stage makes progress",
		         (double)notify_watchdog_usec() / 2e6);
	}
	if (socket_path) {
		if (strlen(socket_path) > 107) {
			log_error("--socket: path longer than 107 bytes");
			config_free(config);
			return EXIT_USAGE;
		}
		free(config->socket_path);
		config->socket_path = strdup(socket_path);
		if (!config->socket_path) {
			config_free(config);
			return EXIT_FAILURE;
		}
	}
	raise_open_files_limit(config->max_connections);
	bool durable = config->durability == CONFIG_DURABILITY_FULL;
	r = ensure_state_dir(config->state_dir);
	if (r >= 0)
		r = lock_state_dir(config->state_dir);
	if (r >= 0)
		r = reset_scratch_root(config->state_dir, !durable);
	if (r < 0) {
		log_error("state directory %s: %s", config->state_dir,
		          r == -EBUSY ? "another pipelined is using it" : strerror(-r));
		config_free(config);
		return EXIT_FAILURE;
	}
	/* Test hooks (crashpoint.h, testvfs.h): before any thread starts. */
	if (crashpoint_init() < 0) {
		log_error("PIPELINED_CRASH_AT: expected NAME:N with N >= 1");
		config_free(config);
		return EXIT_USAGE;
	}
	r = testvfs_register_from_env();
	if (r < 0) {
		log_error("PIPELINED_TEST_VFS: %s", strerror(-r));
		config_free(config);
		return EXIT_USAGE;
	}
	if (r > 0)
		log_warning("PIPELINED_TEST_VFS=%s: the journal runs on a test file system layer",
		            getenv("PIPELINED_TEST_VFS"));

	/* The journal, checked before anything starts: a damaged one is
	 * refused, never reset. */
	Journal *journal = NULL;
	if (durable) {
		char path[4096], err[1024] = "";
		JournalOptions jo = { .min_free_bytes = config->journal_min_free };
		if (snprintf(path, sizeof(path), "%s/%s", config->state_dir, JOURNAL_FILE) >=
		    (int)sizeof(path))
			r = -ENAMETOOLONG;
		else
			r = journal_open(path, &jo, &journal, err, sizeof(err));
		if (r < 0) {
			if (err[0])
				log_error("%s", err);
			else
				log_error("cannot open the journal %s: %s", path, strerror(-r));
			config_free(config);
			return EXIT_FAILURE;
		}
	}

	/* A client hanging up mid-reply must not kill the daemon. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stderr, NULL, _IOLBF, 0);

	uv_loop_t loop;
	r = uv_loop_init(&loop);
	if (r < 0) {
		log_error("cannot create the event loop: %s", uv_strerror(r));
		journal_close(journal);
		config_free(config);
		return EXIT_FAILURE;
	}
	Server *server = NULL;
	char socket_copy[160];
	snprintf(socket_copy, sizeof(socket_copy), "%s", config->socket_path);
	int status = EXIT_SUCCESS;
	char rerr[1024] = "";
	r = server_new(&loop, config, config_path, &server);
	if (r < 0) {
		journal_close(journal);
		status = EXIT_FAILURE;
	} else {
		/* Socket activation: the socket systemd passed (never unlinked),
		 * else our own. Listening first: a second daemon on the same
		 * socket stops here, before it touches the jobs. Nobody is
		 * served before uv_run. */
		if (listen_fd >= 0) {
			char name[108];
			socket_name(listen_fd, name, sizeof(name));
			snprintf(socket_copy, sizeof(socket_copy), "%s (passed by systemd)", name);
		}
		r = server_listen(server, listen_fd);
		if (r < 0) {
			if (r == -EADDRINUSE)
				log_error("cannot listen on %s: another pipelined is running there",
				          socket_copy);
			else
				log_error("cannot listen on %s: %s", socket_copy, strerror(-r));
			journal_close(journal);
		} else if (journal && server_recover(server, journal, rerr, sizeof(rerr)) < 0) {
			log_error("cannot recover from the journal: %s", rerr);
			r = -1;
		}
		if (r < 0) {
			status = EXIT_FAILURE;
			/* Stop the pipelines already started (no job was accepted). */
			server_shutdown(server, true, 60 * 1000);
		} else {
			log_info("listening on %s", socket_copy);
			server_notify_ready(server);
		}
	}
	if (server) {
		uv_run(&loop, UV_RUN_DEFAULT);
		if (status == EXIT_SUCCESS)
			status = server_exit_status(server);
		if (server_abandoned(server)) {
			/* Workers are still running jobs: no freeing under them. */
			fflush(stderr);
			_exit(status);
		}
	}
	/* Close whatever is left and let the callbacks run, then the loop must
	 * be empty: a handle still open here is a bug. */
	uv_walk(&loop, close_walk, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (server_free(server) < 0 && status == EXIT_SUCCESS) {
		log_error("the journal failed while shutting down");
		status = EXIT_FAILURE;
	}
	if (uv_loop_close(&loop) != 0) {
		log_error("event loop still had open handles at exit");
		status = EXIT_FAILURE;
	}
	return status;
}
