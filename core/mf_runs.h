/* mf_runs.h - `mfpipe ls` / `mfpipe runs` (a table of the run folders under a results root) and
 * `mfpipe show RUN_DIR` (one run's summary). Both only read the run folders; missing or corrupt files
 * become "?" with a warning on stderr, never a failure of the listing. */
#ifndef MF_RUNS_H
#define MF_RUNS_H

#ifdef __cplusplus
extern "C" {
#endif

extern const char *const mf_runs_ls_help;
extern const char *const mf_runs_show_help;

/* argv excludes the command name; return the exit status (0 ok, 1 error, 2 bad command line) */
int mf_runs_ls_cmd(int argc, char **argv);
int mf_runs_show_cmd(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
