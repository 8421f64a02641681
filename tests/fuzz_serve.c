/* fuzz_serve: libFuzzer target for hearth serve's request parser (coordinator/serve_req.c).
 *
 * The first byte chooses the endpoint (chat, completion, tokenize,
 * detokenize), the rest is the body. A body that parses must hold what the
 * parser promised: messages with a role and content, at most
 * SERVE_MAX_STOPS non-empty stop strings of at most SERVE_MAX_STOP_LEN
 * bytes, numbers in their ranges, one kind of prompt. Then the stop-string
 * scan runs over the body's own bytes with the parsed stop strings, held
 * back and matched against a brute-force search. A body that does not
 * parse must say why, with status 400. ASan/UBSan turn any bad access into
 * a crash.
 *
 * Built with -DSERVE_FUZZ_REPLAY (no libFuzzer), main() feeds every file of
 * the directories given on the command line (and every truncation of it)
 * through the same function, so the normal build runs this code on the seed
 * corpus (tests/fuzz/serve_corpus: the first byte '0'..'3' the endpoint). */
#include <dirent.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

#define CHECK(c)                                                                                                     \
    do {                                                                                                             \
        if (!(c)) {                                                                                                  \
            fprintf(stderr, "fuzz_serve: check failed: %s (line %d)\n", #c, __LINE__);                               \
            __builtin_trap();                                                                                        \
        }                                                                                                            \
    } while (0)

static void check_stops(const char *text, size_t len, char *const *stops, size_t n_stops) {
    size_t hold = 0;
    long at = serve_stop_find(text, len, 0, stops, n_stops, &hold);
    /* brute force: the earliest position where any stop string begins */
    long want = -1;
    for (size_t p = 0; p < len && want < 0; p++)
        for (size_t i = 0; i < n_stops; i++) {
            size_t sl = strlen(stops[i]);
            if (p + sl <= len && !memcmp(text + p, stops[i], sl)) {
                want = (long)p;
                break;
            }
        }
    CHECK(at == want);
    CHECK(hold <= len);
    if (at < 0) {
        /* what is held back is a proper prefix of some stop string, and no longer suffix is one */
        int ok = hold == 0;
        for (size_t i = 0; i < n_stops && !ok; i++)
            if (hold < strlen(stops[i]) && !memcmp(text + len - hold, stops[i], hold)) ok = 1;
        CHECK(ok);
        for (size_t k = hold + 1; k <= len; k++)
            for (size_t i = 0; i < n_stops; i++)
                CHECK(!(k < strlen(stops[i]) && !memcmp(text + len - k, stops[i], k)));
    }
}

static void one(enum serve_kind kind, const char *body, size_t len) {
    struct sampler_params def = {0.8f, 0.95f, 0.05f, 1.0f, 40, 64, SAMPLER_SEED_RANDOM};
    struct serve_request r;
    struct serve_error err;
    if (serve_parse_request(kind, body, len, &def, -1, &r, &err) != 0) {
        CHECK(err.status == 400 && err.type && err.message[0]);
        CHECK(r.msgs == NULL && r.prompt == NULL && r.tokens == NULL && r.n_stops == 0);
        return;
    }
    CHECK(r.kind == kind);
    if (kind == SERVE_CHAT) {
        CHECK(r.n_msgs >= 1 && r.n_msgs <= SERVE_MAX_MESSAGES);
        for (size_t i = 0; i < r.n_msgs; i++) {
            CHECK(r.msgs[i].role && r.msgs[i].role[0] && strlen(r.msgs[i].role) <= 32);
            CHECK(r.msgs[i].content);
            (void)strlen(r.msgs[i].content);
        }
    }
    if (kind == SERVE_COMPLETION) CHECK((r.prompt != NULL) != (r.tokens != NULL));
    if (kind == SERVE_TOKENIZE) CHECK(r.prompt && strlen(r.prompt) <= r.prompt_len);
    if (kind == SERVE_DETOKENIZE) CHECK(r.tokens && r.n_tokens <= SERVE_MAX_TOKENS_IN);
    if (kind == SERVE_CHAT || kind == SERVE_COMPLETION) {
        CHECK(r.sp.temp >= 0 && r.sp.temp <= 100 && r.sp.top_p >= 0 && r.sp.top_p <= 1 && r.sp.min_p >= 0 &&
              r.sp.min_p <= 1 && r.sp.top_k >= 0 && r.sp.repeat_penalty > 0 && r.sp.repeat_last_n >= 0);
        CHECK(r.max_tokens == -1 || r.max_tokens >= 1);
        CHECK(r.top_logprobs >= 0 && r.top_logprobs <= SERVE_MAX_TOP_LOGPROBS);
        CHECK(r.n_stops <= SERVE_MAX_STOPS);
        for (size_t i = 0; i < r.n_stops; i++) CHECK(strlen(r.stops[i]) >= 1 && strlen(r.stops[i]) <= SERVE_MAX_STOP_LEN);
        check_stops(body, len, r.stops, r.n_stops);
    }
    serve_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    one((enum serve_kind)(data[0] % 4), (const char *)data + 1, size - 1);
    return 0;
}

#ifdef SERVE_FUZZ_REPLAY
int main(int argc, char **argv) {
    int n_files = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "fuzz_serve_replay: cannot open %s\n", argv[a]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            FILE *f = fopen(path, "rb");
            if (!f) continue;
            static uint8_t buf[1 << 20];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            for (size_t cut = 1; cut <= n; cut++) LLVMFuzzerTestOneInput(buf, cut);
            n_files++;
        }
        closedir(d);
    }
    printf("fuzz_serve_replay: %d files\n", n_files);
    return n_files > 0 ? 0 : 1;
}
#endif
