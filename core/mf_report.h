/* mf_report.h - `mfpipe report DIR`: one self-contained HTML page (DIR/report.html) of a run folder or
 * a sweep folder (docs/report.md): configuration, manifest, loss and learning-rate curves (inline SVG,
 * mf_svg), the periodic sample grids, the final grid and trajectory, the eval table beside the
 * N-matched floor (N training images against the test set, computed once and cached under eval's
 * cache folder), FID against NFE where sample/eval folders or a fid_vs_nfe CSV exist under the run;
 * for a sweep: summary.csv as a table, its plots and each point's final grid, linked to the point's
 * own report.html. Images are embedded as data: URIs, nothing is loaded from the network, every text
 * read from a file is HTML-escaped, the page is written atomically. */
#ifndef MF_REPORT_H
#define MF_REPORT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_report_opts {
    int floor;  /* 1: compute the floor when it is not cached (and the data set is there); 0: cached only */
    int quiet;  /* no "computing the floor" notes */
} mf_report_opts;

/* Write <dir>/report.html for a run folder (status.json, manifest.json or metrics.jsonl) or a sweep
 * folder (sweep.yaml). opts may be NULL (floor computed). 0, or -1 with mf_fail. Missing or corrupt
 * files become notes on the page (and warnings on stderr), never a failure. */
int mf_report_write(const char *dir, const mf_report_opts *opts);

/* The report at the end of a run or sweep: never fails; a failure is a warning (mf_warn) and the
 * current error message (mf_last_error) is kept as it was. ended_ok = 0 (a failed or interrupted
 * run) uses a cached floor only. MFPIPE_REPORT=0 in the environment turns it off. */
void mf_report_after(const char *dir, int ended_ok);

/* `mfpipe report DIR [--no-floor] [-q]` (argv after the command name): 0 written, 1 error, 2 bad
 * command line. */
int mf_report_cmd(int argc, char **argv);
extern const char *const mf_report_help;

#ifdef __cplusplus
}
#endif
#endif
