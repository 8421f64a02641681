/* plot: see plot.h.
 *
 * Layout in SVG user units (pixels): a 960 x 600 canvas, the plot area
 * PLOT_W x PLOT_H at (PLOT_X, PLOT_Y), the legend or colour bar to its right.
 * A curve has at most one point per horizontal pixel: the frequencies are
 * sorted, so sampling ranks at pixel spacing loses nothing visible and keeps a
 * plot of 30 layers x 14336 neurons a few hundred kilobytes. A layer of fewer
 * neurons than half the plot's width is drawn as steps, one per neuron. */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLOT_CANVAS_W 960
#define PLOT_CANVAS_H 600
#define PLOT_X 90.0
#define PLOT_Y 70.0
#define PLOT_W 700.0
#define PLOT_H 450.0
#define PLOT_LEGEND_MAX 10     /* more layers: a colour bar instead of a legend */
#define PLOT_MIN_DECADES 2.0   /* positive data spanning this many decades gets a log axis */
#define PLOT_MAX_DECADES 6.0   /* a log axis shows at most this many decades below its top */

/* A stream that remembers its first write error (errno), so that the drawing
 * code can write freely and the caller checks once. */
struct plot_out {
    FILE *f;
    int err;
};

static void out(struct plot_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct plot_out *o, const char *fmt, ...) {
    if (o->err) return;
    va_list ap;
    va_start(ap, fmt);
    int rc = vfprintf(o->f, fmt, ap);
    va_end(ap);
    if (rc < 0) o->err = errno ? errno : EIO;
}

/* Text content and attribute values: XML's five specials escaped, control
 * characters (not allowed in XML 1.0) and bytes of broken UTF-8 shown as '?'. */
static void out_text(struct plot_out *o, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 && c >= 0xc2 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                : (c & 0xf8) == 0xf0 && c <= 0xf4 ? 4 : 0;
        for (int k = 1; k < len; k++)
            if ((p[k] & 0xc0) != 0x80) len = 0; /* also stops at the terminating 0 */
        if (len > 1) {
            out(o, "%.*s", len, (const char *)p);
            p += len;
            continue;
        }
        p++;
        if (len == 0 || c < 0x20) out(o, "?");
        else if (c == '&') out(o, "&amp;");
        else if (c == '<') out(o, "&lt;");
        else if (c == '>') out(o, "&gt;");
        else if (c == '"') out(o, "&quot;");
        else if (c == '\'') out(o, "&apos;");
        else out(o, "%c", (char)c);
    }
}

/* viridis at t in [0, 1], from its values at nine points, linearly interpolated */
static void plot_color(double t, char hex[8]) {
    static const unsigned char v[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142},
                                          {33, 144, 141}, {39, 173, 129}, {92, 200, 99},  {170, 220, 50},
                                          {253, 231, 37}};
    if (!(t >= 0.0)) t = 0.0;
    if (t > 1.0) t = 1.0;
    double x = t * 8.0;
    int i = x >= 8.0 ? 7 : (int)x;
    double u = x - i;
    int rgb[3];
    for (int c = 0; c < 3; c++) rgb[c] = (int)lrint(v[i][c] + u * (v[i + 1][c] - v[i][c]));
    snprintf(hex, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

static double layer_t(int l, int n_layers) { return n_layers > 1 ? (double)l / (n_layers - 1) : 0.0; }

/* The y axis: log10 between lo and hi (decades), or linear from 0 to hi. */
struct plot_axis {
    int log;
    double lo, hi;
};

static double plot_y(const struct plot_axis *a, double v) {
    double f;
    if (a->log) f = (log10(v > a->lo ? v : a->lo) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    else f = v / a->hi;
    if (f > 1.0) f = 1.0;
    return PLOT_Y + PLOT_H * (1.0 - f);
}

/* A "nice" step (1, 2, 2.5 or 5 times a power of ten) giving about 5 ticks over span. */
static double nice_step(double span) {
    double raw = span / 5.0, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return p * (m <= 1.0 ? 1.0 : m <= 2.0 ? 2.0 : m <= 2.5 ? 2.5 : m <= 5.0 ? 5.0 : 10.0);
}

static void plot_axes(struct plot_out *o, const struct plot_axis *a) {
    /* frame and x ticks: rank fraction 0, 0.1, ..., 1 */
    out(o, "<g font-size=\"12\" fill=\"#333\">\n");
    for (int k = 0; k <= 10; k++) {
        double x = PLOT_X + PLOT_W * k / 10.0;
        out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", x, PLOT_Y, x,
            PLOT_Y + PLOT_H);
        out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x, PLOT_Y + PLOT_H, x,
            PLOT_Y + PLOT_H + 5);
        out(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x, PLOT_Y + PLOT_H + 19, k / 10.0);
    }
    if (a->log) {
        int d0 = (int)lrint(log10(a->lo)), d1 = (int)lrint(log10(a->hi));
        for (int d = d0; d <= d1; d++) {
            double dec = pow(10.0, d);
            for (int m = 1; m <= 9 && (d < d1 || m == 1); m++) { /* minor grid at 2..9 x 10^d */
                double y = plot_y(a, m * dec);
                out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", PLOT_X, y,
                    PLOT_X + PLOT_W, y, m == 1 ? "#d8d8d8" : "#f2f2f2");
            }
            double y = plot_y(a, dec);
            out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", PLOT_X - 5, y, PLOT_X,
                y);
            if (d >= -3) /* 1, 0.1, 0.01, 0.001 read better than powers */
                out(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", PLOT_X - 8, y + 4, dec);
            else
                out(o,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">10<tspan dy=\"-6\" "
                    "font-size=\"9\">%d</tspan></text>\n",
                    PLOT_X - 8, y + 4, d);
        }
    } else {
        double step = nice_step(a->hi);
        for (int k = 0; k * step <= a->hi * (1.0 + 1e-9); k++) {
            double y = plot_y(a, k * step);
            out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", PLOT_X, y,
                PLOT_X + PLOT_W, y);
            out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", PLOT_X - 5, y, PLOT_X,
                y);
            out(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", PLOT_X - 8, y + 4, k * step);
        }
    }
    out(o, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", PLOT_X,
        PLOT_Y, PLOT_W, PLOT_H);
    out(o,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\">neuron rank / neurons in layer "
        "(hottest first)</text>\n",
        PLOT_X + PLOT_W / 2, PLOT_Y + PLOT_H + 44);
    out(o,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" transform=\"rotate(-90 %.1f "
        "%.1f)\">firing frequency (fraction of tokens)%s</text>\n",
        28.0, PLOT_Y + PLOT_H / 2, 28.0, PLOT_Y + PLOT_H / 2, a->log ? ", log scale" : "");
    out(o, "</g>\n");
}

static void plot_curve(struct plot_out *o, const struct plot_axis *a, int l, int n_layers, const float *freq,
                       int64_t n) {
    char color[8];
    plot_color(layer_t(l, n_layers), color);
    out(o, "<path class=\"layer\" data-layer=\"%d\" stroke=\"%s\" d=\"", l, color);
    if (n < (int64_t)PLOT_W / 2) {
        /* few neurons: a step per neuron over its share [i/n, (i+1)/n) of the
         * axis, so that even a layer of one neuron is a visible line */
        for (int64_t i = 0; i < n; i++) {
            double y = plot_y(a, freq[i]);
            if (i == 0) out(o, "M%.1f %.1f", PLOT_X, y);
            else out(o, " V%.1f", y);
            out(o, " H%.1f", PLOT_X + PLOT_W * (double)(i + 1) / (double)n);
        }
    } else {
        /* at most one point per pixel column, the first and last rank always */
        int64_t n_pts = n <= (int64_t)PLOT_W ? n : (int64_t)PLOT_W + 1;
        for (int64_t k = 0; k < n_pts; k++) {
            int64_t i = n_pts == n ? k : (int64_t)llround((double)k * (double)(n - 1) / (double)(n_pts - 1));
            double x = PLOT_X + PLOT_W * ((double)i + 0.5) / (double)n, y = plot_y(a, freq[i]);
            out(o, "%s%.1f %.1f", k == 0 ? "M" : k == 1 ? " L" : " ", x, y);
        }
    }
    out(o, "\"><title>layer %d: %lld neurons, top %.3g, median %.3g</title></path>\n", l, (long long)n,
        n > 0 ? (double)freq[0] : 0.0, n > 0 ? (double)freq[n / 2] : 0.0);
}

static void plot_legend(struct plot_out *o, int n_layers) {
    double x = PLOT_X + PLOT_W + 25;
    char color[8];
    out(o, "<g font-size=\"12\" fill=\"#333\">\n");
    if (n_layers <= PLOT_LEGEND_MAX) {
        for (int l = 0; l < n_layers; l++) {
            double y = PLOT_Y + 10 + 20.0 * l;
            plot_color(layer_t(l, n_layers), color);
            out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n", x, y,
                x + 24, y, color);
            out(o, "<text x=\"%.1f\" y=\"%.1f\">layer %d</text>\n", x + 30, y + 4, l);
        }
        out(o, "</g>\n");
        return;
    }
    /* colour bar: layer 0 at the bottom, the last layer at the top */
    double w = 18, y0 = PLOT_Y, h = PLOT_H;
    out(o, "<defs><linearGradient id=\"depth\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (int k = 0; k <= 8; k++) {
        plot_color(k / 8.0, color);
        out(o, "<stop offset=\"%g\" stop-color=\"%s\"/>", k / 8.0, color);
    }
    out(o, "</linearGradient></defs>\n");
    out(o, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"url(#depth)\" stroke=\"#333\"/>\n", x,
        y0, w, h);
    int step = (int)nice_step(n_layers - 1);
    if (step < 1) step = 1;
    for (int l = 0; l < n_layers; l += step) {
        if (l != 0 && n_layers - 1 - l < step / 2) continue; /* too close to the last label */
        double y = y0 + h * (1.0 - layer_t(l, n_layers));
        out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x + w, y, x + w + 5, y);
        out(o, "<text x=\"%.1f\" y=\"%.1f\">%d</text>\n", x + w + 8, y + 4, l);
    }
    out(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x + w, y0, x + w + 5, y0);
    out(o, "<text x=\"%.1f\" y=\"%.1f\">%d</text>\n", x + w + 8, y0 + 4, n_layers - 1);
    out(o,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" transform=\"rotate(-90 %.1f "
        "%.1f)\">layer (depth)</text>\n",
        x + w + 45, y0 + h / 2, x + w + 45, y0 + h / 2);
    out(o, "</g>\n");
}

static int plot_validate(int n_layers, const float *const *freq, const int64_t *n, char *err, size_t errlen) {
    if (n_layers < 1 || !freq || !n) {
        snprintf(err, errlen, "plot: no layers to plot (n_layers = %d)", n_layers);
        return -1;
    }
    for (int l = 0; l < n_layers; l++) {
        if (n[l] < 0 || (n[l] > 0 && !freq[l])) {
            snprintf(err, errlen, "plot: layer %d: %s for %lld neurons", l, n[l] < 0 ? "negative count" : "no data",
                     (long long)n[l]);
            return -1;
        }
        for (int64_t i = 0; i < n[l]; i++) {
            if (!(freq[l][i] >= 0.0f && isfinite(freq[l][i]))) {
                snprintf(err, errlen, "plot: layer %d: frequency %g of neuron rank %lld is not a finite number >= 0", l,
                         (double)freq[l][i], (long long)i);
                return -1;
            }
        }
    }
    return 0;
}

int plot_firing_svg_file(FILE *f, const char *name, const char *title, int n_layers,
                         const float *const *freq_sorted, const int64_t *n, char *err, size_t errlen) {
    if (plot_validate(n_layers, freq_sorted, n, err, errlen) < 0) return -1;
    /* the y range: top of the data, smallest positive value */
    double top = 0.0, small = INFINITY;
    int64_t n_total = 0;
    for (int l = 0; l < n_layers; l++) {
        n_total += n[l];
        for (int64_t i = 0; i < n[l]; i++) {
            double v = freq_sorted[l][i];
            if (v > top) top = v;
            if (v > 0.0 && v < small) small = v;
        }
    }
    struct plot_axis a = {0, 0.0, 1.0};
    if (top > 0.0 && log10(top / small) >= PLOT_MIN_DECADES) {
        a.log = 1;
        double d1 = ceil(log10(top) - 1e-9), d0 = floor(log10(small) + 1e-9);
        if (d0 < d1 - PLOT_MAX_DECADES) d0 = d1 - PLOT_MAX_DECADES;
        a.lo = pow(10.0, d0);
        a.hi = pow(10.0, d1);
    } else if (top > 0.0) {
        double step = nice_step(top);
        a.hi = ceil(top / step - 1e-9) * step;
    }
    int64_t floored = 0; /* neurons drawn on a log axis's floor */
    if (a.log)
        for (int l = 0; l < n_layers; l++)
            for (int64_t i = 0; i < n[l]; i++) floored += freq_sorted[l][i] < a.lo;

    struct plot_out o = {f, 0};
    out(&o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
        "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
        PLOT_CANVAS_W, PLOT_CANVAS_H, PLOT_CANVAS_W, PLOT_CANVAS_H);
    out(&o, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    out(&o, "<text x=\"%.1f\" y=\"30\" text-anchor=\"middle\" font-size=\"18\" font-weight=\"bold\">",
        PLOT_X + PLOT_W / 2);
    out_text(&o, title ? title : "");
    out(&o, "</text>\n");
    out(&o,
        "<text x=\"%.1f\" y=\"52\" text-anchor=\"middle\" font-size=\"12\" fill=\"#555\">%d layers, %lld neurons; "
        "each curve one layer's neurons sorted by how often they fire</text>\n",
        PLOT_X + PLOT_W / 2, n_layers, (long long)n_total);
    plot_axes(&o, &a);
    out(&o, "<g fill=\"none\" stroke-width=\"1.5\" stroke-opacity=\"0.85\" stroke-linejoin=\"round\" "
            "stroke-linecap=\"round\">\n");
    /* deepest layer first, so the shallow (dark) curves stay on top */
    for (int l = n_layers - 1; l >= 0; l--) plot_curve(&o, &a, l, n_layers, freq_sorted[l], n[l]);
    out(&o, "</g>\n");
    plot_legend(&o, n_layers);
    if (floored)
        out(&o,
            "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" fill=\"#555\">%lld neurons fire less often than %g "
            "(or never) and are drawn on the bottom axis</text>\n",
            PLOT_X, PLOT_CANVAS_H - 8, (long long)floored, a.lo);
    out(&o, "</svg>\n");
    if (!o.err && fflush(f) != 0) o.err = errno ? errno : EIO;
    if (!o.err && ferror(f)) o.err = EIO;
    if (o.err) {
        snprintf(err, errlen, "plot: writing %s: %s", name, strerror(o.err));
        return -1;
    }
    return 0;
}

int plot_firing_svg(const char *path, const char *title, int n_layers, const float *const *freq_sorted,
                    const int64_t *n, char *err, size_t errlen) {
    if (!path || !*path) {
        snprintf(err, errlen, "plot: no output path");
        return -1;
    }
    if (plot_validate(n_layers, freq_sorted, n, err, errlen) < 0) return -1;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) { /* a device or pipe: never rename over it */
        FILE *f = fopen(path, "w");
        if (!f) {
            snprintf(err, errlen, "plot: cannot open %s: %s", path, strerror(errno));
            return -1;
        }
        int rc = plot_firing_svg_file(f, path, title, n_layers, freq_sorted, n, err, errlen);
        if (fclose(f) != 0 && rc == 0) {
            snprintf(err, errlen, "plot: writing %s: %s", path, strerror(errno));
            rc = -1;
        }
        return rc;
    }
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    if (!tmp) {
        snprintf(err, errlen, "plot: out of memory");
        return -1;
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "plot: cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int rc = plot_firing_svg_file(f, tmp, title, n_layers, freq_sorted, n, err, errlen);
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "plot: writing %s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "plot: cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = -1;
    }
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}
