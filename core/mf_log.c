/* mf_log.c - log lines to stderr and the run's log.txt; tqdm-like progress on a terminal, throttled
 * plain lines elsewhere. */
#include "mf_log.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static FILE *g_file;
static const mf_log_level g_level = MF_LOG_INFO; /* info and above; -q raises the terminal threshold */
static int g_quiet;
static int g_progress_live; /* a progress line is drawn on the terminal and must be cleared first */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void stamp(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

int mf_log_open_file(const char *path) {
    pthread_mutex_lock(&g_lock);
    if (g_file) fclose(g_file);
    g_file = fopen(path, "a");
    pthread_mutex_unlock(&g_lock);
    if (!g_file) return mf_fail("%s: cannot open log file", path);
    return 0;
}

void mf_log_close_file(void) {
    pthread_mutex_lock(&g_lock);
    if (g_file) fclose(g_file);
    g_file = NULL;
    pthread_mutex_unlock(&g_lock);
}

void mf_log_set_quiet(int quiet) { g_quiet = quiet; }

static const char *level_name(mf_log_level l) {
    switch (l) {
    case MF_LOG_DEBUG: return "debug";
    case MF_LOG_INFO: return "info";
    case MF_LOG_WARN: return "warning";
    default: return "error";
    }
}

void mf_log(mf_log_level level, const char *fmt, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    if (level >= g_level && !(g_quiet && level < MF_LOG_WARN)) {
        if (g_progress_live) {
            fputs("\r\033[K", stderr);
            g_progress_live = 0;
        }
        if (level >= MF_LOG_WARN) fprintf(stderr, "mfpipe: %s: %s\n", level_name(level), msg);
        else fprintf(stderr, "%s\n", msg);
    }
    if (g_file && level >= MF_LOG_INFO) {
        char ts[32];
        stamp(ts, sizeof ts);
        fprintf(g_file, "%s [%s] %s\n", ts, level_name(level), msg);
        fflush(g_file);
    }
    pthread_mutex_unlock(&g_lock);
}

void mf_log_file_only(mf_log_level level, const char *fmt, ...) {
    char msg[4096], ts[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    if (g_file) {
        stamp(ts, sizeof ts);
        fprintf(g_file, "%s [%s] %s\n", ts, level_name(level), msg);
        fflush(g_file);
    }
    pthread_mutex_unlock(&g_lock);
}

void mf_format_duration(double s, char *buf, int cap) {
    if (!isfinite(s) || s < 0) {
        snprintf(buf, (size_t)cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, (size_t)cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, (size_t)cap, "%02ld:%02ld", t / 60, t % 60);
}

struct mf_progress {
    char label[64], unit[16];
    int64_t total, done;
    double t0, last_draw;
    double interval; /* seconds between plain lines */
    int tty;
};

mf_progress *mf_progress_begin(const char *label, int64_t total, const char *unit) {
    mf_progress *p = mf_xcalloc(1, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "it");
    p->total = total;
    p->t0 = now_s();
    p->last_draw = -1e9;
    p->tty = isatty(STDERR_FILENO) && !g_quiet;
    const char *iv = getenv("MFPIPE_PROGRESS_SECONDS");
    p->interval = iv ? atof(iv) : 10.0;
    if (p->interval < 0) p->interval = 0;
    return p;
}

static void progress_text(mf_progress *p, const char *extra, char *out, size_t cap) {
    double el = now_s() - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    char e[32], r[32];
    mf_format_duration(el, e, sizeof e);
    if (p->total > 0) {
        double rem = rate > 0 ? (double)(p->total - p->done) / rate : NAN;
        mf_format_duration(rem, r, sizeof r);
        snprintf(out, cap, "%s %lld/%lld [%s<%s, %.3g %s/s]%s%s", p->label, (long long)p->done,
                 (long long)p->total, e, r, rate, p->unit, extra ? " " : "", extra ? extra : "");
    } else {
        snprintf(out, cap, "%s %lld [%s, %.3g %s/s]%s%s", p->label, (long long)p->done, e, rate,
                 p->unit, extra ? " " : "", extra ? extra : "");
    }
}

void mf_progress_update(mf_progress *p, int64_t done, const char *extra) {
    if (!p) return;
    p->done = done;
    double t = now_s();
    double min_gap = p->tty ? 0.1 : p->interval;
    if (t - p->last_draw < min_gap && done != p->total) return;
    p->last_draw = t;
    char line[512];
    progress_text(p, extra, line, sizeof line);
    pthread_mutex_lock(&g_lock);
    if (p->tty) {
        fprintf(stderr, "\r\033[K%s", line);
        g_progress_live = 1;
    } else if (!g_quiet) {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}

void mf_progress_end(mf_progress *p) {
    if (!p) return;
    char line[512];
    progress_text(p, NULL, line, sizeof line);
    pthread_mutex_lock(&g_lock);
    if (p->tty && g_progress_live) fputs("\r\033[K", stderr);
    g_progress_live = 0;
    pthread_mutex_unlock(&g_lock);
    mf_log(MF_LOG_INFO, "%s (done)", line);
    free(p);
}
