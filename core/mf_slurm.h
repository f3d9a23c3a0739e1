/* mf_slurm.h - `mfpipe sweep --launcher slurm`: one sweep point per Slurm job-array task
 * (docs/sweeps.md, "Slurm"). The points that train form one array; the points that reuse a trained
 * point's artifacts form a second array that starts when the first has ended (--dependency=afterany:
 * aftercorok would pair reuse task i with training task i, which is not the training it reuses, and
 * afterok would cancel every reuse point for one failed training; a reuse point whose training failed
 * ends at once as skipped); a last job writes the summary (--dependency=afterany on both). */
#ifndef MF_SLURM_H
#define MF_SLURM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_slurm_plan {
    const char *sweep_dir;    /* absolute path of the expanded sweep folder (holds sweep.yaml) */
    const char *mfpipe;       /* absolute path of the mfpipe executable the tasks run */
    const int *train_points;  /* point numbers that train (first array), n_train of them */
    int n_train;
    const int *reuse_points;  /* point numbers that reuse a trained point (dependent array) */
    int n_reuse;
    int max_parallel;         /* K of --array=0-N%K; 0: no limit */
    int threads;              /* --cpus-per-task, and the points' threads= */
    const char *sbatch_args;  /* extra sbatch options (one string, split on spaces), or NULL */
} mf_slurm_plan;

/* Write <sweep_dir>/slurm/{train.sbatch, reuse.sbatch, summary.sbatch, train_points.txt,
 * reuse_points.txt} (logs: <sweep_dir>/slurm/logs/%A_%a.out), submit them with sbatch (an empty
 * array is not submitted), and record the job ids in <sweep_dir>/slurm/jobs.json. Array task i runs
 * `mfpipe sweep --point P <sweep_dir>` for the P on line i of its points file; the summary job runs
 * `mfpipe sweep --summarize <sweep_dir>`. The job ids, comma-separated, go to ids. 0, or -1 with
 * mf_fail (sbatch missing, sbatch's error output). */
int mf_slurm_submit(const mf_slurm_plan *p, char *ids, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
