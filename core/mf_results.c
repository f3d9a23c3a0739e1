/* mf_results.c - results folders: results/<name>/<YYYYmmdd-HHMMSS>[-n]/ made with an atomic mkdir,
 * the `latest` link, status.json (running / finished / failed / interrupted) and manifest.json. */
#include <errno.h>
#include <lua.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>
#include <zlib.h>

#include "mf_buildinfo.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_runner.h"

int mf_results_create_at(const char *dir) {
    if (mf_mkdirs(dir) != 0) return mf_error_prefix("results folder not writable: ");
    char *st = mf_xasprintf("%s/status.json", dir);
    int taken = access(st, F_OK) == 0;
    free(st);
    if (taken) return mf_fail("%s: already holds a run (status.json); choose another --out folder", dir);
    if (access(dir, W_OK | X_OK) != 0) return mf_fail("results folder not writable: %s: %s", dir, strerror(errno));
    return 0;
}

int mf_results_create(const char *root, const char *name, char *out, size_t cap) {
    char *base = mf_xasprintf("%s/%s", root, name);
    if (mf_mkdirs(base) != 0) {
        free(base);
        return mf_error_prefix("results folder not writable: ");
    }
    if (access(base, W_OK | X_OK) != 0) {
        mf_fail("results folder not writable: %s: %s", base, strerror(errno));
        free(base);
        return -1;
    }
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    int rc = -1;
    for (int n = 0; n < 10000; n++) {
        if (n == 0) snprintf(out, cap, "%s/%s", base, stamp);
        else snprintf(out, cap, "%s/%s-%d", base, stamp, n);
        if (mkdir(out, 0777) == 0) {
            rc = 0;
            break;
        }
        if (errno != EEXIST) {
            mf_fail("results folder not writable: %s: %s", out, strerror(errno));
            break;
        }
    }
    free(base);
    return rc;
}

int mf_results_link_latest(const char *run_dir) {
    const char *slash = strrchr(run_dir, '/');
    if (!slash) return mf_fail("%s: not a run folder path", run_dir);
    char *parent = mf_xasprintf("%.*s", (int)(slash - run_dir), run_dir);
    char *tmp = mf_xasprintf("%s/.latest.%ld", parent, (long)getpid());
    char *link = mf_xasprintf("%s/latest", parent);
    unlink(tmp);
    int rc = 0;
    if (symlink(slash + 1, tmp) != 0 || rename(tmp, link) != 0) {
        rc = mf_fail("%s: cannot update link: %s", link, strerror(errno));
        unlink(tmp);
    }
    free(parent);
    free(tmp);
    free(link);
    return rc;
}

int mf_results_status(const char *run_dir, const char *state, const char *stage, const char *error) {
    mf_buf b = {0};
    char ts[40];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S%z", &tm);
    mf_buf_puts(&b, "{");
    mf_json_str(&b, "state", state);
    mf_json_str(&b, "time", ts);
    if (stage) mf_json_str(&b, "stage", stage);
    if (error) mf_json_str(&b, "error", error);
    mf_buf_puts(&b, "}\n");
    char *path = mf_xasprintf("%s/status.json", run_dir);
    int rc = mf_write_file_atomic(path, b.s, b.len);
    free(path);
    mf_buf_free(&b);
    return rc;
}


/* The runner's own libraries; each backend names its own (mf_backend_i.version, in "backend"). */
void mf_library_versions(char *buf, size_t cap) {
    snprintf(buf, cap, "libyaml %s, libpng %s, zlib %s, %s", yaml_get_version_string(), png_get_libpng_ver(NULL),
             zlibVersion(), LUA_RELEASE);
}

int mf_results_manifest_backend(const char *run_dir, const char *kind, const char *precision, const char *version) {
    char *path = mf_xasprintf("%s/manifest.json", run_dir);
    uint8_t *data = NULL;
    size_t len = 0;
    int gz = 0, rc = mf_read_file(path, &data, &len, &gz);
    if (rc == 0) {
        /* the manifest is one JSON object written by mf_results_manifest: insert before its last '}' */
        size_t end = len;
        while (end > 0 && data[end - 1] != '}') end--;
        if (end == 0) {
            rc = mf_fail("%s: not a JSON object", path);
        } else {
            mf_buf b = {0};
            mf_buf_printf(&b, "%.*s", (int)(end - 1), (const char *)data);
            mf_buf_puts(&b, ", \"backend\": {");
            mf_json_str(&b, "kind", kind);
            mf_json_str(&b, "precision", precision);
            mf_json_str(&b, "version", version);
            mf_buf_puts(&b, "}}\n");
            rc = mf_write_file_atomic(path, b.s, b.len);
            mf_buf_free(&b);
        }
    }
    free(data);
    free(path);
    return rc;
}

int mf_results_manifest(const char *run_dir, const mf_experiment *ex, const char *argv_line) {
    mf_buf b = {0};
    char ts[40], host[256] = "", libs[256], cwd[4096] = "";
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S%z", &tm);
    gethostname(host, sizeof host - 1);
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
    struct utsname un;
    char os[600] = "";
    if (uname(&un) == 0) snprintf(os, sizeof os, "%s %s %s", un.sysname, un.release, un.machine);
    mf_library_versions(libs, sizeof libs);

    mf_buf_puts(&b, "{");
    mf_json_str(&b, "mfpipe_version", MF_VERSION);
    mf_json_str(&b, "git_revision", MF_GIT_REV);
    mf_json_bool(&b, "git_dirty", MF_GIT_DIRTY);
    mf_json_str(&b, "compiler", MF_COMPILER);
    mf_json_str(&b, "build_type", MF_BUILD_TYPE);
    mf_json_str(&b, "libraries", libs);
    mf_json_str(&b, "engine", ex->engine);
    mf_json_int(&b, "threads", ex->threads);
    mf_json_str(&b, "host", host);
    mf_json_str(&b, "os", os);
    mf_json_str(&b, "experiment", ex->path);
    mf_json_str(&b, "name", ex->name);
    mf_json_int(&b, "seed", ex->seed);
    mf_json_str(&b, "command_line", argv_line ? argv_line : "");
    mf_json_str(&b, "cwd", cwd);
    mf_json_str(&b, "started", ts);
    mf_buf_puts(&b, ",\"stages\":[");
    for (int i = 0; i < ex->n_stages; i++) {
        mf_buf_puts(&b, i ? ",{" : "{");
        mf_json_str(&b, "name", ex->stages[i].instance);
        mf_json_str(&b, "kind", ex->stages[i].kind);
        mf_json_str(&b, "plugin", ex->stages[i].plugin.path);
        mf_buf_puts(&b, "}");
    }
    mf_buf_puts(&b, "],\"overrides\":[");
    for (int i = 0; i < ex->n_overrides; i++) {
        if (i) mf_buf_puts(&b, ",");
        mf_json_escape(&b, ex->overrides[i]);
    }
    mf_buf_puts(&b, "]\n}\n");
    char *path = mf_xasprintf("%s/manifest.json", run_dir);
    int rc = mf_write_file_atomic(path, b.s, b.len);
    free(path);
    mf_buf_free(&b);
    return rc;
}
