/*
 * Nix's own choice of build machine, in C: the same rules, order and words as the default
 * policy (policies/default/src/logic.rs), so that this component and the default give the
 * same answer, rejections included.
 *
 *  - A machine is eligible ("the right type") when it is enabled, builds the derivation's
 *    system (`builtin` builds everywhere), supports every required feature (supported +
 *    mandatory), and every one of its mandatory features is required by the derivation.
 *  - Among eligible machines with a free slot (slots-in-use < max-jobs), the best has the
 *    lowest slots-in-use / speed-factor (IEEE double division), then the highest speed
 *    factor, then the lowest load; ties go to the machine listed first (a stable sort).
 *  - With no such machine: postpone when some eligible machine exists (it is only busy) and
 *    Nix cannot build locally right now (!(am-willing && could-build-locally)); else decline.
 *  - Every machine not ranked gets a reason, in file order.
 *
 * The bindings (policy_world.h/.c) are generated from wit/ by `cargo xtask
 * build-other-policies` with wit-bindgen's C generator; nothing generated is committed. The
 * arguments belong to this call's fresh instance, so nothing is freed here; what is returned
 * is malloc'd, and the generated post-return function frees it. Uses only the parts of
 * wasi-libc that import nothing (malloc, string.h), so the component imports nothing.
 */

#include <stdlib.h>
#include <string.h>

#include "policy_world.h"

typedef exports_nix_wasm_hook_policy_policy_request_t request_t;
typedef exports_nix_wasm_hook_policy_policy_machine_t machine_t;
typedef exports_nix_wasm_hook_policy_policy_list_machine_t machines_t;
typedef exports_nix_wasm_hook_policy_policy_rejection_t rejection_t;
typedef exports_nix_wasm_hook_policy_policy_answer_t answer_t;
typedef policy_world_string_t string_t;
typedef policy_world_list_string_t strings_t;

/* A growable byte buffer; its bytes become a WIT string (no terminating NUL). */
typedef struct {
    char *ptr;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *p = realloc(b->ptr, cap);
        if (!p) {
            abort();
        }
        b->ptr = p;
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
}

static void buf_cstr(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_wit(buf_t *b, const string_t *s) { buf_add(b, (const char *)s->ptr, s->len); }

static void buf_u32(buf_t *b, uint32_t v) {
    char digits[10];
    size_t i = sizeof digits;
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_add(b, digits + i, sizeof digits - i);
}

static bool str_eq(const string_t *a, const string_t *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

static bool str_is(const string_t *a, const char *s) {
    size_t n = strlen(s);
    return a->len == n && memcmp(a->ptr, s, n) == 0;
}

static bool contains(const strings_t *list, const string_t *s) {
    for (size_t i = 0; i < list->len; i++) {
        if (str_eq(&list->ptr[i], s)) {
            return true;
        }
    }
    return false;
}

/* Appends why `m` is not eligible for `r`, one phrase per broken rule joined with "; ", in
 * Nix's order of checks. Returns the number of phrases (0: eligible). */
static int eligibility_problems(const request_t *r, const machine_t *m, buf_t *b) {
    int n = 0;
#define NEXT() \
    if (n++) buf_cstr(b, "; ")
    if (!m->enabled) {
        NEXT();
        if (m->down_reason.is_some) {
            buf_wit(b, &m->down_reason.val);
        } else {
            buf_cstr(b, "disabled: connection failed earlier");
        }
    }
    if (!str_is(&r->system, "builtin") && !contains(&m->systems, &r->system)) {
        NEXT();
        buf_cstr(b, "system `");
        buf_wit(b, &r->system);
        buf_cstr(b, "` is not among its systems (");
        if (m->systems.len == 0) {
            buf_cstr(b, "none");
        }
        for (size_t i = 0; i < m->systems.len; i++) {
            if (i) {
                buf_cstr(b, ", ");
            }
            buf_wit(b, &m->systems.ptr[i]);
        }
        buf_cstr(b, ")");
    }
    for (size_t i = 0; i < r->required_features.len; i++) {
        const string_t *f = &r->required_features.ptr[i];
        if (!contains(&m->supported_features, f) && !contains(&m->mandatory_features, f)) {
            NEXT();
            buf_cstr(b, "does not support the required feature `");
            buf_wit(b, f);
            buf_cstr(b, "`");
        }
    }
    for (size_t i = 0; i < m->mandatory_features.len; i++) {
        const string_t *f = &m->mandatory_features.ptr[i];
        if (!contains(&r->required_features, f)) {
            NEXT();
            buf_cstr(b, "mandatory feature `");
            buf_wit(b, f);
            buf_cstr(b, "` is not among the derivation's required features");
        }
    }
#undef NEXT
    return n;
}

/* Appends why an eligible machine cannot take a build now; false when it has a free slot. */
static bool busy_reason(const machine_t *m, buf_t *b) {
    if (m->max_jobs == 0) {
        buf_cstr(b, "max-jobs is 0: it never takes a build");
    } else if (m->slots_in_use >= m->max_jobs) {
        if (m->max_jobs == 1) {
            buf_cstr(b, "its 1 slot is in use");
        } else {
            buf_cstr(b, "all ");
            buf_u32(b, m->max_jobs);
            buf_cstr(b, " slots in use");
        }
    } else {
        return false;
    }
    return true;
}

/* Orders doubles as `<` does, with NaN after every number (and equal to NaN). */
static int cmp_double(double a, double b) {
    bool a_nan = a != a, b_nan = b != b;
    if (a_nan || b_nan) {
        return (int)a_nan - (int)b_nan;
    }
    return (a > b) - (a < b);
}

/* Nix's order of two free machines: negative when `a` is better. */
static int compare_candidates(const machine_t *a, const machine_t *b) {
    int c = cmp_double((double)a->slots_in_use / a->speed_factor,
                       (double)b->slots_in_use / b->speed_factor);
    if (c == 0) {
        c = cmp_double(b->speed_factor, a->speed_factor);
    }
    if (c == 0) {
        c = (a->slots_in_use > b->slots_in_use) - (a->slots_in_use < b->slots_in_use);
    }
    return c;
}

void exports_nix_wasm_hook_policy_policy_decide(request_t *request, machines_t *machines,
                                                answer_t *ret) {
    size_t n = machines->len;
    uint32_t *ranked = n ? malloc(n * sizeof *ranked) : NULL;
    rejection_t *rejected = n ? malloc(n * sizeof *rejected) : NULL;
    if (n && (!ranked || !rejected)) {
        abort();
    }
    size_t n_ranked = 0, n_rejected = 0;
    bool right_type = false;
    for (size_t i = 0; i < n; i++) {
        const machine_t *m = &machines->ptr[i];
        buf_t why = {0};
        if (eligibility_problems(request, m, &why) == 0) {
            right_type = true;
            if (!busy_reason(m, &why)) {
                /* A stable insertion sort, as the default policy does: after the last
                 * ranked machine that is not worse than this one. */
                size_t at = n_ranked;
                while (at > 0 && compare_candidates(&machines->ptr[ranked[at - 1]], m) > 0) {
                    at--;
                }
                memmove(ranked + at + 1, ranked + at, (n_ranked - at) * sizeof *ranked);
                ranked[at] = (uint32_t)i;
                n_ranked++;
                continue;
            }
        }
        rejected[n_rejected].machine = (uint32_t)i;
        rejected[n_rejected].reason.ptr = (uint8_t *)why.ptr;
        rejected[n_rejected].reason.len = why.len;
        n_rejected++;
    }
    ret->rejected.ptr = rejected;
    ret->rejected.len = n_rejected;
    if (n_ranked > 0) {
        ret->decision.tag = EXPORTS_NIX_WASM_HOOK_POLICY_POLICY_DECISION_TRY;
        ret->decision.val.try_.ptr = ranked;
        ret->decision.val.try_.len = n_ranked;
        return;
    }
    free(ranked);
    bool can_build_locally = request->am_willing && request->could_build_locally;
    ret->decision.tag = right_type && !can_build_locally
                            ? EXPORTS_NIX_WASM_HOOK_POLICY_POLICY_DECISION_POSTPONE
                            : EXPORTS_NIX_WASM_HOOK_POLICY_POLICY_DECISION_DECLINE;
}
