/* mf_slurm.c - `mfpipe sweep --launcher slurm`: write the job-array scripts of a sweep and submit
 * them with sbatch (mf_slurm.h; docs/sweeps.md, "Slurm").
 *
 * Paths are never handed to a shell unquoted: inside the scripts' bodies they are single-quoted
 * ('it'\''s'), on #SBATCH lines double-quoted with \ before " and \ (sbatch's own parser), and '%' in
 * the log path is doubled (sbatch's file name patterns). sbatch itself is run without a shell. */
#include "mf_slurm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"

extern char **environ;

/* ---- quoting ------------------------------------------------------------------------------- */

/* s as one shell word: '...' with ' written as '\'' */
static void sh_quote(mf_buf *b, const char *s) {
    mf_buf_puts(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            mf_buf_puts(b, "'\\''");
        else
            mf_buf_printf(b, "%c", *p);
    }
    mf_buf_puts(b, "'");
}

/* s as one argument of an #SBATCH line: "..." with \ before " and \; '%' doubled when pct. */
static void sbatch_quote(mf_buf *b, const char *s, int pct) {
    mf_buf_puts(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            mf_buf_printf(b, "\\%c", *p);
        else if (*p == '%' && pct)
            mf_buf_puts(b, "%%");
        else
            mf_buf_printf(b, "%c", *p);
    }
    mf_buf_puts(b, "\"");
}

/* A job name from the sweep folder: "mfpipe-<name>-<role>" with <name> the folder above the stamp
 * (results/<name>/<stamp>), characters other than [A-Za-z0-9._-] as '_'. */
static void job_name(mf_buf *b, const char *sweep_dir, const char *role) {
    char *d = mf_xstrdup(sweep_dir);
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') d[--n] = '\0';
    char *slash = strrchr(d, '/');
    const char *name = d;
    if (slash) {
        *slash = '\0';
        char *up = strrchr(d, '/');
        name = up ? up + 1 : d;
        if (!*name) name = slash + 1;
    }
    mf_buf_puts(b, "mfpipe-");
    for (const char *p = name; *p && p - name < 64; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        mf_buf_printf(b, "%c", ok ? c : '_');
    }
    mf_buf_printf(b, "-%s", role);
    free(d);
}

/* ---- files --------------------------------------------------------------------------------- */

static int write_buf(const char *path, const mf_buf *b) {
    return mf_write_file_atomic(path, b->s ? b->s : "", b->len);
}

static int write_points(const char *path, const int *pts, int n) {
    mf_buf b = {0};
    for (int i = 0; i < n; i++) mf_buf_printf(&b, "%d\n", pts[i]);
    int rc = write_buf(path, &b);
    mf_buf_free(&b);
    return rc;
}

/* The script of one array (points file given) or of the summary job (points == NULL). */
static int write_script(const mf_slurm_plan *p, const char *path, const char *role, const char *points, int n) {
    mf_buf b = {0};
    mf_buf_puts(&b, "#!/bin/bash\n");
    mf_buf_puts(&b, "# written by mfpipe sweep --launcher slurm; submitted with sbatch --parsable\n");
    mf_buf_puts(&b, "#SBATCH --job-name=");
    mf_buf jn = {0};
    job_name(&jn, p->sweep_dir, role);
    mf_buf_puts(&b, jn.s);
    mf_buf_free(&jn);
    mf_buf_puts(&b, "\n");
    if (points) {
        mf_buf_printf(&b, "#SBATCH --array=0-%d", n - 1);
        if (p->max_parallel > 0) mf_buf_printf(&b, "%%%d", p->max_parallel);
        mf_buf_puts(&b, "\n");
    }
    char *log = mf_xasprintf("%s/slurm/logs/", p->sweep_dir);
    mf_buf_puts(&b, "#SBATCH --output=");
    mf_buf lb = {0};
    sbatch_quote(&lb, log, 1);
    /* the quoted folder, then the pattern inside the same quotes */
    lb.s[lb.len - 1] = '\0';
    lb.len--;
    mf_buf_puts(&b, lb.s);
    mf_buf_puts(&b, points ? "%A_%a.out\"\n" : "%j_summary.out\"\n");
    mf_buf_free(&lb);
    free(log);
    if (p->threads > 0) mf_buf_printf(&b, "#SBATCH --cpus-per-task=%d\n", p->threads);
    mf_buf_puts(&b, "set -u\n");
    if (points) {
        char *pf = mf_xasprintf("%s/slurm/%s", p->sweep_dir, points);
        mf_buf_puts(&b, "P=$(sed -n \"$((SLURM_ARRAY_TASK_ID+1))p\" ");
        sh_quote(&b, pf);
        mf_buf_puts(&b, ")\n");
        mf_buf_puts(&b, "if [ -z \"$P\" ]; then echo \"mfpipe: error: no point on line $((SLURM_ARRAY_TASK_ID+1)) of \"");
        sh_quote(&b, pf);
        mf_buf_puts(&b, " >&2; exit 1; fi\n");
        free(pf);
        mf_buf_puts(&b, "echo \"mfpipe sweep: task $SLURM_ARRAY_TASK_ID: point $P: start $(date +%s)\"\n");
        mf_buf_puts(&b, "exec ");
        sh_quote(&b, p->mfpipe);
        mf_buf_puts(&b, " sweep --point \"$P\" ");
        sh_quote(&b, p->sweep_dir);
        mf_buf_puts(&b, "\n");
    } else {
        mf_buf_puts(&b, "exec ");
        sh_quote(&b, p->mfpipe);
        mf_buf_puts(&b, " sweep --summarize ");
        sh_quote(&b, p->sweep_dir);
        mf_buf_puts(&b, "\n");
    }
    int rc = write_buf(path, &b);
    mf_buf_free(&b);
    return rc;
}

/* ---- sbatch ------------------------------------------------------------------------------- */

/* Is `prog` an executable file on PATH? */
static int on_path(const char *prog) {
    if (strchr(prog, '/')) return access(prog, X_OK) == 0;
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/bin:/bin";
    const char *s = path;
    for (;;) {
        const char *e = strchr(s, ':');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char *cand = mf_xasprintf("%.*s/%s", (int)n, n ? s : ".", prog);
        struct stat st;
        int ok = stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0;
        free(cand);
        if (ok) return 1;
        if (!e) return 0;
        s = e + 1;
    }
}

/* Run argv (on PATH, no shell), stdin /dev/null; its stdout and stderr into out/err. The exit status,
 * or -1 with mf_fail when it cannot be started. */
static int run_capture(char *const argv[], mf_buf *out, mf_buf *err) {
    int po[2], pe[2];
    if (pipe(po) != 0) return mf_fail("pipe: %s", strerror(errno));
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return mf_fail("pipe: %s", strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addclose(&fa, po[0]);
    posix_spawn_file_actions_addclose(&fa, pe[0]);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        return mf_fail("cannot start %s: %s", argv[0], strerror(rc));
    }
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    mf_buf *dst[2] = {out, err};
    int open_n = 2;
    while (open_n > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t k = read(fds[i].fd, buf, sizeof buf);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_n--;
                continue;
            }
            if (dst[i]->len < (1u << 20)) mf_buf_printf(dst[i], "%.*s", (int)k, buf);
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0) close(fds[i].fd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return mf_fail("waiting for %s: %s", argv[0], strerror(errno));
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Trim trailing white space in place; the buffer's text ("" when empty). */
static const char *trimmed(mf_buf *b) {
    if (!b->s) return "";
    while (b->len > 0 && (b->s[b->len - 1] == '\n' || b->s[b->len - 1] == '\r' || b->s[b->len - 1] == ' '))
        b->s[--b->len] = '\0';
    return b->s;
}

/* sbatch --parsable [extra...] [dependency] script -> the job id (digits before ';' of the last
 * line). 0, or -1 with mf_fail quoting sbatch's error output. */
static int sbatch(const mf_slurm_plan *p, const char *dependency, const char *script, char *id, size_t cap) {
    char *extra = p->sbatch_args ? mf_xstrdup(p->sbatch_args) : NULL;
    int nargs = 0, cargs = 8;
    char **argv = mf_xmalloc(sizeof(char *) * (size_t)cargs);
    argv[nargs++] = (char *)"sbatch";
    argv[nargs++] = (char *)"--parsable";
    if (extra) {
        for (char *save = NULL, *t = strtok_r(extra, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
            if (nargs + 4 >= cargs) argv = mf_xrealloc(argv, sizeof(char *) * (size_t)(cargs *= 2));
            argv[nargs++] = t;
        }
    }
    char *dep = dependency ? mf_xasprintf("--dependency=%s", dependency) : NULL;
    if (nargs + 4 >= cargs) argv = mf_xrealloc(argv, sizeof(char *) * (size_t)(cargs *= 2));
    if (dep) {
        argv[nargs++] = dep;
        argv[nargs++] = (char *)"--kill-on-invalid-dep=yes";
    }
    argv[nargs++] = (char *)script;
    argv[nargs] = NULL;

    mf_buf out = {0}, err = {0};
    int st = run_capture(argv, &out, &err);
    int rc = -1;
    const char *o = trimmed(&out), *e = trimmed(&err);
    if (st < 0) {
        /* mf_fail set */
    } else if (st != 0) {
        mf_fail("sbatch %s: exit status %d%s%s", script, st, *e ? ": " : "", *e ? e : o);
    } else {
        const char *last = strrchr(o, '\n');
        last = last ? last + 1 : o;
        size_t k = 0;
        while (last[k] >= '0' && last[k] <= '9') k++;
        if (k == 0 || k >= cap || (last[k] && last[k] != ';'))
            mf_fail("sbatch %s: no job id in its output (--parsable): '%s'", script, o);
        else {
            memcpy(id, last, k);
            id[k] = '\0';
            rc = 0;
        }
    }
    mf_buf_free(&out);
    mf_buf_free(&err);
    free(dep);
    free(argv);
    free(extra);
    return rc;
}

/* ---- the plan ----------------------------------------------------------------------------- */

static void json_points(mf_buf *b, const int *pts, int n) {
    mf_buf_puts(b, "[");
    for (int i = 0; i < n; i++) mf_buf_printf(b, "%s%d", i ? "," : "", pts[i]);
    mf_buf_puts(b, "]");
}

static void json_job(mf_buf *b, const char *role, const char *id, const char *script, const char *dep,
                     const int *pts, int n, int first) {
    mf_buf_puts(b, first ? "\n  {" : ",\n  {");
    mf_buf o = {0};
    mf_json_str(&o, "role", role);
    mf_json_raw(&o, "id", id);
    mf_json_str(&o, "script", script);
    if (dep)
        mf_json_str(&o, "dependency", dep);
    else
        mf_json_raw(&o, "dependency", "null");
    if (pts) {
        mf_json_int(&o, "tasks", n);
        mf_buf pb = {0};
        json_points(&pb, pts, n);
        mf_json_raw(&o, "points", pb.s);
        mf_buf_free(&pb);
    }
    mf_buf_puts(b, o.s);
    mf_buf_free(&o);
    mf_buf_puts(b, "}");
}

int mf_slurm_submit(const mf_slurm_plan *p, char *ids, size_t cap) {
    if (ids && cap) ids[0] = '\0';
    if (!p || !p->sweep_dir || !*p->sweep_dir || !p->mfpipe || !*p->mfpipe)
        return mf_fail("slurm: the plan needs the sweep folder and the mfpipe executable");
    if (p->n_train < 0 || p->n_reuse < 0 || (p->n_train && !p->train_points) || (p->n_reuse && !p->reuse_points))
        return mf_fail("slurm: bad point lists in the plan of %s", p->sweep_dir);
    if (p->max_parallel < 0) return mf_fail("slurm: max_parallel must be >= 0 (got %d)", p->max_parallel);
    if (!on_path("sbatch")) return mf_fail("sbatch not found: install slurm-client or use --launcher local");

    char *sdir = mf_xasprintf("%s/slurm", p->sweep_dir);
    char *logs = mf_xasprintf("%s/slurm/logs", p->sweep_dir);
    char *train_sh = mf_xasprintf("%s/train.sbatch", sdir), *reuse_sh = mf_xasprintf("%s/reuse.sbatch", sdir);
    char *sum_sh = mf_xasprintf("%s/summary.sbatch", sdir);
    char *train_txt = mf_xasprintf("%s/train_points.txt", sdir), *reuse_txt = mf_xasprintf("%s/reuse_points.txt", sdir);
    char *jobs = mf_xasprintf("%s/jobs.json", sdir);
    char train_id[64] = "", reuse_id[64] = "", sum_id[64] = "";
    char *reuse_dep = NULL, *sum_dep = NULL;
    mf_buf jb = {0};
    int rc = -1;

    if (mf_mkdirs(logs) != 0) goto done;
    if (write_points(train_txt, p->train_points, p->n_train) != 0 ||
        write_points(reuse_txt, p->reuse_points, p->n_reuse) != 0)
        goto done;
    if (p->n_train > 0 && write_script(p, train_sh, "train", "train_points.txt", p->n_train) != 0) goto done;
    if (p->n_reuse > 0 && write_script(p, reuse_sh, "reuse", "reuse_points.txt", p->n_reuse) != 0) goto done;
    if (write_script(p, sum_sh, "summary", NULL, 0) != 0) goto done;

    if (p->n_train > 0 && sbatch(p, NULL, train_sh, train_id, sizeof train_id) != 0) goto done;
    if (p->n_reuse > 0) {
        /* Every trained point must have ended before a reuse point starts; afterany (not afterok)
         * so that one failed training does not cancel the reuse points of the others: a reuse point
         * whose training point failed ends at once (sweep --point) and the summary says so. */
        if (train_id[0]) reuse_dep = mf_xasprintf("afterany:%s", train_id);
        if (sbatch(p, reuse_dep, reuse_sh, reuse_id, sizeof reuse_id) != 0) goto done;
    }
    if (train_id[0] || reuse_id[0])
        sum_dep = mf_xasprintf("afterany%s%s%s%s", train_id[0] ? ":" : "", train_id, reuse_id[0] ? ":" : "",
                               reuse_id);
    if (sbatch(p, sum_dep, sum_sh, sum_id, sizeof sum_id) != 0) goto done;
    rc = 0;

done:
    if (train_id[0] || reuse_id[0] || sum_id[0]) {
        /* what was submitted, also after a later submission failed (so it can be cancelled) */
        int first = 1;
        char tbuf[32];
        time_t now = time(NULL);
        struct tm tmv;
        gmtime_r(&now, &tmv);
        strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%SZ", &tmv);
        mf_buf_puts(&jb, "{");
        mf_buf hdr = {0};
        mf_json_str(&hdr, "sweep_dir", p->sweep_dir);
        mf_json_str(&hdr, "submitted", tbuf);
        mf_json_bool(&hdr, "complete", rc == 0);
        mf_buf_puts(&jb, hdr.s);
        mf_buf_free(&hdr);
        mf_buf_puts(&jb, ", \"jobs\": [");
        if (train_id[0]) {
            json_job(&jb, "train", train_id, train_sh, NULL, p->train_points, p->n_train, first);
            first = 0;
        }
        if (reuse_id[0]) {
            json_job(&jb, "reuse", reuse_id, reuse_sh, reuse_dep, p->reuse_points, p->n_reuse, first);
            first = 0;
        }
        if (sum_id[0]) json_job(&jb, "summary", sum_id, sum_sh, sum_dep, NULL, 0, first);
        mf_buf_puts(&jb, "\n]}\n");
        if (ids && cap)
            snprintf(ids, cap, "%s%s%s%s%s", train_id, train_id[0] && reuse_id[0] ? "," : "", reuse_id,
                     (train_id[0] || reuse_id[0]) && sum_id[0] ? "," : "", sum_id);
        char *saved = rc != 0 ? mf_xstrdup(mf_last_error()) : NULL;
        if (write_buf(jobs, &jb) != 0) rc = -1;
        if (saved) {
            mf_fail("%s (jobs submitted before it: %s; see %s)", saved, ids && cap ? ids : "?", jobs);
            free(saved);
        }
    }
    mf_buf_free(&jb);
    free(reuse_dep);
    free(sum_dep);
    free(sdir);
    free(logs);
    free(train_sh);
    free(reuse_sh);
    free(sum_sh);
    free(train_txt);
    free(reuse_txt);
    free(jobs);
    return rc;
}
