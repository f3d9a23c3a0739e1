/* mf_cuda.cu - the CUDA backend's runtime: the module entry and open(), the context (stream, memory pool,
 * cuBLAS and cuDNN handles), tracked device memory, host<->device copies through pinned staging, the
 * scratch slots and staging ring, the sticky error, graphs, and the mf_backend_i table. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <unordered_map>
#include <vector>

#define MFCU_LIBS 1 /* the cuBLAS / cuDNN part of cuda_internal.h */
#include "cuda_internal.h"
#include "mf_error.h"
#include "mf_log.h"

#include "cuda_kernels.h" /* the other kernels of the table (cuda_elem/norm/reduce/rng.cu) */

/* Sizes of the fixed areas made at open (all counted in peak_bytes). */
#define MFCU_STAGE_RING (8u << 20)     /* device staging ring (mfcu_stage) */
#define MFCU_HOST_RING (8u << 20)      /* pinned host ring that every write() goes through */
#define MFCU_HOST_SEGS 8               /* the host ring's segments, each guarded by an event */
#define MFCU_BLAS_WS (32u << 20)       /* cuBLAS workspace (32 MiB: NVIDIA's recommendation for Hopper) */
#define MFCU_ALIGN 256
#define MFCU_PUT_BYTES 4000            /* host data per snapshot kernel while recording (4 KiB params) */
#define MFCU_CAPTURE_WRITE_MAX (256u << 10) /* the largest write() / mfcu_stage while recording */

namespace {

struct host_block {
    char *p;
    size_t bytes;
};

struct mfcu_graph;

struct mfcu_ctx {
    int device = 0;
    cudaDeviceProp prop{};
    cudaStream_t stream = nullptr;
    cudaMemPool_t pool = nullptr;
    cublasHandle_t blas = nullptr;
    cudnnHandle_t dnn = nullptr;
    void *blas_ws = nullptr;
    void *scratch[MFCU_SCRATCH_SLOTS] = {};
    size_t scratch_bytes[MFCU_SCRATCH_SLOTS] = {};
    char *ring = nullptr; /* device staging ring */
    size_t ring_bytes = 0, ring_off = 0;
    char *hring = nullptr; /* pinned host ring */
    size_t hring_off = 0;
    cudaEvent_t hseg_ev[MFCU_HOST_SEGS] = {};
    int hseg_busy[MFCU_HOST_SEGS] = {};
    int hseg_cur = -1; /* the segment the host ring's fill is in (waited for in this lap); -1 at a lap's start */
    std::unordered_map<void *, size_t> live; /* device allocations -> bytes */
    size_t cur_bytes = 0, peak_bytes = 0;
    std::vector<host_block> hosts; /* host_alloc blocks (pinned) */
    int capturing = 0;
    char cap_err[256] = {};      /* why the recording in progress cannot become a graph ("" if it can) */
    std::vector<mfcu_graph *> graphs; /* graphs made and not freed (destroy frees them too): they hold
                                         scratch and ring pointers */
    std::vector<void *> retired; /* scratch / rings replaced while graphs lived: freed with the last one */
    std::vector<void *> deferred, hdeferred; /* device / pinned frees asked for while recording: done at
                                                graph_end (the recording is dropped then) */
    int failed = 0;
    char err[768] = {};
    char version[384] = {};
    void *dense = nullptr;
};

struct mfcu_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

mfcu_ctx *ctx(mf_backend *be) { return (mfcu_ctx *)be->ctx; }

size_t round_up(size_t b, size_t a) { return (b + a - 1) / a * a; }

} /* namespace */

/* ---- errors ------------------------------------------------------------------------------------ */

static void capture_refuse(mf_backend *be, const char *fmt, ...) MF_PRINTF(2, 3);

void mfcu_record_error(mf_backend *be, const char *file, int line, const char *expr, const char *msg) {
    mfcu_ctx *c = ctx(be);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (!c->failed && c->capturing) {
        /* a call that failed because the recording was invalidated (something in it cannot be captured, or
         * it was invalidated by an earlier call) is a refusal of the graph, not a failure of the backend:
         * graph_end drops the recording and the caller issues the work again without a graph (where a real
         * failure shows up as one) */
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        const cudaError_t qe = cudaStreamIsCapturing(c->stream, &cs);
        if (qe == cudaSuccess && cs == cudaStreamCaptureStatusInvalidated) {
            capture_refuse(be, "%s:%d: %s: %s", base, line, expr, msg ? msg : "?");
            (void)cudaGetLastError();
            return;
        }
        if (qe != cudaSuccess) (void)cudaGetLastError();
    }
    if (c->failed) { /* keep the first; later ones (usually consequences) only at debug level */
        mf_debug("cuda: also: %s:%d: %s: %s", base, line, expr, msg ? msg : "?");
        return;
    }
    c->failed = 1;
    snprintf(c->err, sizeof c->err, "%s:%d: %s: %s", base, line, expr, msg ? msg : "?");
    mf_log(MF_LOG_ERROR, "cuda: %s", c->err);
}

int mfcu_failed(mf_backend *be) { return ctx(be)->failed; }

/* Record an error message of our own (not a failing library call). */
#define MFCU_FAIL(be, what, ...)                                                                        \
    do {                                                                                                \
        char m_[256];                                                                                   \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                                           \
        mfcu_record_error((be), __FILE__, __LINE__, (what), m_);                                        \
    } while (0)

/* While recording: note why the recording cannot become a graph (graph_end reports it with mf_fail and
 * drops the recording; the backend itself stays usable). */
static void capture_refuse(mf_backend *be, const char *fmt, ...) {
    mfcu_ctx *c = ctx(be);
    if (c->cap_err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->cap_err, sizeof c->cap_err, fmt, ap);
    va_end(ap);
    mf_debug("cuda: graph recording refused: %s", c->cap_err);
}

/* Make the backend's device current on the calling thread (cheap when it is). */
static int use_device(mf_backend *be) {
    int cur = -1;
    if (MFCU_CHECK(be, cudaGetDevice(&cur))) return 1;
    if (cur != ctx(be)->device && MFCU_CHECK(be, cudaSetDevice(ctx(be)->device))) return 1;
    return 0;
}

int mfcu_enter(mf_backend *be) { return ctx(be)->failed || use_device(be); }

static const char *cu_error(mf_backend *be) { return ctx(be)->failed ? ctx(be)->err : NULL; }

/* ---- accessors ----------------------------------------------------------------------------------- */

cudaStream_t mfcu_stream(mf_backend *be) { return ctx(be)->stream; }
cublasHandle_t mfcu_cublas(mf_backend *be) { return ctx(be)->blas; }
cudnnHandle_t mfcu_cudnn(mf_backend *be) { return ctx(be)->dnn; }
int mfcu_capturing(mf_backend *be) { return ctx(be)->capturing; }
int mfcu_precision(mf_backend *be) { return be->precision; }
void **mfcu_dense_slot(mf_backend *be) { return &ctx(be)->dense; }

int mfcu_sync(mf_backend *be) {
    if (ctx(be)->capturing) {
        capture_refuse(be, "a host synchronisation while recording");
        return 1;
    }
    return MFCU_CHECK(be, cudaStreamSynchronize(ctx(be)->stream));
}

/* ---- device memory ------------------------------------------------------------------------------
 * Stream-ordered allocations from the backend's own pool (memory freed to it stays cached for reuse:
 * release threshold unlimited), so a free never synchronizes the device and a buffer freed while work
 * that uses it is queued is reused only by work queued after it. */

/* Allocate `bytes` (rounded to 256) and count them; NULL on failure. `quiet`: an out-of-memory result is
 * the caller's to report (alloc() returns NULL to its caller, which reports it). */
static void *dev_alloc(mf_backend *be, size_t bytes, int quiet) {
    mfcu_ctx *c = ctx(be);
    if (c->capturing) {
        capture_refuse(be, "a device allocation of %zu bytes while recording", bytes);
        return NULL;
    }
    const size_t sz = round_up(bytes ? bytes : 1, MFCU_ALIGN);
    void *p = NULL;
    cudaError_t e = cudaMallocFromPoolAsync(&p, sz, c->pool, c->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear it, so the next launch check does not report it */
        if (e != cudaErrorMemoryAllocation || !quiet)
            mfcu_check_(be, e, __FILE__, __LINE__, "cudaMallocFromPoolAsync");
        else
            mf_warn("cuda: out of device memory allocating %zu bytes (%zu in use)", sz, c->cur_bytes);
        return NULL;
    }
    if ((uintptr_t)p % 64 != 0) { /* the interface promises 64-byte alignment; pools give more */
        MFCU_FAIL(be, "alloc", "cudaMallocFromPoolAsync returned a pointer not 64-byte aligned");
        (void)cudaFreeAsync(p, c->stream);
        return NULL;
    }
    c->live[p] = sz;
    c->cur_bytes += sz;
    if (c->cur_bytes > c->peak_bytes) c->peak_bytes = c->cur_bytes;
    return p;
}

static void dev_free(mf_backend *be, void *p) {
    mfcu_ctx *c = ctx(be);
    if (!p) return;
    auto it = c->live.find(p);
    if (it == c->live.end()) {
        MFCU_FAIL(be, "free", "free of %p, which this backend did not allocate", p);
        return;
    }
    if (c->capturing) { /* freed at graph_end, after the recording (which is dropped) */
        capture_refuse(be, "a device free while recording");
        c->deferred.push_back(p);
        return;
    }
    c->cur_bytes -= it->second;
    c->live.erase(it);
    MFCU_CHECK(be, cudaFreeAsync(p, c->stream));
}

/* alloc and free work after a failure too (it may not be sticky; the caller checks error()) */
static void *cu_alloc(mf_backend *be, size_t bytes) { return use_device(be) ? NULL : dev_alloc(be, bytes, 1); }

static void cu_free(mf_backend *be, void *ptr) {
    if (ptr && !use_device(be)) dev_free(be, ptr);
}

static size_t cu_peak_bytes(mf_backend *be) { return ctx(be)->peak_bytes; }

/* A scratch buffer or ring being replaced goes back to the pool stream-ordered (work queued before still
 * uses it safely), unless a graph exists: graphs replay with the old pointer, so it lives until the last
 * graph is freed. */
static void retire(mf_backend *be, void *p) {
    mfcu_ctx *c = ctx(be);
    if (!p) return;
    if (!c->graphs.empty()) c->retired.push_back(p);
    else dev_free(be, p);
}

void *mfcu_scratch_at(mf_backend *be, int slot, size_t bytes) {
    mfcu_ctx *c = ctx(be);
    if (slot < 0 || slot >= MFCU_SCRATCH_SLOTS) {
        MFCU_FAIL(be, "mfcu_scratch_at", "no scratch slot %d", slot);
        return NULL;
    }
    if (c->scratch[slot] && bytes <= c->scratch_bytes[slot]) return c->scratch[slot];
    if (c->capturing) {
        capture_refuse(be, "scratch slot %d must grow to %zu bytes while recording (run the same work once "
                       "before recording it)", slot, bytes);
        return NULL;
    }
    retire(be, c->scratch[slot]);
    c->scratch[slot] = NULL;
    c->scratch_bytes[slot] = 0;
    const size_t want = round_up(bytes + bytes / 4, (size_t)1 << 20); /* geometric growth, whole MiB */
    void *p = dev_alloc(be, want, 0);
    if (!p) {
        if (!c->failed) MFCU_FAIL(be, "mfcu_scratch", "out of device memory for %zu bytes of scratch", want);
        return NULL;
    }
    c->scratch[slot] = p;
    c->scratch_bytes[slot] = want;
    return p;
}

void *mfcu_scratch(mf_backend *be, size_t bytes) { return mfcu_scratch_at(be, MFCU_SLOT_KERNELS, bytes); }

/* ---- host -> device copies ------------------------------------------------------------------------ */

/* While recording, a write() keeps the host data as it is at the call (mf_backend.h): the bytes travel
 * as the parameters of small copy kernels, so the graph owns its snapshot (nothing to keep alive, and
 * cudaGraphExecUpdate replaces it with the next recording's). */
struct put_args {
    unsigned n;
    unsigned char d[MFCU_PUT_BYTES];
};
__global__ void k_put(unsigned char *dst, put_args a) {
    for (unsigned i = threadIdx.x; i < a.n; i += blockDim.x) dst[i] = a.d[i];
}

static int h2d_recorded(mf_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes > MFCU_CAPTURE_WRITE_MAX) {
        capture_refuse(be, "a %zu-byte write while recording (at most %u)", bytes, MFCU_CAPTURE_WRITE_MAX);
        return 1;
    }
    put_args a;
    for (size_t off = 0; off < bytes; off += MFCU_PUT_BYTES) {
        a.n = (unsigned)(bytes - off < MFCU_PUT_BYTES ? bytes - off : MFCU_PUT_BYTES);
        memcpy(a.d, (const char *)src + off, a.n);
        k_put<<<1, 256, 0, ctx(be)->stream>>>((unsigned char *)dst + off, a);
        if (MFCU_LAUNCHED(be, "k_put")) return 1;
    }
    return 0;
}

/* Copy n <= MFCU_HOST_RING/2 bytes of host memory to dst through the pinned host ring: the host buffer is
 * free again on return, and the DMA overlaps whatever the host does next. The ring is filled in laps; a
 * segment is waited for (the event recorded behind the last copy out of it in the previous lap) only
 * when the fill enters it, not for every copy that lands in the segment being filled: those follow
 * earlier copies of this lap that read other bytes of it (waiting there would make every small write
 * wait for all the work queued before it). */
static int hring_put(mf_backend *be, void *dst, const void *src, size_t n) {
    mfcu_ctx *c = ctx(be);
    const size_t seg = MFCU_HOST_RING / MFCU_HOST_SEGS;
    if (c->hring_off + n > MFCU_HOST_RING) {
        c->hring_off = 0;
        c->hseg_cur = -1; /* a new lap: segment 0 holds the previous lap's bytes */
    }
    const size_t a = c->hring_off, b = a + n;
    const int s0 = (int)(a / seg), s1 = (int)((b - 1) / seg);
    for (int s = s0; s <= s1; s++) {
        if (s == c->hseg_cur || !c->hseg_busy[s]) continue; /* entered (and waited for) in this lap */
        if (MFCU_CHECK(be, cudaEventSynchronize(c->hseg_ev[s]))) return 1;
        c->hseg_busy[s] = 0;
    }
    memcpy(c->hring + a, src, n);
    if (MFCU_CHECK(be, cudaMemcpyAsync(dst, c->hring + a, n, cudaMemcpyHostToDevice, c->stream))) return 1;
    for (int s = s0; s <= s1; s++) {
        if (MFCU_CHECK(be, cudaEventRecord(c->hseg_ev[s], c->stream))) return 1;
        c->hseg_busy[s] = 1;
    }
    c->hseg_cur = s1;
    c->hring_off = round_up(b, MFCU_ALIGN);
    return 0;
}

/* host -> device. Outside a graph: through the host ring in chunks. While recording: a snapshot. */
static int h2d(mf_backend *be, void *dst, const void *src, size_t bytes) {
    if (ctx(be)->capturing) return h2d_recorded(be, dst, src, bytes);
    const size_t chunk = MFCU_HOST_RING / 2;
    for (size_t off = 0; off < bytes; off += chunk) {
        const size_t n = bytes - off < chunk ? bytes - off : chunk;
        if (hring_put(be, (char *)dst + off, (const char *)src + off, n)) return 1;
    }
    return 0;
}

static void cu_write(mf_backend *be, void *dst, const void *host_src, size_t bytes) {
    if (!bytes || mfcu_enter(be)) return;
    h2d(be, dst, host_src, bytes);
}

const void *mfcu_stage(mf_backend *be, const void *host, size_t bytes) {
    mfcu_ctx *c = ctx(be);
    if (mfcu_enter(be)) return NULL;
    const size_t need = round_up(bytes ? bytes : 1, MFCU_ALIGN);
    if (need > c->ring_bytes) { /* a dedicated grow: the old ring goes back stream-ordered */
        if (c->capturing) {
            capture_refuse(be, "the staging ring must grow to %zu bytes while recording", need);
            return NULL;
        }
        const size_t want = round_up(need > 2 * c->ring_bytes ? need : 2 * c->ring_bytes, (size_t)1 << 20);
        retire(be, c->ring);
        c->ring = (char *)dev_alloc(be, want, 0);
        c->ring_bytes = c->ring ? want : 0;
        c->ring_off = 0;
        if (!c->ring) {
            if (!c->failed) MFCU_FAIL(be, "mfcu_stage", "out of device memory for a %zu-byte staging ring", want);
            return NULL;
        }
    }
    /* wrapping is safe: everything that read the old contents was queued on the same stream before */
    if (c->ring_off + need > c->ring_bytes) c->ring_off = 0;
    char *dst = c->ring + c->ring_off;
    c->ring_off += need;
    if (bytes && h2d(be, dst, host, bytes)) return NULL;
    return dst;
}

/* ---- the other copies, synchronisation --------------------------------------------------------------- */

static void cu_read(mf_backend *be, void *host_dst, const void *src, size_t bytes) {
    mfcu_ctx *c = ctx(be);
    if (!bytes) return;
    if (c->capturing) {
        capture_refuse(be, "a read (host synchronisation) while recording");
        memset(host_dst, 0, bytes);
        return;
    }
    /* a read after a failure still tries (the failure may not be sticky); zeros where it cannot */
    if (use_device(be) || MFCU_CHECK(be, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream)) ||
        MFCU_CHECK(be, cudaStreamSynchronize(c->stream)))
        memset(host_dst, 0, bytes);
}

static void cu_copy(mf_backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src || mfcu_enter(be)) return;
    mfcu_ctx *c = ctx(be);
    const char *d = (const char *)dst, *s = (const char *)src;
    if (d < s + bytes && s < d + bytes) { /* overlapping (memmove semantics): through scratch */
        void *tmp = mfcu_scratch(be, bytes);
        if (!tmp || MFCU_CHECK(be, cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, c->stream))) return;
        src = tmp;
    }
    MFCU_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

static void cu_synchronize(mf_backend *be) {
    if (mfcu_enter(be)) return;
    mfcu_sync(be);
}

/* ---- pinned host memory --------------------------------------------------------------------------- */

static void *cu_host_alloc(mf_backend *be, size_t bytes) {
    mfcu_ctx *c = ctx(be);
    if (mfcu_enter(be)) return NULL;
    if (c->capturing) {
        capture_refuse(be, "a pinned host allocation while recording");
        return NULL;
    }
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        mf_warn("cuda: cannot allocate %zu bytes of pinned host memory: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    c->hosts.push_back(host_block{(char *)p, bytes ? bytes : 1});
    return p;
}

static void cu_host_free(mf_backend *be, void *ptr) {
    mfcu_ctx *c = ctx(be);
    if (!ptr) return;
    for (size_t i = 0; i < c->hosts.size(); i++) {
        if (c->hosts[i].p != (char *)ptr) continue;
        if (c->capturing) { /* freed at graph_end, after the recording (which is dropped) */
            capture_refuse(be, "a pinned host free while recording");
            c->hdeferred.push_back(ptr);
            return;
        }
        c->hosts.erase(c->hosts.begin() + (long)i);
        MFCU_CHECK(be, cudaFreeHost(ptr)); /* waits for the device: copies out of it may be queued */
        return;
    }
    MFCU_FAIL(be, "host_free", "host_free of %p, which host_alloc did not return", ptr);
}

/* ---- graphs ---------------------------------------------------------------------------------------
 * Graph failures are not backend failures: graph_begin / graph_end report them with mf_fail (the caller
 * runs the step without a graph, or stops); a CUDA error on the way is recorded as usual, except the ones
 * that only say the recording was invalidated (mfcu_record_error turns those into a refusal). */

static int cu_graph_begin(mf_backend *be) {
    mfcu_ctx *c = ctx(be);
    if (mfcu_enter(be)) return mf_fail("cuda: cannot record a graph: %s", c->failed ? c->err : "no device");
    if (c->capturing) return mf_fail("cuda: graph_begin while a graph is being recorded");
    /* thread-local: only this thread's unsafe calls (a synchronous copy, cudaMalloc) invalidate it, not a
     * host thread's that has nothing to do with the backend */
    if (MFCU_CHECK(be, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal)))
        return mf_fail("cuda: cannot record a graph: %s", c->err);
    c->capturing = 1;
    c->cap_err[0] = '\0';
    return 0;
}

static void cu_graph_free(mf_backend *be, void *graph);

/* Scratch and rings replaced while graphs lived go back to the pool once no graph is left. */
static void flush_retired(mf_backend *be) {
    mfcu_ctx *c = ctx(be);
    if (c->capturing || !c->graphs.empty()) return;
    for (void *p : c->retired) dev_free(be, p);
    c->retired.clear();
}

/* Destroy a graph's executable and graph (no synchronisation: an executable still running is freed by
 * CUDA when its launch completes) and forget it. */
static void graph_destroy(mf_backend *be, mfcu_graph *gr) {
    mfcu_ctx *c = ctx(be);
    if (gr->exec) MFCU_CHECK(be, cudaGraphExecDestroy(gr->exec));
    if (gr->graph) MFCU_CHECK(be, cudaGraphDestroy(gr->graph));
    for (size_t i = 0; i < c->graphs.size(); i++)
        if (c->graphs[i] == gr) {
            c->graphs.erase(c->graphs.begin() + (long)i);
            break;
        }
    free(gr);
}

/* Instantiate g as a new graph (g is consumed); NULL with mf_fail (not a backend failure). */
static mfcu_graph *graph_new(mf_backend *be, cudaGraph_t g) {
    cudaGraphExec_t x = NULL;
    const cudaError_t e = cudaGraphInstantiate(&x, g, 0);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaGraphDestroy(g);
        mf_fail("cuda: cannot instantiate the graph: cudaGraphInstantiate: %s (%s)", cudaGetErrorString(e),
                cudaGetErrorName(e));
        return NULL;
    }
    mfcu_graph *gr = (mfcu_graph *)mf_xmalloc(sizeof *gr);
    gr->graph = g;
    gr->exec = x;
    ctx(be)->graphs.push_back(gr);
    return gr;
}

static void *cu_graph_end(mf_backend *be, void *prev) {
    mfcu_ctx *c = ctx(be);
    if (!c->capturing) {
        cu_graph_free(be, prev);
        mf_fail("cuda: graph_end without graph_begin");
        return NULL;
    }
    (void)use_device(be);
    /* always end the capture, also an invalidated one: that takes the stream out of capture mode */
    cudaGraph_t g = NULL;
    const cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    c->capturing = 0;
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        capture_refuse(be, "cudaStreamEndCapture: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    /* the frees asked for while recording (each refused the recording) */
    for (void *p : c->deferred) dev_free(be, p);
    c->deferred.clear();
    for (void *p : c->hdeferred) cu_host_free(be, p);
    c->hdeferred.clear();
    if (e != cudaSuccess || c->failed || c->cap_err[0] || !g) {
        if (g) (void)cudaGraphDestroy(g);
        cu_graph_free(be, prev);
        flush_retired(be);
        mf_fail("cuda: the step cannot be recorded as a graph: %s",
                c->cap_err[0] ? c->cap_err : c->failed ? c->err : "no graph");
        return NULL;
    }
    if (prev) { /* same kernels in the same order: update the executable in place (launches already queued
                   keep the old parameters) */
        mfcu_graph *pg = (mfcu_graph *)prev;
        cudaGraphExecUpdateResultInfo info;
        memset(&info, 0, sizeof info);
        const cudaError_t ue = cudaGraphExecUpdate(pg->exec, g, &info);
        if (ue == cudaSuccess) {
            MFCU_CHECK(be, cudaGraphDestroy(pg->graph));
            pg->graph = g;
            return pg;
        }
        (void)cudaGetLastError(); /* a different shape of work: not an error, a new graph */
        mf_debug("cuda: graph update refused (%s, result %d): instantiating anew", cudaGetErrorName(ue),
                 (int)info.result);
        cu_graph_free(be, prev);
    }
    return graph_new(be, g);
}

static int cu_graph_launch(mf_backend *be, void *graph) {
    if (!graph || mfcu_enter(be)) return -1;
    if (ctx(be)->capturing) {
        capture_refuse(be, "graph_launch while recording");
        return -1;
    }
    return MFCU_CHECK(be, cudaGraphLaunch(((mfcu_graph *)graph)->exec, ctx(be)->stream)) ? -1 : 0;
}

static void cu_graph_free(mf_backend *be, void *graph) {
    if (!graph) return;
    (void)use_device(be);
    graph_destroy(be, (mfcu_graph *)graph);
    flush_retired(be); /* stream-ordered: after the graph's last launch */
}

/* ---- lifetime ----------------------------------------------------------------------------------------- */

static const char *cu_version(mf_backend *be) { return ctx(be)->version; }

/* Frees whatever open() got to: also the cleanup of a failed open. */
static void teardown(mf_backend *be) {
    mfcu_ctx *c = ctx(be);
    (void)cudaSetDevice(c->device);
    if (c->capturing) { /* abandon a recording */
        cudaGraph_t g = NULL;
        if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g) (void)cudaGraphDestroy(g);
        c->capturing = 0;
    }
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    while (!c->graphs.empty()) graph_destroy(be, c->graphs.back()); /* graphs the caller did not free */
    mfcu_dense_free(be);
    if (c->blas) (void)cublasDestroy(c->blas);
    if (c->dnn) (void)cudnnDestroy(c->dnn);
    for (auto &kv : c->live) (void)cudaFreeAsync(kv.first, c->stream); /* tensors, scratch, rings */
    c->live.clear();
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    if (c->pool) (void)cudaMemPoolDestroy(c->pool);
    for (const host_block &h : c->hosts) (void)cudaFreeHost(h.p);
    if (c->hring) (void)cudaFreeHost(c->hring);
    for (int s = 0; s < MFCU_HOST_SEGS; s++)
        if (c->hseg_ev[s]) (void)cudaEventDestroy(c->hseg_ev[s]);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    delete c;
    free(be);
}

static void cu_destroy(mf_backend *be) {
    if (be) teardown(be);
}

/* ---- open ------------------------------------------------------------------------------------------- */

__global__ void k_probe(int *p) {
    if (p) *p = 1;
}

static void say(char *why, size_t cap, const char *fmt, ...) MF_PRINTF(3, 4);
static void say(char *why, size_t cap, const char *fmt, ...) {
    if (!why || !cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

static const mf_backend_i *cu_table(void);

/* Which device, and can this build run on it. 0, or -1 with the reason in why. */
static int pick_device(const mf_backend_opts *opts, cudaDeviceProp *prop, char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    (void)cudaGetLastError();
    int rt = 0;
    (void)cudaRuntimeGetVersion(&rt);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0)) {
        say(why, cap, "no CUDA device");
        return -1;
    }
    if (e == cudaErrorInsufficientDriver) {
        /* the runtime says this both when the driver is older than it and when there is no driver at all
         * (libcuda.so.1 missing, as on a machine with the toolkit only): tell the two apart */
        void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (!drv) drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (!drv) {
            say(why, cap, "no NVIDIA driver (libcuda.so.1 not found)");
            return -1;
        }
        dlclose(drv);
        int dv = 0;
        if (cudaDriverGetVersion(&dv) == cudaSuccess && dv > 0)
            say(why, cap, "CUDA driver too old for this runtime (the driver supports CUDA %d.%d, the runtime is CUDA "
                "%d.%d): update the NVIDIA driver", dv / 1000, dv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        else
            say(why, cap, "CUDA driver too old for this runtime (CUDA %d.%d): update the NVIDIA driver", rt / 1000,
                rt % 1000 / 10);
        (void)cudaGetLastError();
        return -1;
    }
    if (e != cudaSuccess) {
        say(why, cap, "CUDA is not usable: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        return -1;
    }
    const int dev = opts->device;
    if (dev < 0 || dev >= n) {
        say(why, cap, "no CUDA device %d (%d device%s)", dev, n, n == 1 ? "" : "s");
        return -1;
    }
    if ((e = cudaSetDevice(dev)) != cudaSuccess || (e = cudaGetDeviceProperties(prop, dev)) != cudaSuccess) {
        (void)cudaGetLastError();
        say(why, cap, "CUDA device %d: %s", dev, cudaGetErrorString(e));
        return -1;
    }
    cudaFuncAttributes fa;
    if ((e = cudaFuncGetAttributes(&fa, k_probe)) != cudaSuccess) {
        (void)cudaGetLastError();
        say(why, cap, "%s (sm_%d%d): this build of the CUDA backend has no code for it (built for %s): %s",
            prop->name, prop->major, prop->minor, MFCU_ARCHS, cudaGetErrorString(e));
        return -1;
    }
    return dev;
}

/* The precision that runs: TF32 and BF16 tensor-core products need sm_80 or newer. */
static int pick_precision(int asked, const cudaDeviceProp *prop) {
    if (asked != MF_PREC_FP32 && asked != MF_PREC_TF32 && asked != MF_PREC_BF16) {
        mf_warn("cuda: unknown precision %d: using fp32", asked);
        return MF_PREC_FP32;
    }
    if (asked != MF_PREC_FP32 && prop->major < 8) {
        mf_warn("cuda: %s needs sm_80 or newer (%s is sm_%d%d): using fp32", mf_precision_name(asked),
                prop->name, prop->major, prop->minor);
        return MF_PREC_FP32;
    }
    return asked;
}

static void make_version(mf_backend *be) {
    mfcu_ctx *c = ctx(be);
    int drv = 0, rt = 0, blas = 0;
    (void)cudaDriverGetVersion(&drv);
    (void)cudaRuntimeGetVersion(&rt);
    (void)cublasGetVersion(c->blas, &blas);
    const size_t dnn = cudnnGetVersion();
    snprintf(c->version, sizeof c->version,
             "cuda: %s (sm_%d%d, %.0f GiB, %d SMs), driver %d.%d, runtime %d.%d, cuDNN %zu.%zu.%zu, cuBLAS "
             "%d.%d.%d, %s",
             c->prop.name, c->prop.major, c->prop.minor, (double)c->prop.totalGlobalMem / (1u << 30),
             c->prop.multiProcessorCount, drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10, dnn / 10000,
             dnn % 10000 / 100, dnn % 100, blas / 10000, blas % 10000 / 100, blas % 100,
             mf_precision_name(be->precision));
}

/* The stream, pool, handles and fixed areas; 0, or -1 with the reason in why. */
static int setup(mf_backend *be, char *why, size_t cap) {
    mfcu_ctx *c = ctx(be);
    cudaError_t e;
#define SETUP_CUDA(expr)                                                                                \
    if ((e = (expr)) != cudaSuccess) {                                                                  \
        (void)cudaGetLastError();                                                                       \
        say(why, cap, "%s: %s", #expr, cudaGetErrorString(e));                                          \
        return -1;                                                                                      \
    }
    SETUP_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    cudaMemPoolProps pp;
    memset(&pp, 0, sizeof pp);
    pp.allocType = cudaMemAllocationTypePinned;
    pp.handleTypes = cudaMemHandleTypeNone;
    pp.location.type = cudaMemLocationTypeDevice;
    pp.location.id = c->device;
    SETUP_CUDA(cudaMemPoolCreate(&c->pool, &pp));
    uint64_t keep = UINT64_MAX; /* freed memory stays in the pool (no release at synchronisation) */
    SETUP_CUDA(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep));
    SETUP_CUDA(cudaMallocHost((void **)&c->hring, MFCU_HOST_RING));
    for (int s = 0; s < MFCU_HOST_SEGS; s++) SETUP_CUDA(cudaEventCreateWithFlags(&c->hseg_ev[s], cudaEventDisableTiming));
#undef SETUP_CUDA
    cublasStatus_t bs = cublasCreate(&c->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        say(why, cap, "cublasCreate: %s", cublasGetStatusName(bs));
        return -1;
    }
    cudnnStatus_t ds = cudnnCreate(&c->dnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        c->dnn = NULL;
        say(why, cap, "cudnnCreate: %s (is libcudnn 9 installed and matching this CUDA?)", cudnnGetErrorString(ds));
        return -1;
    }
    c->blas_ws = dev_alloc(be, MFCU_BLAS_WS, 0);
    c->ring = (char *)dev_alloc(be, MFCU_STAGE_RING, 0);
    c->ring_bytes = MFCU_STAGE_RING;
    const cublasMath_t math = be->precision == MF_PREC_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
    if (!c->blas_ws || !c->ring || MFCU_CUBLAS(be, cublasSetStream(c->blas, c->stream)) ||
        MFCU_CUBLAS(be, cublasSetWorkspace(c->blas, c->blas_ws, MFCU_BLAS_WS)) ||
        MFCU_CUBLAS(be, cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST)) ||
        MFCU_CUBLAS(be, cublasSetMathMode(c->blas, math)) || MFCU_CUDNN(be, cudnnSetStream(c->dnn, c->stream)) ||
        MFCU_CHECK(be, cudaStreamSynchronize(c->stream))) {
        say(why, cap, "%s", c->failed ? c->err : "out of device memory");
        return -1;
    }
    return 0;
}

static mf_backend *cu_open(const mf_backend_opts *opts, char *why, size_t why_cap) {
    if (why && why_cap) why[0] = '\0';
    mf_backend_opts dflt;
    memset(&dflt, 0, sizeof dflt);
    if (!opts) opts = &dflt;
    cudaDeviceProp prop;
    const int dev = pick_device(opts, &prop, why, why_cap);
    if (dev < 0) return NULL;
    mf_backend *be = (mf_backend *)mf_xcalloc(1, sizeof *be);
    mfcu_ctx *c = new mfcu_ctx();
    c->device = dev;
    c->prop = prop;
    be->i = cu_table();
    be->ctx = c;
    be->cblock = -8;
    be->host_memory = 0;
    be->kind = "cuda";
    be->threads = opts->threads > 0 ? opts->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (be->threads < 1) be->threads = 1;
    be->precision = pick_precision(opts->precision, &prop);
    if (setup(be, why, why_cap) != 0) {
        teardown(be);
        return NULL;
    }
    make_version(be);
    mf_debug("%s", c->version);
    return be;
}

/* ---- the table ------------------------------------------------------------------------------------- */

/* Every entry of mf_backend_i is set below; this catches one appended to the interface. */
static_assert(sizeof(mf_backend_i) == offsetof(mf_backend_i, params_epoch) + sizeof(void (*)(void)),
              "mf_backend_i has an entry after params_epoch: set it in cu_table");

static const mf_backend_i *cu_table(void) {
    static mf_backend_i t;
    static int made = 0;
    if (made) return &t;
    memset(&t, 0, sizeof t);
    t.name = "cuda";
    t.alloc = cu_alloc;
    t.free = cu_free;
    t.write = cu_write;
    t.read = cu_read;
    t.copy = cu_copy;
    t.fill = mfcu_fill;
    t.synchronize = cu_synchronize;
    t.peak_bytes = cu_peak_bytes;
    t.gemm = mfcu_gemm;
    t.conv2d = mfcu_conv2d;
    t.conv2d_bwd_data = mfcu_conv2d_bwd_data;
    t.conv2d_bwd_filter = mfcu_conv2d_bwd_filter;
    t.groupnorm = mfcu_groupnorm;
    t.groupnorm_bwd = mfcu_groupnorm_bwd;
    t.groupnorm_jvp = mfcu_groupnorm_jvp;
    t.gn_silu = mfcu_gn_silu;
    t.gn_silu_bwd = mfcu_gn_silu_bwd;
    t.gn_silu_jvp = mfcu_gn_silu_jvp;
    t.silu = mfcu_silu;
    t.silu_bwd = mfcu_silu_bwd;
    t.silu_jvp = mfcu_silu_jvp;
    t.axpby = mfcu_axpby;
    t.add2 = mfcu_add2;
    t.add_channel = mfcu_add_channel;
    t.sum_channel = mfcu_sum_channel;
    t.sum_rows = mfcu_sum_rows;
    t.add_bias_rows = mfcu_add_bias_rows;
    t.rows_axpby = mfcu_rows_axpby;
    t.row_sq_err = mfcu_row_sq_err;
    t.pow_weight = mfcu_pow_weight;
    t.copy_channels = mfcu_copy_channels;
    t.upsample2x = mfcu_upsample2x;
    t.upsample2x_bwd = mfcu_upsample2x_bwd;
    t.embed = mfcu_embed;
    t.embed_bwd = mfcu_embed_bwd;
    t.fourier = mfcu_fourier;
    t.fourier_jvp = mfcu_fourier_jvp;
    t.sq_err_rows = mfcu_sq_err_rows;
    t.sumsq = mfcu_sumsq;
    t.adamw = mfcu_adamw;
    t.ema = mfcu_ema;
    t.adamw_step = mfcu_adamw_step;
    t.randn = mfcu_randn;
    t.destroy = cu_destroy;
    t.version = cu_version;
    t.error = cu_error;
    t.host_alloc = cu_host_alloc;
    t.host_free = cu_host_free;
    t.graph_begin = cu_graph_begin;
    t.graph_end = cu_graph_end;
    t.graph_launch = cu_graph_launch;
    t.graph_free = cu_graph_free;
    /* the reduced-precision entries of the CPU's bf16 engine: none here (the graph then makes the two
     * gradient calls and stores every activation in float32; bf16 converts per call, see docs/cuda.md).
     * mf_conv_shape.fp32 (the JVP's tangents) is not read: a bf16 run's tangent convolutions are bf16. */
    t.conv2d_bwd = NULL;
    t.conv_bf16_x = NULL;
    t.gn_silu_bf16 = NULL;
    t.params_epoch = NULL;
    made = 1;
    return &t;
}

extern "C" __attribute__((visibility("default"))) const mf_backend_module *mfpipe_backend_entry(void) {
    static const mf_backend_module m = {MF_BACKEND_ABI_VERSION, (uint32_t)sizeof(mf_backend_i), "cuda", cu_open};
    return &m;
}
