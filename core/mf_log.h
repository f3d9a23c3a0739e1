/* mf_log.h - logging (stderr and the run's log.txt) and a tqdm-like progress line: redrawn in place on
 * a terminal, throttled plain lines otherwise (logs, Slurm). */
#ifndef MF_LOG_H
#define MF_LOG_H

#include <stdint.h>

#include "mf_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MF_LOG_DEBUG = 0, MF_LOG_INFO, MF_LOG_WARN, MF_LOG_ERROR } mf_log_level;

void mf_log(mf_log_level level, const char *fmt, ...) MF_PRINTF(2, 3);
#define mf_info(...) mf_log(MF_LOG_INFO, __VA_ARGS__)
#define mf_warn(...) mf_log(MF_LOG_WARN, __VA_ARGS__)
#define mf_debug(...) mf_log(MF_LOG_DEBUG, __VA_ARGS__)

/* Write a line to the log file only (not to stderr), e.g. the final error the CLI prints itself. */
void mf_log_file_only(mf_log_level level, const char *fmt, ...) MF_PRINTF(2, 3);

/* Also write every line (timestamped) to this file; NULL stops. Returns 0 or -1 (mf_fail). */
int mf_log_open_file(const char *path);
void mf_log_close_file(void);
void mf_log_set_quiet(int quiet); /* quiet: only warnings and errors on stderr (file gets all) */

typedef struct mf_progress mf_progress;
/* total <= 0: unknown total. Interval for non-terminal lines: MFPIPE_PROGRESS_SECONDS (default 10). */
mf_progress *mf_progress_begin(const char *label, int64_t total, const char *unit);
/* done = items completed so far; extra = text appended ("loss=0.031 lr=2e-4"), may be NULL. */
void mf_progress_update(mf_progress *p, int64_t done, const char *extra);
void mf_progress_end(mf_progress *p); /* final line, frees p */

/* "01:02" / "1:02:03" */
void mf_format_duration(double seconds, char *buf, int cap);

#ifdef __cplusplus
}
#endif
#endif
