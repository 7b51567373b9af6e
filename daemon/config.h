/* config.h — the daemon's configuration file (INI, parsed with inih).
 *
 *   [daemon]
 *   Socket = /run/pipelined.sock   ; control socket path (< 108 bytes)
 *   StateDirectory = /var/lib/pipelined      ; journal and job scratch space
 *   MaxConnections = 4096                    ; 1..65536 (as sd-varlink servers)
 *   MaxOutputBuffer = 4MiB                   ; unsent replies per connection before it is cut off
 *   RetainJobs = 10000                       ; finished jobs kept for queries, 0..10000000
 *   RetainBytes = 64MiB                      ; and at most this many payload bytes of them
 *   ShutdownTimeoutSec = 90                  ; deadline of a shutdown (SIGTERM), 1..86400
 *   RetainAge = 7d                           ; finished jobs older than this are forgotten
 *                                            ;   (infinity: never by age)
 *   Durability = full                        ; full: journal every job (STATE/journal.db),
 *                                            ;   acknowledge after the sync; none: memory only
 *   JournalMinFree = 64MiB                   ; refuse submits below this much free space
 *   SocketMode = 0660                        ; mode of the socket the daemon binds itself
 *                                            ;   (octal, 0000..0777)
 *   SocketGroup = pipelined                  ; its group: a name or a gid (default: the
 *                                            ;   daemon's group)
 *   AllowUsers = alice 1001                  ; who may call every method: user names or
 *   AllowGroups = pipeline-admins            ;   uids, group names or gids (see below)
 *   ReadOnlyUsers = bob                      ; who may call the read-only methods only
 *   ReadOnlyGroups = monitoring
 *   MaxJobsPerUser = 0                       ; jobs in flight per submitting uid, all
 *                                            ;   pipelines together (0: no cap), 0..10000000
 *
 *   [pipeline images]                        ; a pipeline; name as stage_name_is_valid
 *
 *   [stage images/download]                  ; its stages, in file order
 *   Exec = /usr/bin/curl -fsS -o src -- {url} ; what it does: exactly one of Exec=
 *                                            ;   (program.h), Plugin= (pipelined-plugin.h)
 *                                            ;   or Action= (built-in, action.h)
 *   Workers = 3                              ; 1..STAGE_WORKERS_MAX
 *   Capacity = 64                            ; the stage's input queue, 1..QUEUE_CAPACITY_MAX
 *   MaxAttempts = 3                          ; runs per job at this stage, 1..100 (default 1)
 *   RetryDelay = 1s                          ; before the 2nd attempt, doubling (default 1s)
 *   RetryMaxDelay = 5min                     ; cap of one delay (default 5min)
 *   ; Exec= stages only:
 *   RetryExitCodes = 75 timeout signal       ; which failures are retried (default: all)
 *   Timeout = 30s                            ; SIGTERM to the process group (default: none)
 *   TimeoutGrace = 5s                        ; then SIGKILL (default 5s)
 *   WorkingDirectory = /srv/x                ; default: the job's scratch directory
 *   Stdout = json                            ; json, json-required or ignore (program.h)
 *   StderrTail = 4KiB                        ; stderr kept with the job, 0..64KiB
 *   ; Plugin= stages only:
 *   PluginArg = text                         ; handed to pipelined_worker_init
 *
 * Durations are a number with a unit us, ms, s, min, h or d (no unit: seconds);
 * Timeout = infinity (or 0) means none.
 * Sizes accept a suffix K/KiB, M/MiB, G/GiB (powers of 1024). Keys are
 * case-sensitive, as in systemd units; a key given twice in a section keeps
 * the later value. A stage section must come after its pipeline's section.
 * Every pipeline needs at least one stage. Comments are lines starting with
 * '#' or ';', or the rest of a line after " ;" (not " #": inih's rule).
 * Lines are at most 198 bytes (inih's line buffer), and an indented line
 * after a key is refused (inih would read it as a continuation). See
 * packaging/pipelined.conf.example.
 *
 * The four access lists take names or numeric ids separated by blanks; names
 * are resolved when the file is read (NSS: this may block), and an unknown
 * name is an error. A list key given again adds to its list, and an empty
 * value empties it (as systemd's list settings do: one line holds 198 bytes
 * at most). If none of the four is given, whoever can open the socket may
 * call everything; once one is given (even empty), only the users and
 * groups listed, uid 0 and the daemon's own uid may (config_access).
 *
 * Owns: the Config and everything in it. Never logs: errors come back in
 * ConfigError. Threads: any, one at a time per Config. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH "/etc/pipelined/pipelined.conf"
#define CONFIG_DEFAULT_SOCKET "/run/pipelined.sock"
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/pipelined"

/* Most pipelines one file may define: each costs threads and a listing
 * entry, and a reload compares them pairwise. */
#define CONFIG_PIPELINES_MAX 256u

/* Most ids one access list may hold: every call of a connection that is not
 * allowed outright searches them (sorted at load: binary search). */
#define CONFIG_ID_LIST_MAX 1024u

/* SocketGroup= not given: the socket keeps the daemon's group. */
#define CONFIG_GID_UNSET UINT32_MAX

typedef struct StageConfig {
	char *name;     /* owned */
	char *action;   /* owned: the spec, validated by action_parse, in the
	                 * canonical form action_format writes ("fail" is "fail:1");
	                 * NULL unless Action= was given */
	char *exec;     /* owned: Exec=, validated by exec_template_parse; or NULL */
	char *plugin;   /* owned: Plugin=, a shared object that loaded; or NULL */
	char *plugin_arg; /* owned: PluginArg=, or NULL */
	unsigned workers; /* default 1 */
	size_t capacity;  /* default 64 */
	unsigned max_attempts;
	uint64_t retry_delay_usec, retry_max_delay_usec;
	char *retry_exit_codes; /* owned: RetryExitCodes= as given (validated), or NULL: all */
	uint64_t timeout_usec, timeout_grace_usec; /* 0: no timeout */
	char *working_directory; /* owned, or NULL: the job's scratch directory */
	unsigned stdout_mode;    /* a ProgramStdout */
	size_t stderr_tail;
	uint64_t keys_set; /* bit i: the i-th stage key was given (for checks) */
} StageConfig;

typedef struct PipelineConfig {
	char *name; /* owned */
	StageConfig *stages; /* owned array */
	unsigned n_stages;
} PipelineConfig;

typedef enum ConfigDurability {
	CONFIG_DURABILITY_FULL,
	CONFIG_DURABILITY_NONE,
} ConfigDurability;

/* Users or groups of an access key, resolved to ids, sorted (config_access
 * searches them in O(log n) for each of a peer's groups). */
typedef struct ConfigIdList {
	uint32_t *ids; /* owned; NULL when n is 0 */
	size_t n;      /* at most CONFIG_ID_LIST_MAX */
} ConfigIdList;

/* What a peer may call (config_access). */
typedef enum ConfigAccess {
	CONFIG_ACCESS_NONE,      /* nothing but introspection (org.varlink.service) */
	CONFIG_ACCESS_READ_ONLY, /* the methods that change nothing */
	CONFIG_ACCESS_ALL,
} ConfigAccess;

/* Bits of Config.keys_set for the keys whose absence means something. */
enum {
	CONFIG_SET_SOCKET_MODE = 1u << 0,
	CONFIG_SET_SOCKET_GROUP = 1u << 1,
	CONFIG_SET_ACCESS = 1u << 2, /* any of AllowUsers=, AllowGroups=, ReadOnlyUsers=,
	                              * ReadOnlyGroups= */
};

typedef struct Config {
	char *path;           /* owned: the file it was read from */
	char *socket_path;    /* owned */
	char *state_dir;      /* owned */
	unsigned max_connections;
	unsigned max_connection_rate; /* new connections accepted per second; 0: no pacing */
	size_t max_output_buffer;
	uint64_t retain_jobs;
	uint64_t retain_bytes;
	unsigned shutdown_timeout_sec;
	uint64_t retain_age_usec; /* 0: no limit by age */
	unsigned durability;      /* a ConfigDurability */
	uint64_t journal_min_free;
	unsigned socket_mode;  /* permission bits, 0..0777; default 0660 */
	uint32_t socket_group; /* gid, or CONFIG_GID_UNSET */
	ConfigIdList allow_users, allow_groups, read_only_users, read_only_groups;
	uint64_t max_jobs_per_user; /* 0: no cap */
	unsigned keys_set;          /* CONFIG_SET_* */
	PipelineConfig *pipelines; /* owned array, in file order */
	unsigned n_pipelines;
} Config;

typedef struct ConfigError {
	char file[256]; /* the file being read */
	unsigned line;  /* 1-based; 0 when the error is not on one line (e.g. cannot open) */
	char key[64];   /* the key or section at fault; "" if none */
	char reason[512]; /* room for the list of known [daemon] keys */
} ConfigError;

/* Reads and validates path. Returns 0 and a new Config in *ret; -errno
 * (-ENOENT, -EACCES... when the file cannot be read, -EINVAL when its
 * content is wrong, -ENOMEM) and fills *err. */
int config_load(const char *path, Config **ret, ConfigError *err);

/* Formats err as one line: "FILE:LINE: KEY: REASON" (parts left out when
 * empty). */
void config_error_format(const ConfigError *err, char *buf, size_t len);

void config_free(Config *c); /* accepts NULL */

const PipelineConfig *config_find_pipeline(const Config *c, const char *name);

/* What a peer with uid, primary gid and supplementary groups (n_groups of
 * them; may include gid) may call under c's access keys. self_uid is the
 * daemon's own uid: it and uid 0 may always call everything, and so may
 * anyone when no access key is given. */
ConfigAccess config_access(const Config *c, uint32_t uid, uint32_t gid, const uint32_t *groups,
                           size_t n_groups, uint32_t self_uid);

/* The retry policy a stage's keys describe. */
struct RetryPolicy;
void config_stage_retry(const StageConfig *st, struct RetryPolicy *ret);

/* True if the two pipelines have the same stages with the same keys in the
 * same order, worker counts aside: a reload can then rescale the running
 * pipeline instead of replacing it. */
bool config_pipeline_same_shape(const PipelineConfig *a, const PipelineConfig *b);
