/* fuzz.h — what the fuzz targets share: the libFuzzer entry point they
 * define, and FUZZ_CHECK, an invariant check that aborts in every build.
 *
 * Each fuzz_<target>.c defines LLVMFuzzerTestOneInput. It is linked either
 * with libFuzzer (-Dfuzzing=true, clang) or with replay.c, which runs it on
 * every file of the committed corpus and regressions (a meson test in every
 * build). Not assert(): a target must catch a broken invariant whatever
 * NDEBUG says, and the replay must fail on it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)
