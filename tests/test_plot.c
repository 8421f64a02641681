/* test_plot: the firing-frequency SVG (coordinator/plot.h).
 *
 *   test_plot DIR    writes its plots under DIR (created; left there to look at)
 *
 * Synthetic power-law data with a printed seed, 30 layers (colour bar) and 3
 * layers (legend, linear axis); each file must be well-formed XML (checked by
 * Python's xml.dom.minidom when python3 runs, skipped otherwise) with exactly
 * one <path> per layer. Errors: an unwritable path, /dev/full (ENOSPC), bad
 * data. */
#include "plot.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) s[n] = 0, *len = (size_t)n;
    return s;
}

static int count(const char *s, const char *needle) {
    int c = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) c++;
    return c;
}

static int have_python(void) { return system("python3 -c pass >/dev/null 2>&1") == 0; }

/* Write, then check the file: XML, one path per layer, the title escaped. */
static void check_plot(const char *path, const char *title, int n_layers, const float *const *freq, const int64_t *n,
                       const char *want_scale) {
    char err[512] = "";
    int rc = plot_firing_svg(path, title, n_layers, freq, n, err, sizeof err);
    CHECK(rc == 0, "%s: %s", path, err);
    if (rc) return;
    size_t len = 0;
    char *s = slurp(path, &len);
    CHECK(s != NULL, "cannot read back %s", path);
    if (!s) return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);
    CHECK(count(s, "<path") == n_layers, "%s: %d <path> elements for %d layers", path, count(s, "<path"), n_layers);
    for (int l = 0; l < n_layers; l++) {
        char needle[64];
        snprintf(needle, sizeof needle, "data-layer=\"%d\"", l);
        CHECK(count(s, needle) == 1, "%s: no single path for layer %d", path, l);
    }
    CHECK(strstr(s, want_scale) != NULL, "%s: expected \"%s\" (axis scale)", path, want_scale);
    CHECK(strstr(s, "&lt;") && strstr(s, "&amp;"), "%s: title not escaped", path);
    CHECK(s[len - 1] == '\n' && strstr(s, "</svg>"), "%s: truncated", path);
    printf("plot: %s, %zu bytes\n", path, len);
    free(s);
    if (have_python()) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "python3 -c 'import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])' '%s'",
                 path);
        CHECK(system(cmd) == 0, "%s is not well-formed XML", path);
    } else {
        printf("plot: no python3, XML check skipped\n");
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_plot DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    uint64_t seed = 424242;
    check_seed(seed);
    printf("plot: seed %" PRIu64 "\n", seed);

    /* 30 layers of 1536 neurons: power laws steepening with depth, some never firing */
    enum { NL = 30, N = 1536 };
    float *data = xmalloc((size_t)NL * N * sizeof *data);
    const float *freq[NL];
    int64_t n[NL];
    for (int l = 0; l < NL; l++) {
        double alpha = 0.4 + 1.2 * l / (NL - 1);
        for (int i = 0; i < N; i++) {
            double f = 0.9 * pow(i + 1.0, -alpha) * (0.8 + 0.4 * rnd_unit());
            data[l * N + i] = i > N - 40 ? 0.0f : (float)(f > 1 ? 1 : f);
        }
        qsort(data + l * N, N, sizeof(float), cmp_desc);
        freq[l] = data + l * N;
        n[l] = N - 7 * l; /* layers of different widths */
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/firing_30.svg", dir);
    check_plot(path, "SmolLM2 <synthetic> & friends: firing frequency", NL, freq, n, "log scale");

    /* 3 layers, a narrow range: legend and linear axis; one layer of 1 neuron, one empty */
    const float a[] = {0.9f, 0.8f, 0.5f, 0.45f, 0.3f}, b[] = {0.6f};
    const float *few[3] = {a, b, NULL};
    int64_t nf[3] = {5, 1, 0};
    snprintf(path, sizeof path, "%s/firing_3.svg", dir);
    check_plot(path, "three <layers> & a tiny one \x01 caf\xc3\xa9 \xff", 3, few, nf,
               "firing frequency (fraction of tokens)<"); /* linear: no ", log scale" */

    char err[512] = "";
    /* unwritable: a folder that does not exist */
    int rc = plot_firing_svg("/nonexistent-hearth-dir/p.svg", "t", NL, freq, n, err, sizeof err);
    CHECK(rc < 0 && !strcmp(err, "plot: cannot create /nonexistent-hearth-dir/p.svg.tmp: No such file or directory"),
          "unwritable: rc %d, '%s'", rc, err);
    /* a full disk: /dev/full is a device, written directly (never renamed over) */
    if (access("/dev/full", W_OK) == 0) {
        err[0] = 0;
        rc = plot_firing_svg("/dev/full", "t", NL, freq, n, err, sizeof err);
        CHECK(rc < 0 && !strcmp(err, "plot: writing /dev/full: No space left on device"), "/dev/full: rc %d, '%s'",
              rc, err);
        struct stat st;
        CHECK(stat("/dev/full", &st) == 0 && S_ISCHR(st.st_mode), "/dev/full is no longer a device");
    } else {
        printf("plot: no /dev/full, ENOSPC check skipped\n");
    }
    /* bad data */
    float bad[] = {0.5f, NAN};
    const float *badp[1] = {bad};
    int64_t nb[1] = {2};
    snprintf(path, sizeof path, "%s/bad.svg", dir);
    rc = plot_firing_svg(path, "t", 1, badp, nb, err, sizeof err);
    CHECK(rc < 0 && !strcmp(err, "plot: layer 0: frequency nan of neuron rank 1 is not a finite number >= 0"),
          "bad data: rc %d, '%s'", rc, err);
    CHECK(access(path, F_OK) != 0, "bad data still wrote %s", path);
    rc = plot_firing_svg(path, "t", 0, badp, nb, err, sizeof err);
    CHECK(rc < 0 && !strcmp(err, "plot: no layers to plot (n_layers = 0)"), "no layers: rc %d, '%s'", rc, err);

    free(data);
    return check_done("test_plot");
}
