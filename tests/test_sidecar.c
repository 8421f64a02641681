/* test_sidecar: the sidecar GGUF (core/sidecar.h): what `hearth profile` and
 * `hearth plan` write and the runtime reads.
 *
 *   test_sidecar CASE DIR [SEED]
 *
 * CASE is one of
 *   roundtrip  profile-only and planned sidecars of awkward shapes (3 x 64 x
 *              200 and 2 x 33 x 203: a partial last byte of fired bits)
 *              with random contents: save, load with and without samples,
 *              every field equal bit for bit;
 *   errors     each invalid file is refused with its own message (checked by
 *              substring, and the path named): wrong architecture or version,
 *              missing or misshapen tensors and keys, values out of range,
 *              orders that are not permutations, hot counts, non-finite
 *              predictors; sidecar_check_model and sidecar_check_planned;
 *   truncate   every truncation of a small planned file fails cleanly;
 *   save       unwritable paths fail with a message and leave no file;
 *              saving over a file replaces it atomically (rename);
 *   hostile    a tiny file whose header claims a huge shape, or a huge
 *              predictor rank, must be refused before anything of that size
 *              is allocated (checked in a child under RLIMIT_AS; skipped,
 *              exit 77, under AddressSanitizer, which reserves terabytes).
 * DIR receives the test files (created; one subfolder per case so that ctest
 * may run cases in parallel). Random contents come from SEED (printed). */
#include "sidecar.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "types.h"

static float rnd_sym(void) { return 2.0f * rnd_unitf() - 1.0f; } /* [-1, 1) */

static char dir[512];

static void path_in(char *out, size_t outlen, const char *name) { snprintf(out, outlen, "%s/%s", dir, name); }

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int mkdir_p(const char *path) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int same_bits(const void *a, const void *b, size_t n) {
    if (n == 0) return 1;
    if (!a || !b) return 0;
    return memcmp(a, b, n) == 0;
}

/* ------------------------------------------------------------ building */

static void fill_profile(struct sidecar *sc, int64_t n_samples) {
    char err[512] = "";
    for (int l = 0; l < sc->n_layers; l++) {
        struct sidecar_layer *L = &sc->layers[l];
        L->threshold = 3.0f * rnd_unitf();
        for (int64_t i = 0; i < sc->hidden; i++) {
            L->freq[i] = rnd_unitf();
            L->scale[i] = 5.0f * rnd_unitf();
        }
        /* the ends of the valid ranges must load too */
        L->freq[0] = 0.0f;
        L->freq[sc->hidden - 1] = 1.0f;
        L->scale[1] = 0.0f;
    }
    sc->layers[0].threshold = 0.0f;
    snprintf(sc->model_sha256, sizeof sc->model_sha256, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
             rnd64(), rnd64(), rnd64(), rnd64());
    sc->model_bytes = 0x123456789abcull; /* beyond 32 bits */
    snprintf(sc->model_name, sizeof sc->model_name, "SmolLM2 135M \xe2\x9c\x93 %" PRIu64, rnd64() % 1000);
    snprintf(sc->corpus, sizeof sc->corpus, "/tmp/some where/calibration.txt");
    snprintf(sc->corpus_sha256, sizeof sc->corpus_sha256, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
             rnd64(), rnd64(), rnd64(), rnd64());
    sc->tokens = 123456789012ll;
    sc->sparsity = 0.85f;
    sc->n_ctx = 511;
    if (n_samples > 0) {
        int rc = sidecar_alloc_samples(sc, n_samples, err, sizeof err);
        CHECK(rc == 0, "sidecar_alloc_samples: %s", err);
        if (rc) return;
        for (int l = 0; l < sc->n_layers; l++) {
            struct sidecar_layer *L = &sc->layers[l];
            CHECK(L->n_samples == n_samples, "layer %d: n_samples %lld", l, (long long)L->n_samples);
            /* any 16 bits, NaN and Inf patterns included: stored, not interpreted */
            for (int64_t i = 0; i < n_samples * sc->dim; i++) L->sample_x[i] = (uint16_t)rnd64();
            for (int64_t i = 0; i < n_samples * sidecar_fired_bytes(sc); i++) L->sample_fired[i] = (uint8_t)rnd64();
        }
    }
}

/* input sparsity: thresholds >= 0 (0 included), densities in [0, 1], choices 0/1 */
static void fill_insparse(struct sidecar *sc) {
    char err[512] = "";
    int rc = sidecar_alloc_insparse(sc, err, sizeof err);
    CHECK(rc == 0, "sidecar_alloc_insparse: %s", err);
    if (rc) return;
    sc->in_target = 0.25f;
    for (int k = 0; k < sc->n_layers * SIDECAR_IN_SITES; k++) {
        sc->in_thr[k] = k % 3 ? 0.5f * rnd_unitf() : 0.0f;
        sc->in_density[k] = k == 1 ? 1.0f : rnd_unitf();
    }
    for (int k = 0; k < sc->n_layers * SIDECAR_IN_MATS; k++) sc->in_use[k] = (int32_t)(rnd64() & 1);
}

static void fill_plan(struct sidecar *sc, int64_t rank) {
    char err[512] = "";
    sc->planned = 1;
    sc->gpu_budget = (5ll << 30) + 7;
    sc->fixed_bytes = 123456789;
    sc->group = sc->hidden < 8 ? sc->hidden : 8;
    sc->min_hot = sc->hidden < 16 ? sc->hidden : 16;
    for (int l = 0; l < sc->n_layers; l++) {
        struct sidecar_layer *L = &sc->layers[l];
        L->order = malloc((size_t)sc->hidden * sizeof *L->order);
        CHECK(L->order != NULL, "out of memory");
        if (!L->order) return;
        for (int64_t i = 0; i < sc->hidden; i++) L->order[i] = (int32_t)i;
        for (int64_t i = sc->hidden - 1; i > 0; i--) { /* Fisher-Yates */
            int64_t j = (int64_t)(rnd64() % (uint64_t)(i + 1));
            int32_t t = L->order[i];
            L->order[i] = L->order[j];
            L->order[j] = t;
        }
        L->hot = l == 0 ? 0 : l == sc->n_layers - 1 ? sc->hidden : (int64_t)(rnd64() % (uint64_t)(sc->hidden + 1));
        int rc = predictor_init(&L->pred, sc->dim, rank, sc->hidden, rnd64(), err, sizeof err);
        CHECK(rc == 0, "predictor_init: %s", err);
        if (rc) return;
        L->has_pred = 1;
        L->use_pred = (int)(rnd64() & 1);
        for (int64_t i = 0; i < sc->dim * rank; i++) L->pred.w1[i] = rnd_sym();
        for (int64_t i = 0; i < rank; i++) L->pred.b1[i] = rnd_sym();
        for (int64_t i = 0; i < rank * sc->hidden; i++) L->pred.w2[i] = rnd_sym();
        for (int64_t i = 0; i < sc->hidden; i++) L->pred.b2[i] = rnd_sym();
        L->pred.cutoff = rnd_sym();
        L->recall = rnd_unitf();
        L->precision = rnd_unitf();
        L->predicted = rnd_unitf();
    }
}

/* every field of b equals a's, bit for bit; samples only when with_samples */
static void check_equal(const struct sidecar *a, const struct sidecar *b, int with_samples, const char *what) {
#define SAME_SCALAR(f) CHECK(same_bits(&a->f, &b->f, sizeof a->f), "%s: %s differs", what, #f)
    SAME_SCALAR(n_layers);
    SAME_SCALAR(dim);
    SAME_SCALAR(hidden);
    if (a->n_layers != b->n_layers || a->dim != b->dim || a->hidden != b->hidden) return;
    CHECK(strcmp(a->model_sha256, b->model_sha256) == 0, "%s: model_sha256 %s vs %s", what, a->model_sha256,
          b->model_sha256);
    SAME_SCALAR(model_bytes);
    CHECK(strcmp(a->model_name, b->model_name) == 0, "%s: model_name '%s' vs '%s'", what, a->model_name,
          b->model_name);
    CHECK(strcmp(a->corpus, b->corpus) == 0, "%s: corpus '%s' vs '%s'", what, a->corpus, b->corpus);
    CHECK(strcmp(a->corpus_sha256, b->corpus_sha256) == 0, "%s: corpus_sha256 differs", what);
    SAME_SCALAR(tokens);
    SAME_SCALAR(sparsity);
    SAME_SCALAR(n_ctx);
    SAME_SCALAR(planned);
    if (a->planned) {
        SAME_SCALAR(gpu_budget);
        SAME_SCALAR(fixed_bytes);
        SAME_SCALAR(group);
        SAME_SCALAR(min_hot);
    }
    CHECK(!a->in_thr == !b->in_thr, "%s: input sparsity %s", what, a->in_thr ? "lost" : "appeared");
    if (a->in_thr && b->in_thr) {
        SAME_SCALAR(in_target);
        const size_t ns = (size_t)a->n_layers * SIDECAR_IN_SITES, nm = (size_t)a->n_layers * SIDECAR_IN_MATS;
        CHECK(same_bits(a->in_thr, b->in_thr, ns * sizeof(float)), "%s: insparse_thr differs", what);
        CHECK(same_bits(a->in_density, b->in_density, ns * sizeof(float)), "%s: insparse_density differs", what);
        CHECK(same_bits(a->in_use, b->in_use, nm * sizeof(int32_t)), "%s: insparse_use differs", what);
    }
#undef SAME_SCALAR
    const size_t H = (size_t)a->hidden, D = (size_t)a->dim;
    for (int l = 0; l < a->n_layers; l++) {
        const struct sidecar_layer *x = &a->layers[l], *y = &b->layers[l];
        CHECK(same_bits(&x->threshold, &y->threshold, sizeof(float)), "%s: layer %d threshold %g vs %g", what, l,
              x->threshold, y->threshold);
        CHECK(same_bits(x->freq, y->freq, H * sizeof(float)), "%s: layer %d freq differs", what, l);
        CHECK(same_bits(x->scale, y->scale, H * sizeof(float)), "%s: layer %d scale differs", what, l);
        if (with_samples) {
            CHECK(x->n_samples == y->n_samples, "%s: layer %d n_samples %lld vs %lld", what, l,
                  (long long)x->n_samples, (long long)y->n_samples);
            if (x->n_samples == y->n_samples) {
                size_t n = (size_t)x->n_samples;
                CHECK(same_bits(x->sample_x, y->sample_x, n * D * sizeof(uint16_t)), "%s: layer %d sample_x differs",
                      what, l);
                CHECK(same_bits(x->sample_fired, y->sample_fired, n * (size_t)sidecar_fired_bytes(a)),
                      "%s: layer %d sample_fired differs", what, l);
            }
        } else {
            CHECK(y->n_samples == 0 && !y->sample_x && !y->sample_fired,
                  "%s: layer %d has samples though loaded without", what, l);
        }
        if (!a->planned) {
            CHECK(!y->order && !y->has_pred && y->hot == 0, "%s: layer %d has a plan though none was saved", what, l);
            continue;
        }
        CHECK(same_bits(x->order, y->order, H * sizeof(int32_t)), "%s: layer %d order differs", what, l);
        CHECK(x->hot == y->hot, "%s: layer %d hot %lld vs %lld", what, l, (long long)x->hot, (long long)y->hot);
        CHECK(x->has_pred == y->has_pred, "%s: layer %d has_pred %d vs %d", what, l, x->has_pred, y->has_pred);
        CHECK(x->use_pred == y->use_pred, "%s: layer %d use_pred %d vs %d", what, l, x->use_pred, y->use_pred);
        const struct predictor *p = &x->pred, *q = &y->pred;
        CHECK(p->dim == q->dim && p->rank == q->rank && p->n_out == q->n_out,
              "%s: layer %d predictor shape [%lld, %lld, %lld] vs [%lld, %lld, %lld]", what, l, (long long)p->dim,
              (long long)p->rank, (long long)p->n_out, (long long)q->dim, (long long)q->rank, (long long)q->n_out);
        if (p->rank != q->rank || p->dim != q->dim || p->n_out != q->n_out) continue;
        const size_t R = (size_t)p->rank;
        CHECK(same_bits(p->w1, q->w1, R * D * sizeof(float)), "%s: layer %d pred w1 differs", what, l);
        CHECK(same_bits(p->b1, q->b1, R * sizeof(float)), "%s: layer %d pred b1 differs", what, l);
        CHECK(same_bits(p->w2, q->w2, H * R * sizeof(float)), "%s: layer %d pred w2 differs", what, l);
        CHECK(same_bits(p->b2, q->b2, H * sizeof(float)), "%s: layer %d pred b2 differs", what, l);
        CHECK(same_bits(&p->cutoff, &q->cutoff, sizeof(float)), "%s: layer %d cutoff differs", what, l);
        CHECK(same_bits(&x->recall, &y->recall, sizeof(float)), "%s: layer %d recall differs", what, l);
        CHECK(same_bits(&x->precision, &y->precision, sizeof(float)), "%s: layer %d precision differs", what, l);
        CHECK(same_bits(&x->predicted, &y->predicted, sizeof(float)), "%s: layer %d predicted differs", what, l);
    }
}

static void save_load_compare(const struct sidecar *sc, const char *path, const char *what) {
    char err[512] = "";
    int rc = sidecar_save(sc, path, err, sizeof err);
    CHECK(rc == 0, "%s: save: %s", what, err);
    if (rc) return;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!exists(tmp), "%s: %s left behind", what, tmp);
    for (int with = 0; with <= 1; with++) {
        struct sidecar back;
        char label[128];
        snprintf(label, sizeof label, "%s, loaded %s samples", what, with ? "with" : "without");
        rc = sidecar_load(&back, path, with, err, sizeof err);
        CHECK(rc == 0, "%s: load: %s", label, err);
        if (rc) continue;
        check_equal(sc, &back, with, label);
        sidecar_free(&back);
    }
}

/* ------------------------------------------------------------ roundtrip */

static void test_roundtrip(void) {
    static const struct {
        int n_layers;
        int64_t dim, hidden, n_samples, rank;
    } shapes[] = {{3, 64, 200, 37, 32}, {2, 33, 203, 1, 64}};
    char err[512] = "", path[600];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct sidecar sc;
        char what[128];
        int rc = sidecar_init(&sc, shapes[s].n_layers, shapes[s].dim, shapes[s].hidden, err, sizeof err);
        CHECK(rc == 0, "sidecar_init: %s", err);
        if (rc) continue;
        /* sidecar_init's promise: zeroed frequencies, unit scales, no plan */
        for (int l = 0; l < sc.n_layers; l++)
            for (int64_t i = 0; i < sc.hidden; i++)
                CHECK(sc.layers[l].freq[i] == 0.0f && sc.layers[l].scale[i] == 1.0f,
                      "init: layer %d neuron %lld freq %g scale %g", l, (long long)i, sc.layers[l].freq[i],
                      sc.layers[l].scale[i]);
        fill_profile(&sc, shapes[s].n_samples);
        snprintf(what, sizeof what, "profile %d x %lld x %lld", sc.n_layers, (long long)sc.dim, (long long)sc.hidden);
        path_in(path, sizeof path, "profile.hearth.gguf");
        save_load_compare(&sc, path, what);

        /* input sparsity without a plan: usable as it is */
        fill_insparse(&sc);
        snprintf(what, sizeof what, "input-sparse %d x %lld x %lld", sc.n_layers, (long long)sc.dim,
                 (long long)sc.hidden);
        path_in(path, sizeof path, "insparse.hearth.gguf");
        save_load_compare(&sc, path, what);
        {
            struct sidecar back;
            if (sidecar_load(&back, path, 0, err, sizeof err) == 0) {
                CHECK(sidecar_check_usable(&back, path, err, sizeof err) == 0, "input sparsity alone: %s", err);
                CHECK(sidecar_check_planned(&back, path, err, sizeof err) < 0, "input sparsity is not a plan");
                sidecar_free(&back);
            }
        }

        fill_plan(&sc, shapes[s].rank);
        snprintf(what, sizeof what, "planned %d x %lld x %lld", sc.n_layers, (long long)sc.dim, (long long)sc.hidden);
        path_in(path, sizeof path, "planned.hearth.gguf");
        save_load_compare(&sc, path, what);

        /* a sidecar without samples (what the runtime may be given) */
        for (int l = 0; l < sc.n_layers; l++) {
            free(sc.layers[l].sample_x);
            free(sc.layers[l].sample_fired);
            sc.layers[l].sample_x = NULL;
            sc.layers[l].sample_fired = NULL;
            sc.layers[l].n_samples = 0;
        }
        path_in(path, sizeof path, "nosamples.hearth.gguf");
        rc = sidecar_save(&sc, path, err, sizeof err);
        CHECK(rc == 0, "save without samples: %s", err);
        struct sidecar back;
        if (rc == 0 && sidecar_load(&back, path, 0, err, sizeof err) == 0) {
            check_equal(&sc, &back, 0, "planned, saved without samples");
            sidecar_free(&back);
        } else if (rc == 0) {
            CHECK(0, "load without samples: %s", err);
        }
        rc = sidecar_load(&back, path, 1, err, sizeof err);
        CHECK(rc != 0 && strstr(err, "tensor blk.0.sample_x is missing (profile samples)") && strstr(err, path),
              "load with samples of a file without: rc %d, '%s'", rc, err);
        CHECK(back.layers == NULL, "a failed load leaves the sidecar zeroed");
        sidecar_free(&sc);
    }

    /* sidecar_init refuses impossible shapes */
    static const struct {
        int n_layers;
        int64_t dim, hidden;
    } bad[] = {{0, 64, 200}, {-1, 64, 200}, {4097, 64, 200}, {3, 0, 200}, {3, 64, 0}, {3, 64, (1 << 24) + 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sidecar sc;
        err[0] = 0;
        int rc = sidecar_init(&sc, bad[i].n_layers, bad[i].dim, bad[i].hidden, err, sizeof err);
        CHECK(rc != 0 && strstr(err, "sidecar: bad shape") && sc.layers == NULL, "init %d, %lld, %lld: rc %d '%s'",
              bad[i].n_layers, (long long)bad[i].dim, (long long)bad[i].hidden, rc, err);
    }

    /* MODEL.gguf -> MODEL.hearth.gguf */
    static const char *const dp[][2] = {{"/m/SmolLM2.Q4_1.gguf", "/m/SmolLM2.Q4_1.hearth.gguf"},
                                        {"model", "model.hearth.gguf"},
                                        {"a.GGUF", "a.GGUF.hearth.gguf"},
                                        {".gguf", ".gguf.hearth.gguf"},
                                        {"x.gguf", "x.hearth.gguf"}};
    for (size_t i = 0; i < sizeof dp / sizeof dp[0]; i++) {
        char out[256];
        sidecar_default_path(dp[i][0], out, sizeof out);
        CHECK(strcmp(out, dp[i][1]) == 0, "default path of %s: %s, expected %s", dp[i][0], out, dp[i][1]);
    }
}

/* ------------------------------------------------------------ errors */

/* Copies the GGUF at SRC to DST with edits: keys dropped or replaced, one
 * tensor dropped, one tensor rewritten with another type or shape (its
 * first bytes, zero-padded, as data). */
struct edit {
    const char *drop_key;
    const char *set_key; /* set to a u32 (set_u32) or a string (set_str) */
    uint32_t set_u32;
    const char *set_str;
    const char *drop_tensor;
    const char *retype_tensor;
    uint32_t new_type;
    int64_t new_ne0, new_ne1;
};

static int rewrite(const char *src, const char *dst, const struct edit *e) {
    char err[512] = "";
    gguf_ctx_t *g = gguf_open(src, err, sizeof err);
    gguf_writer_t *w = gguf_writer_create();
    int rc = -1, set_done = 0;
    if (!g || !w) {
        fprintf(stderr, "rewrite %s: %s\n", src, err);
        goto done;
    }
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i);
        struct gguf_value v;
        if (e->drop_key && strcmp(key, e->drop_key) == 0) continue;
        if (e->set_key && strcmp(key, e->set_key) == 0) {
            if (e->set_str)
                gguf_writer_set_str(w, key, e->set_str);
            else
                gguf_writer_set_u32(w, key, e->set_u32);
            set_done = 1;
            continue;
        }
        if (gguf_kv_value(g, i, &v)) goto done;
        uint32_t u32;
        uint64_t u64;
        float f32;
        switch (v.type) {
        case GGUF_VTYPE_STR: gguf_writer_set_strn(w, key, v.data, v.nbytes); break;
        case GGUF_VTYPE_U32: memcpy(&u32, v.data, 4), gguf_writer_set_u32(w, key, u32); break;
        case GGUF_VTYPE_U64: memcpy(&u64, v.data, 8), gguf_writer_set_u64(w, key, u64); break;
        case GGUF_VTYPE_F32: memcpy(&f32, v.data, 4), gguf_writer_set_f32(w, key, f32); break;
        default: fprintf(stderr, "rewrite: key %s has type %s\n", key, gguf_vtype_name(v.type)); goto done;
        }
    }
    if (e->set_key && !set_done) {
        if (e->set_str)
            gguf_writer_set_str(w, e->set_key, e->set_str);
        else
            gguf_writer_set_u32(w, e->set_key, e->set_u32);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        if (e->drop_tensor && strcmp(t->name, e->drop_tensor) == 0) continue;
        if (e->retype_tensor && strcmp(t->name, e->retype_tensor) == 0) {
            const int64_t ne[2] = {e->new_ne0, e->new_ne1};
            size_t nbytes = hearth_row_size(e->new_type, ne[0]) * (size_t)ne[1];
            void *data = calloc(nbytes ? nbytes : 1, 1);
            if (!data) goto done;
            memcpy(data, t->data, nbytes < t->nbytes ? nbytes : t->nbytes);
            int r = gguf_writer_add_tensor(w, t->name, e->new_type, ne[1] > 1 ? 2 : 1, ne, data, nbytes, err,
                                           sizeof err);
            free(data);
            if (r) {
                fprintf(stderr, "rewrite: %s\n", err);
                goto done;
            }
            continue;
        }
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes, err, sizeof err)) {
            fprintf(stderr, "rewrite: %s\n", err);
            goto done;
        }
    }
    if (gguf_writer_write(w, dst, err, sizeof err)) {
        fprintf(stderr, "rewrite: %s\n", err);
        goto done;
    }
    rc = 0;
done:
    gguf_writer_destroy(w);
    gguf_close(g);
    return rc;
}

/* ERR holds one of the '|'-separated alternatives of WANT */
static int says(const char *err, const char *want) {
    for (const char *p = want;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        for (const char *e = err; *e; e++)
            if (strncmp(e, p, n) == 0) return 1;
        if (!bar) return 0;
        p = bar + 1;
    }
}

/* Loading PATH fails, names PATH and says WANT; the sidecar is left zeroed. */
static void expect_load_fail(const char *path, int with_samples, const char *want, const char *label) {
    struct sidecar sc;
    char err[1024] = "";
    int rc = sidecar_load(&sc, path, with_samples, err, sizeof err);
    CHECK(rc < 0, "%s: loaded, expected '%s'", label, want);
    CHECK(says(err, want), "%s: message '%s' lacks '%s'", label, err, want);
    CHECK(strstr(err, path) != NULL, "%s: message '%s' does not name the file", label, err);
    CHECK(sc.layers == NULL && sc.n_layers == 0, "%s: failed load left data behind", label);
    if (rc == 0) sidecar_free(&sc);
}

static void expect_load_ok(const char *path, int with_samples, const char *label) {
    struct sidecar sc;
    char err[1024] = "";
    int rc = sidecar_load(&sc, path, with_samples, err, sizeof err);
    CHECK(rc == 0, "%s: %s", label, err);
    if (rc == 0) sidecar_free(&sc);
}

static void expect_edit_fail(const char *good, const struct edit *e, int with_samples, const char *want,
                             const char *label) {
    char bad[600];
    path_in(bad, sizeof bad, "edited.hearth.gguf");
    int rc = rewrite(good, bad, e);
    CHECK(rc == 0, "%s: could not write the edited file", label);
    if (rc == 0) expect_load_fail(bad, with_samples, want, label);
}

/* saves SC (made invalid by the caller) and expects the load to fail */
static void expect_saved_fail(const struct sidecar *sc, const char *want, const char *label) {
    char bad[600], err[512] = "";
    path_in(bad, sizeof bad, "mutated.hearth.gguf");
    int rc = sidecar_save(sc, bad, err, sizeof err);
    CHECK(rc == 0, "%s: save: %s", label, err);
    if (rc == 0) expect_load_fail(bad, 1, want, label);
}

static void test_errors(void) {
    char good[600], err[1024] = "";
    struct sidecar sc;
    /* 3 layers, dim 64, hidden 200, 37 samples, rank 32 */
    if (sidecar_init(&sc, 3, 64, 200, err, sizeof err)) {
        CHECK(0, "sidecar_init: %s", err);
        return;
    }
    fill_profile(&sc, 37);
    fill_plan(&sc, 32);
    path_in(good, sizeof good, "good.hearth.gguf");
    if (sidecar_save(&sc, good, err, sizeof err)) {
        CHECK(0, "save: %s", err);
        sidecar_free(&sc);
        return;
    }
    expect_load_ok(good, 1, "the good file");
    {
        /* the copy itself changes nothing */
        struct edit none = {0};
        char copy[600];
        path_in(copy, sizeof copy, "copy.hearth.gguf");
        CHECK(rewrite(good, copy, &none) == 0, "plain copy");
        expect_load_ok(copy, 1, "a plain copy of the good file");
    }

    /* ---- edited files: keys and tensors ---- */
    struct edit e;
#define EDIT(...) (e = (struct edit){__VA_ARGS__}, &e)
    expect_edit_fail(good, EDIT(.set_key = "general.architecture", .set_str = "llama"), 0,
                     "is not a hearth sidecar (general.architecture is \"llama\")", "a llama GGUF");
    expect_edit_fail(good, EDIT(.drop_key = "general.architecture"), 0,
                     "is not a hearth sidecar (general.architecture is missing)", "no architecture");
    expect_edit_fail(good, EDIT(.set_key = "hearth.sidecar.version", .set_u32 = 2), 0,
                     "version 2, this hearth reads version 1 (run hearth profile again)", "version 2");
    expect_edit_fail(good, EDIT(.drop_key = "hearth.sidecar.version"), 0, "'hearth.sidecar.version' not found",
                     "no version");
    expect_edit_fail(good, EDIT(.set_key = "hearth.sidecar.n_layers", .set_u32 = 0), 0,
                     "hearth.sidecar.n_layers = 0 is outside [1, 4096]", "0 layers");
    expect_edit_fail(good, EDIT(.drop_key = "hearth.sidecar.hidden"), 0, "'hearth.sidecar.hidden' not found",
                     "no hidden");
    expect_edit_fail(good, EDIT(.set_key = "hearth.sidecar.hidden", .set_u32 = 199), 0,
                     "tensor blk.0.ffn_freq is F32 [200, 1], expected F32 [199, 1]", "hidden 199 in the header");
    expect_edit_fail(good, EDIT(.set_key = "hearth.sidecar.n_layers", .set_u32 = 4), 0,
                     "tensor ffn_threshold is F32 [3, 1], expected F32 [4, 1]", "4 layers in the header");
    expect_edit_fail(good, EDIT(.drop_key = "hearth.model.sha256"), 0, "'hearth.model.sha256' not found",
                     "no model sha256");
    expect_edit_fail(good, EDIT(.set_key = "hearth.profile.n_ctx", .set_u32 = 0), 0,
                     "hearth.profile.n_ctx = 0 is outside [1, 2147483647]", "n_ctx 0");
    expect_edit_fail(good, EDIT(.drop_key = "hearth.profile.sparsity"), 0,
                     "hearth.profile.sparsity is missing or outside [0, 1)", "no sparsity");
    expect_edit_fail(good, EDIT(.drop_tensor = "blk.1.ffn_freq"), 0, "tensor blk.1.ffn_freq is missing",
                     "no blk.1.ffn_freq");
    expect_edit_fail(good, EDIT(.drop_tensor = "ffn_threshold"), 0, "tensor ffn_threshold is missing",
                     "no thresholds");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.0.ffn_freq", .new_type = HEARTH_TYPE_F32, .new_ne0 = 199,
                          .new_ne1 = 1),
                     0, "tensor blk.0.ffn_freq is F32 [199, 1], expected F32 [200, 1]", "short ffn_freq");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.2.ffn_scale", .new_type = HEARTH_TYPE_F16, .new_ne0 = 200,
                          .new_ne1 = 1),
                     0, "tensor blk.2.ffn_scale is F16 [200, 1], expected F32 [200, 1]", "F16 ffn_scale");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "ffn_threshold", .new_type = HEARTH_TYPE_F32, .new_ne0 = 1,
                          .new_ne1 = 3),
                     0, "tensor ffn_threshold is F32 [1, 3], expected F32 [3, 1]", "transposed thresholds");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.1.sample_fired", .new_type = HEARTH_TYPE_I8, .new_ne0 = 25,
                          .new_ne1 = 36),
                     1, "tensor blk.1.sample_fired is I8 [25, 36], expected I8 [25, 37]", "36 fired rows for 37 x");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.2.sample_x", .new_type = HEARTH_TYPE_F32, .new_ne0 = 64,
                          .new_ne1 = 37),
                     1, "tensor blk.2.sample_x is F32 [64, 37], expected F16 [64, 37]", "F32 samples");
    expect_edit_fail(good, EDIT(.drop_tensor = "blk.0.sample_fired"), 1, "tensor blk.0.sample_fired is missing",
                     "no fired bits");
    expect_edit_fail(good, EDIT(.drop_tensor = "blk.0.sample_x"), 1,
                     "tensor blk.0.sample_x is missing (profile samples)", "no samples");
    {
        /* the runtime does not read the samples: a file without them loads */
        char bad[600];
        path_in(bad, sizeof bad, "edited.hearth.gguf");
        expect_load_ok(bad, 0, "no samples, loaded without samples");
    }
    expect_edit_fail(good, EDIT(.drop_key = "hearth.plan.min_hot"), 0, "'hearth.plan.min_hot' not found",
                     "no min_hot");
    expect_edit_fail(good, EDIT(.set_key = "hearth.plan.group", .set_u32 = 0), 0,
                     "hearth.plan.group = 0 is outside [1, 200]", "group 0");
    expect_edit_fail(good, EDIT(.set_key = "hearth.plan.min_hot", .set_u32 = 201), 0,
                     "hearth.plan.min_hot = 201 is outside [0, 200]", "min_hot 201");
    expect_edit_fail(good, EDIT(.drop_tensor = "ffn_hot"), 0, "tensor ffn_hot is missing", "no ffn_hot");
    expect_edit_fail(good, EDIT(.drop_tensor = "pred_use"), 0, "tensor pred_use is missing", "no pred_use");
    expect_edit_fail(good, EDIT(.drop_tensor = "pred_recall"), 0, "tensor pred_recall is missing", "no recall");
    expect_edit_fail(good, EDIT(.drop_tensor = "blk.1.ffn_order"), 0, "tensor blk.1.ffn_order is missing",
                     "no blk.1.ffn_order");
    expect_edit_fail(good, EDIT(.drop_tensor = "blk.2.pred_w2"), 0, "tensor blk.2.pred_w2 is missing", "no pred_w2");
    expect_edit_fail(good, EDIT(.drop_tensor = "blk.0.pred_b1"), 0, "tensor blk.0.pred_b1 is missing", "no pred_b1");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.1.pred_w1", .new_type = HEARTH_TYPE_F32, .new_ne0 = 32,
                          .new_ne1 = 64),
                     0, "tensor blk.1.pred_w1 is F32 [32, 64], expected F32 [64, 32]", "transposed pred_w1");
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.0.pred_b1", .new_type = HEARTH_TYPE_F32, .new_ne0 = 33,
                          .new_ne1 = 1),
                     0, "layer 0 predictor: |tensor blk.0.pred_w1 is F32 [64, 32], expected F32 [64, 33]",
                     "rank 33"); /* either check may come first */
    expect_edit_fail(good,
                     EDIT(.retype_tensor = "blk.0.ffn_order", .new_type = HEARTH_TYPE_I32, .new_ne0 = 199,
                          .new_ne1 = 1),
                     0, "tensor blk.0.ffn_order is I32 [199, 1], expected I32 [200, 1]", "short order");
#undef EDIT

    /* ---- saved with bad values (sidecar_save writes what it is given) ---- */
    struct sidecar_layer *L0 = &sc.layers[0], *L1 = &sc.layers[1], *L2 = &sc.layers[2];
    float keep = L1->freq[5];
    static const struct {
        float v;
        const char *msg;
    } badfreq[] = {{1.5f, "blk.1.ffn_freq[5] = 1.5 is not a frequency"},
                   {-0.25f, "blk.1.ffn_freq[5] = -0.25 is not a frequency"},
                   {1.0000001f, "blk.1.ffn_freq[5] = 1 is not a frequency"},
                   {NAN, "is not a frequency"},
                   {INFINITY, "blk.1.ffn_freq[5] = inf is not a frequency"}};
    for (size_t i = 0; i < sizeof badfreq / sizeof badfreq[0]; i++) {
        L1->freq[5] = badfreq[i].v;
        expect_saved_fail(&sc, badfreq[i].msg, "bad frequency");
    }
    L1->freq[5] = keep;

    keep = L2->threshold;
    static const struct {
        float v;
        const char *msg;
    } badthr[] = {{-0.5f, "layer 2 threshold -0.5 is not a finite value >= 0"},
                  {NAN, "is not a finite value >= 0"},
                  {INFINITY, "layer 2 threshold inf is not a finite value >= 0"}};
    for (size_t i = 0; i < sizeof badthr / sizeof badthr[0]; i++) {
        L2->threshold = badthr[i].v;
        expect_saved_fail(&sc, badthr[i].msg, "bad threshold");
    }
    L2->threshold = keep;

    keep = L0->scale[199];
    L0->scale[199] = -1.0f;
    expect_saved_fail(&sc, "blk.0.ffn_scale[199] = -1 is not a finite value >= 0", "negative scale");
    L0->scale[199] = INFINITY;
    expect_saved_fail(&sc, "blk.0.ffn_scale[199] = inf is not a finite value >= 0", "infinite scale");
    L0->scale[199] = keep;

    keep = sc.sparsity;
    sc.sparsity = 1.0f;
    expect_saved_fail(&sc, "hearth.profile.sparsity is missing or outside [0, 1)", "sparsity 1");
    sc.sparsity = NAN;
    expect_saved_fail(&sc, "hearth.profile.sparsity is missing or outside [0, 1)", "sparsity NaN");
    sc.sparsity = keep;

    /* orders that are not permutations */
    int32_t keep_i = L1->order[7];
    L1->order[7] = L1->order[3];
    char want[2048];
    snprintf(want, sizeof want, "blk.1.ffn_order is not a permutation of 0..199 (position 7 holds %d)", L1->order[3]);
    expect_saved_fail(&sc, want, "duplicate neuron id");
    L1->order[7] = keep_i;
    keep_i = L1->order[0];
    L1->order[0] = 200;
    expect_saved_fail(&sc, "blk.1.ffn_order is not a permutation of 0..199 (position 0 holds 200)", "id 200");
    L1->order[0] = -1;
    expect_saved_fail(&sc, "blk.1.ffn_order is not a permutation of 0..199 (position 0 holds -1)", "id -1");
    L1->order[0] = INT32_MIN;
    expect_saved_fail(&sc, "(position 0 holds -2147483648)", "id INT32_MIN");
    L1->order[0] = keep_i;

    int64_t keep_hot = L1->hot;
    L1->hot = 201;
    expect_saved_fail(&sc, "layer 1 has 201 hot neurons of 200", "hot 201");
    L1->hot = -1;
    expect_saved_fail(&sc, "layer 1 has -1 hot neurons of 200", "hot -1");
    L1->hot = keep_hot;

    /* non-finite predictors, in each tensor and the cutoff */
    float *const where[] = {&L2->pred.w1[64 * 32 - 1], &L2->pred.b1[0], &L2->pred.w2[17], &L2->pred.b2[199],
                            &L2->pred.cutoff};
    const float bad_values[] = {NAN, INFINITY, -INFINITY, NAN, NAN};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        keep = *where[i];
        *where[i] = bad_values[i];
        expect_saved_fail(&sc, "layer 2 predictor has non-finite weights", "non-finite predictor");
        *where[i] = keep;
    }
    /* input sparsity's values */
    fill_insparse(&sc);
    keep = sc.in_thr[5];
    sc.in_thr[5] = -0.125f;
    expect_saved_fail(&sc, "layer 1 input 1: threshold -0.125, density", "negative input threshold");
    sc.in_thr[5] = NAN;
    expect_saved_fail(&sc, "layer 1 input 1: threshold nan", "NaN input threshold");
    sc.in_thr[5] = keep;
    keep = sc.in_density[8];
    sc.in_density[8] = 1.5f;
    expect_saved_fail(&sc, "layer 2 input 0: threshold", "density 1.5");
    sc.in_density[8] = keep;
    keep_i = sc.in_use[13];
    sc.in_use[13] = 2;
    expect_saved_fail(&sc, "insparse_use of layer 1 matrix 6 is 2, not 0 or 1", "a choice of 2");
    sc.in_use[13] = keep_i;
    keep = sc.in_target;
    sc.in_target = 1.0f;
    expect_saved_fail(&sc, "hearth.insparse.target is missing or outside [0, 1)", "target 1");
    sc.in_target = keep;
    /* and after all those restorations the file is good again */
    path_in(good, sizeof good, "good.hearth.gguf");
    CHECK(sidecar_save(&sc, good, err, sizeof err) == 0, "save: %s", err);
    expect_load_ok(good, 1, "the restored file");

    /* ---- sidecar_check_model: shape and file size ---- */
    struct sidecar back;
    if (sidecar_load(&back, good, 0, err, sizeof err)) {
        CHECK(0, "load: %s", err);
        sidecar_free(&sc);
        return;
    }
    struct llama_model m;
    memset(&m, 0, sizeof m);
    m.gguf = gguf_open(good, err, sizeof err); /* stands for the model file: only its size is read */
    CHECK(m.gguf != NULL, "gguf_open: %s", err);
    if (m.gguf) {
        const size_t size = gguf_file_size(m.gguf);
        static const int shapes[][3] = {{3, 64, 199}, {2, 64, 200}, {3, 576, 200}};
        static const char *const msgs[] = {"this model has 3, 64, 199 (profile it with hearth profile)",
                                           "this model has 2, 64, 200", "this model has 3, 576, 200"};
        for (int i = 0; i < 3; i++) {
            m.cfg.n_layers = shapes[i][0];
            m.cfg.dim = shapes[i][1];
            m.cfg.hidden_dim = shapes[i][2];
            err[0] = 0;
            int rc = sidecar_check_model(&back, &m, err, sizeof err);
            CHECK(rc < 0 && strstr(err, "the sidecar was made for a model of 3 layers, dim 64, 200 FFN neurons") &&
                      strstr(err, msgs[i]),
                  "check_model %d x %d x %d: rc %d '%s'", shapes[i][0], shapes[i][1], shapes[i][2], rc, err);
        }
        m.cfg.n_layers = 3;
        m.cfg.dim = 64;
        m.cfg.hidden_dim = 200;
        err[0] = 0;
        int rc = sidecar_check_model(&back, &m, err, sizeof err); /* model_bytes 0x123456789abc */
        snprintf(want, sizeof want, "(%llu bytes, sha256 %.16s...); %s has %zu bytes",
                 (unsigned long long)back.model_bytes, back.model_sha256, good, size);
        CHECK(rc < 0 && strstr(err, want) && strstr(err, back.model_name), "check_model size: rc %d '%s'", rc, err);
        back.model_bytes = size;
        rc = sidecar_check_model(&back, &m, err, sizeof err);
        CHECK(rc == 0, "check_model, all matching: %s", err);
        back.model_bytes = 0; /* unknown: not checked */
        rc = sidecar_check_model(&back, &m, err, sizeof err);
        CHECK(rc == 0, "check_model, size unknown: %s", err);
        gguf_close(m.gguf);
    }

    /* ---- sidecar_check_planned ---- */
    CHECK(sidecar_check_planned(&back, good, err, sizeof err) == 0, "planned: %s", err);
    sidecar_free(&back);
    sc.planned = 0;
    char unplanned[600];
    path_in(unplanned, sizeof unplanned, "unplanned.hearth.gguf");
    CHECK(sidecar_save(&sc, unplanned, err, sizeof err) == 0, "save: %s", err);
    if (sidecar_load(&back, unplanned, 0, err, sizeof err) == 0) {
        CHECK(!back.planned, "an unplanned sidecar loads as planned");
        err[0] = 0;
        int rc = sidecar_check_planned(&back, unplanned, err, sizeof err);
        snprintf(want, sizeof want, "sidecar %s has a profile but no placement: run hearth plan --sidecar %s", unplanned,
                 unplanned);
        CHECK(rc < 0 && strstr(err, want), "check_planned: rc %d '%s'", rc, err);
        sidecar_free(&back);
    } else {
        CHECK(0, "load unplanned: %s", err);
    }
    sc.planned = 1;
    sidecar_free(&sc);

    /* not a GGUF at all, and a missing file */
    char junk[600];
    path_in(junk, sizeof junk, "junk.hearth.gguf");
    FILE *f = fopen(junk, "wb");
    if (f) {
        fputs("this is not a GGUF file, just some text long enough to have a header's worth of bytes\n", f);
        fclose(f);
    }
    expect_load_fail(junk, 0, junk, "a text file");
    path_in(junk, sizeof junk, "no-such.hearth.gguf");
    expect_load_fail(junk, 0, "cannot open", "a missing file");
}

/* ------------------------------------------------------------ truncate */

static void test_truncate(void) {
    char path[600], cut[600], err[1024];
    struct sidecar sc;
    if (sidecar_init(&sc, 2, 32, 9, err, sizeof err)) {
        CHECK(0, "sidecar_init: %s", err);
        return;
    }
    fill_profile(&sc, 3);
    fill_plan(&sc, 32);
    path_in(path, sizeof path, "small.hearth.gguf");
    path_in(cut, sizeof cut, "cut.hearth.gguf");
    int rc = sidecar_save(&sc, path, err, sizeof err);
    sidecar_free(&sc);
    CHECK(rc == 0, "save: %s", err);
    if (rc) return;
    /* the end of the last tensor's data: shorter files lack some of it */
    gguf_ctx_t *g = gguf_open(path, err, sizeof err);
    CHECK(g != NULL, "gguf_open: %s", err);
    if (!g) return;
    size_t size = gguf_file_size(g), data_end = 0;
    unsigned char *bytes = malloc(size);
    if (bytes) memcpy(bytes, gguf_base(g), size);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        size_t end = gguf_data_offset(g) + (size_t)t->offset + t->nbytes;
        if (end > data_end) data_end = end;
    }
    gguf_close(g);
    CHECK(bytes != NULL, "out of memory");
    if (!bytes) return;
    int fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "%s: %s", cut, strerror(errno));
    if (fd < 0 || write(fd, bytes, size) != (ssize_t)size) {
        CHECK(0, "cannot write %s", cut);
        free(bytes);
        if (fd >= 0) close(fd);
        return;
    }
    /* from the full file down to 0 bytes, one byte at a time */
    int loaded = 0, refused = 0;
    for (size_t len = size + 1; len-- > 0;) {
        if (ftruncate(fd, (off_t)len) != 0) {
            CHECK(0, "ftruncate: %s", strerror(errno));
            break;
        }
        for (int with = 0; with <= 1; with++) {
            err[0] = 0;
            rc = sidecar_load(&sc, cut, with, err, sizeof err);
            if (rc == 0) {
                loaded++;
                CHECK(len >= data_end, "%zu of %zu bytes (data ends at %zu) loaded", len, size, data_end);
                sidecar_free(&sc);
            } else {
                refused++;
                CHECK(err[0] != 0 && strstr(err, cut), "%zu bytes: message '%s' does not name the file", len, err);
                CHECK(sc.layers == NULL, "%zu bytes: failed load left data", len);
                CHECK(len < size, "the whole file refused: %s", err);
            }
        }
    }
    close(fd);
    free(bytes);
    printf("truncate: %zu-byte file (data ends at %zu), %d loads refused, %d accepted\n", size, data_end, refused,
           loaded);
    CHECK(refused >= 2 * (int)data_end, "only %d of the truncations were refused", refused);
}

/* ------------------------------------------------------------ save */

static void test_save(void) {
    char err[1024], path[600], tmp[640];
    struct sidecar a, b;
    if (sidecar_init(&a, 2, 40, 17, err, sizeof err) || sidecar_init(&b, 2, 40, 17, err, sizeof err)) {
        CHECK(0, "sidecar_init: %s", err);
        return;
    }
    fill_profile(&a, 5);
    fill_profile(&b, 2);
    fill_plan(&b, 32);

    /* unwritable places: a file as a folder, a folder that does not exist */
    char missing[600];
    path_in(missing, sizeof missing, "no/such/folder/x.hearth.gguf");
    const char *const places[] = {"/dev/full/x.hearth.gguf", missing};
    for (int i = 0; i < 2; i++) {
        err[0] = 0;
        int rc = sidecar_save(&a, places[i], err, sizeof err);
        snprintf(tmp, sizeof tmp, "%s.tmp", places[i]);
        CHECK(rc < 0 && strstr(err, places[i]) && strstr(err, "cannot create"), "save to %s: rc %d '%s'", places[i],
              rc, err);
        CHECK(!exists(places[i]) && !exists(tmp), "save to %s left a file", places[i]);
    }

    /* replacing: B over A is a rename, so a reader holding A keeps A */
    path_in(path, sizeof path, "replace.hearth.gguf");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(sidecar_save(&a, path, err, sizeof err) == 0, "save A: %s", err);
    struct stat st_a, st_b;
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && fstat(fd, &st_a) == 0, "open A: %s", strerror(errno));
    CHECK(sidecar_save(&b, path, err, sizeof err) == 0, "save B over A: %s", err);
    CHECK(!exists(tmp), "%s left behind", tmp);
    struct sidecar back;
    if (sidecar_load(&back, path, 1, err, sizeof err) == 0) {
        check_equal(&b, &back, 1, "B saved over A");
        sidecar_free(&back);
    } else {
        CHECK(0, "load B: %s", err);
    }
    CHECK(stat(path, &st_b) == 0 && st_b.st_ino != st_a.st_ino, "B was written in place of A, not renamed over it");
    if (fd >= 0) {
        /* the old inode still holds all of A */
        struct stat st_now;
        CHECK(fstat(fd, &st_now) == 0 && st_now.st_size == st_a.st_size, "A changed size under its reader");
        close(fd);
    }

    /* a failed save leaves the old file as it was: PATH.tmp cannot be
     * created (a folder of that name; permissions do not stop root) */
    CHECK(mkdir(tmp, 0755) == 0, "mkdir %s: %s", tmp, strerror(errno));
    err[0] = 0;
    int rc = sidecar_save(&a, path, err, sizeof err);
    CHECK(rc < 0 && strstr(err, "cannot create"), "save with %s a folder: rc %d '%s'", tmp, rc, err);
    rmdir(tmp);
    if (sidecar_load(&back, path, 1, err, sizeof err) == 0) {
        check_equal(&b, &back, 1, "B after a failed save of A");
        sidecar_free(&back);
    } else {
        CHECK(0, "load B after a failed save: %s", err);
    }
    sidecar_free(&a);
    sidecar_free(&b);
}

/* ------------------------------------------------------------ hostile */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* A small file claiming n_layers x hidden (and a header that is otherwise a
 * sidecar's) with ffn_threshold of 1 layer and nothing else. */
static int write_claim(const char *path, uint32_t n_layers, uint32_t hidden) {
    char err[512] = "";
    gguf_writer_t *w = gguf_writer_create();
    if (!w) return -1;
    gguf_writer_set_str(w, "general.architecture", "hearth-sidecar");
    gguf_writer_set_u32(w, "hearth.sidecar.version", SIDECAR_VERSION);
    gguf_writer_set_u32(w, "hearth.sidecar.n_layers", n_layers);
    gguf_writer_set_u32(w, "hearth.sidecar.dim", 64);
    gguf_writer_set_u32(w, "hearth.sidecar.hidden", hidden);
    gguf_writer_set_str(w, "hearth.model.sha256", "0");
    gguf_writer_set_u64(w, "hearth.model.bytes", 0);
    gguf_writer_set_str(w, "hearth.model.name", "m");
    gguf_writer_set_str(w, "hearth.profile.corpus", "c");
    gguf_writer_set_str(w, "hearth.profile.corpus_sha256", "0");
    gguf_writer_set_u64(w, "hearth.profile.tokens", 1);
    gguf_writer_set_f32(w, "hearth.profile.sparsity", 0.5f);
    gguf_writer_set_u32(w, "hearth.profile.n_ctx", 64);
    const float thr = 0.0f;
    const int64_t ne[1] = {1};
    int rc = gguf_writer_add_tensor(w, "ffn_threshold", HEARTH_TYPE_F32, 1, ne, &thr, sizeof thr, err, sizeof err);
    if (rc == 0) rc = gguf_writer_write(w, path, err, sizeof err);
    if (rc) fprintf(stderr, "write_claim: %s\n", err);
    gguf_writer_destroy(w);
    return rc;
}

/* Loads PATH in a child limited to LIMIT bytes of address space; the load
 * must fail with a message about the file, not run out of memory (or be
 * killed). */
static void expect_refused_small(const char *path, size_t limit, const char *label) {
    int pfd[2];
    if (pipe(pfd) != 0) {
        CHECK(0, "pipe: %s", strerror(errno));
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        CHECK(0, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        close(pfd[0]);
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
        struct sidecar sc;
        char err[1024] = "";
        int rc = sidecar_load(&sc, path, 0, err, sizeof err);
        if (write(pfd[1], err, strlen(err)) < 0) _exit(4);
        _exit(rc == 0 ? 1 : 0);
    }
    close(pfd[1]);
    char msg[1024] = "";
    size_t n = 0;
    ssize_t r;
    while (n < sizeof msg - 1 && (r = read(pfd[0], msg + n, sizeof msg - 1 - n)) > 0) n += (size_t)r;
    msg[n] = 0;
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the loading child %s %d ('%s')", label,
          WIFEXITED(status) ? "exited with" : "was killed by signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), msg);
    CHECK(strstr(msg, path) != NULL && strstr(msg, "out of memory") == NULL,
          "%s: a %s-limited load said '%s': it allocated for the claimed shape before checking the file", label,
          "address-space", msg);
    printf("%s: %s\n", label, msg);
}

static int test_hostile(void) {
    if (UNDER_ASAN) {
        printf("hostile: skipped under AddressSanitizer (RLIMIT_AS and its shadow memory do not mix)\n");
        return 77;
    }
    char path[600], err[1024];
    const size_t limit = (size_t)512 << 20;
    /* 4096 layers x 2^24 neurons: 512 GiB of freq and scale for a 1 KB file */
    path_in(path, sizeof path, "claim.hearth.gguf");
    if (write_claim(path, 4096, 1u << 24) == 0) expect_refused_small(path, limit, "4096 x 2^24 claimed");
    /* 8 x 2^24: 1 GiB, over the limit */
    if (write_claim(path, 8, 1u << 24) == 0) expect_refused_small(path, limit, "8 x 2^24 claimed");

    /* a predictor rank from a pred_b1 that is not even F32: the I8 tensor of
     * 3.2 M bytes gives rank 3.2 M, i.e. 3.4 GB of predictor for a 3 MB file */
    struct sidecar sc;
    if (sidecar_init(&sc, 1, 64, 40, err, sizeof err)) {
        CHECK(0, "sidecar_init: %s", err);
        return 1;
    }
    fill_profile(&sc, 0);
    fill_plan(&sc, 32);
    char good[600];
    path_in(good, sizeof good, "rank.hearth.gguf");
    int rc = sidecar_save(&sc, good, err, sizeof err);
    sidecar_free(&sc);
    CHECK(rc == 0, "save: %s", err);
    struct edit e = {.retype_tensor = "blk.0.pred_b1", .new_type = HEARTH_TYPE_I8, .new_ne0 = 32 * 100000,
                     .new_ne1 = 1};
    if (rc == 0 && rewrite(good, path, &e) == 0) expect_refused_small(path, limit, "rank 3.2 M claimed");
    return failures ? 1 : 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s roundtrip|errors|truncate|save|hostile DIR [SEED]\n", argv[0]);
        return 2;
    }
    const char *which = argv[1];
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 20250917u;
    check_seed(seed);
    snprintf(dir, sizeof dir, "%s/%s", argv[2], which);
    if (mkdir_p(dir) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    printf("test_sidecar %s: seed %llu, files in %s\n", which, (unsigned long long)seed, dir);
    if (strcmp(which, "roundtrip") == 0)
        test_roundtrip();
    else if (strcmp(which, "errors") == 0)
        test_errors();
    else if (strcmp(which, "truncate") == 0)
        test_truncate();
    else if (strcmp(which, "save") == 0)
        test_save();
    else if (strcmp(which, "hostile") == 0) {
        int rc = test_hostile();
        if (rc == 77) return 77;
    } else {
        fprintf(stderr, "unknown case %s\n", which);
        return 2;
    }
    char name[64];
    snprintf(name, sizeof name, "test_sidecar %s", which);
    return check_done(name);
}
