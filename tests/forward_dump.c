/* forward_dump: runs the dense forward pass on given token ids and dumps its
 * logits, for comparison with the independent NumPy reference
 * (tests/test_forward_ref.py).
 *
 *   forward_dump -m MODEL -n N_GEN -o LOGITS.f32 [-t THREADS] ID [ID ...]
 *
 * Writes float32 little-endian logits, row-major [n_prompt + N_GEN, n_vocab]:
 * rows 0..n_prompt-1 are the logits after each prompt position, from one
 * batched prefill; generated token g0 is argmax of row n_prompt-1 (ties: the
 * lowest id); row n_prompt+k holds the logits after feeding g_k, and g_{k+1}
 * is its argmax. Prints g_0 .. g_{N_GEN-1} on stdout, space-separated.
 * The weights are repacked as `hearth run --single-process` repacks them
 * (every matrix in the 8-row layout where its type has one), so the oracle
 * checks the kernels users run; --no-repack keeps the file's row layout
 * (the two must agree bit for bit, see test_forward_ref.py). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "model.h"

static int32_t argmax(const float *v, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL;
    int n_gen = 0, n_threads = 2, repack = 1;
    int32_t *prompt = calloc((size_t)argc, sizeof *prompt);
    int n_prompt = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-repack")) repack = 0;
        else prompt[n_prompt++] = (int32_t)atoi(argv[i]);
    }
    if (!model_path || !out_path || n_prompt < 1 || n_gen < 0 || n_threads < 1) {
        fprintf(stderr, "usage: forward_dump -m MODEL -n N_GEN -o LOGITS.f32 [-t THREADS] [--no-repack] ID [ID ...]\n");
        return 2;
    }
    char err[1024];
    struct llama_model m;
    if (model_load(&m, model_path, err, sizeof err) != 0) {
        fprintf(stderr, "forward_dump: %s\n", err);
        return 1;
    }
    if (repack && model_repack_all(&m, 1, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "forward_dump: repack: %s\n", err);
        return 1;
    }
    const int n_vocab = m.cfg.n_vocab, n_rows = n_prompt + n_gen;
    struct llama_state st;
    if (state_create(&st, &m, n_rows, n_prompt, n_threads, err, sizeof err) != 0) {
        fprintf(stderr, "forward_dump: %s\n", err);
        return 1;
    }
    float *logits = malloc((size_t)n_rows * n_vocab * sizeof *logits);
    FILE *out = fopen(out_path, "wb");
    if (!logits || !out) {
        fprintf(stderr, "forward_dump: cannot open %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    if (forward(&st, prompt, n_prompt, 0, logits, 1, err, sizeof err) != 0) {
        fprintf(stderr, "forward_dump: %s\n", err);
        return 1;
    }
    int32_t tok = argmax(logits + (size_t)(n_prompt - 1) * n_vocab, n_vocab);
    for (int k = 0; k < n_gen; k++) {
        printf(k ? " %d" : "%d", tok);
        float *row = logits + (size_t)(n_prompt + k) * n_vocab;
        if (forward(&st, &tok, 1, n_prompt + k, row, 0, err, sizeof err) != 0) {
            fprintf(stderr, "forward_dump: %s\n", err);
            return 1;
        }
        tok = argmax(row, n_vocab);
    }
    printf("\n");
    if (fwrite(logits, sizeof *logits, (size_t)n_rows * n_vocab, out) != (size_t)n_rows * n_vocab ||
        fclose(out) != 0) {
        fprintf(stderr, "forward_dump: writing %s failed: %s\n", out_path, strerror(errno));
        return 1;
    }
    free(logits);
    free(prompt);
    state_free(&st);
    model_free(&m);
    return 0;
}
