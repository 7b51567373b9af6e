/* replay.c — runs a fuzz target on files, without libFuzzer.
 *
 * Linked with one fuzz_<target>.c in every build (gcc included), and run as
 * a meson test on the target's committed corpus and crash regressions, so
 * that every input that once crashed keeps being checked by the normal test
 * run, under each build's sanitizers.
 *
 * Usage: fuzz_replay_<target> PATH...   (a PATH is a file, or a directory
 * whose files are run in name order; names starting with '.' are skipped).
 * Prints each file before running it, so a crash names its input. Exits 1
 * if a directory cannot be read or no file was run at all (a wrong path
 * must not make a test that cannot fail); a broken invariant aborts. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (!buf) {
				fprintf(stderr, "%s: out of memory\n", path);
				exit(1);
			}
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		fprintf(stderr, "%s: read error\n", path);
		free(buf);
		return -1;
	}
	printf("%s (%zu bytes)\n", path, len);
	fflush(stdout);
	/* An exact copy: a read past the input's end is a heap overflow to ASan. */
	uint8_t *input = malloc(len ? len : 1);
	if (!input)
		exit(1);
	memcpy(input, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(input, len);
	free(input);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns the number of files run, or -1. */
static long run_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return run_file(path) < 0 ? -1 : 1;

	DIR *d = opendir(path);
	if (!d) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	char **names = NULL;
	size_t count = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		names = realloc(names, (count + 1) * sizeof(*names));
		if (!names || !(names[count] = strdup(e->d_name)))
			exit(1);
		count++;
	}
	closedir(d);
	if (count > 0) /* qsort must not get NULL, even for no elements */
		qsort(names, count, sizeof(*names), cmp_names);
	long run = 0;
	for (size_t i = 0; i < count; i++) {
		char *file;
		if (asprintf(&file, "%s/%s", path, names[i]) < 0)
			exit(1);
		/* Subdirectories are not descended into. */
		long r = stat(file, &st) == 0 && S_ISDIR(st.st_mode) ? 0
		         : run_file(file) < 0                        ? -1
		                                                     : 1;
		free(file);
		free(names[i]);
		if (r < 0) {
			run = -1;
			continue;
		}
		if (run >= 0)
			run += r;
	}
	free(names);
	/* Unreadable: the caller fails; empty: it counts nothing. */
	return run;
}

int main(int argc, char **argv)
{
	long total = 0;
	bool failed = false;
	for (int i = 1; i < argc; i++) {
		long n = run_path(argv[i]);
		if (n < 0)
			failed = true;
		else
			total += n;
	}
	printf("%ld inputs replayed\n", total);
	if (total == 0) {
		fprintf(stderr, "no inputs found: check the paths\n");
		return 1;
	}
	return failed ? 1 : 0;
}
