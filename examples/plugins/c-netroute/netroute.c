// netroute: route by client network, as a Fulcrum selector plugin in C.
//
// The balancer's `lbmethod_config` maps IPv4 networks to member routes, in file order:
//
//     [balancer.app.lbmethod_config]
//     "10.1.0.0/16" = "eu"
//     "192.168.0.0/24" = "office"
//
// A client in a listed network goes to the member with that route (the first network that
// matches wins) while that member is a candidate; every other request goes round robin over the
// candidates. Bindings: `fulcrum plugin bindings c`; build: build.sh.
//
// Ownership, as wit-bindgen's C generator defines it: an export owns its arguments and frees
// them; what it returns is freed by the generated post-return function, so it is malloc'ed.

#include <stdlib.h>
#include <string.h>

#include "selector_plugin.h"

typedef exports_fulcrum_plugin_selector_balancer_info_t balancer_info_t;
typedef exports_fulcrum_plugin_selector_needs_t needs_t;
typedef exports_fulcrum_plugin_selector_plugin_error_t plugin_error_t;
typedef exports_fulcrum_plugin_selector_request_view_t request_view_t;
typedef exports_fulcrum_plugin_selector_state_t state_t;
typedef exports_fulcrum_plugin_selector_decision_t decision_t;

// One configured network and the member index it routes to (-1: no member has that route).
typedef struct {
    uint32_t net;
    uint32_t mask;
    int32_t member;
} rule_t;

static rule_t *rules;
static size_t rule_count;
static uint32_t turn;

// Parse a dotted IPv4 address of exactly `len` bytes. Returns 0 when it is not one.
static int parse_ipv4(const uint8_t *s, size_t len, uint32_t *out) {
    uint32_t addr = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.') return 0;
            i++;
        }
        size_t start = i;
        uint32_t value = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3) value = value * 10 + (s[i++] - '0');
        if (i == start || value > 255) return 0;
        addr = (addr << 8) | value;
    }
    if (i != len) return 0;
    *out = addr;
    return 1;
}

// Parse `a.b.c.d/n`. Returns 0 when it is not an IPv4 network.
static int parse_cidr(const selector_plugin_string_t *s, uint32_t *net, uint32_t *mask) {
    const uint8_t *slash = memchr(s->ptr, '/', s->len);
    if (slash == NULL) return 0;
    size_t addr_len = (size_t)(slash - s->ptr), bits_len = s->len - addr_len - 1;
    if (bits_len == 0 || bits_len > 2) return 0;
    uint32_t bits = 0;
    for (size_t i = 0; i < bits_len; i++) {
        uint8_t c = slash[1 + i];
        if (c < '0' || c > '9') return 0;
        bits = bits * 10 + (c - '0');
    }
    if (bits > 32 || !parse_ipv4(s->ptr, addr_len, net)) return 0;
    *mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
    *net &= *mask;
    return 1;
}

static int same(const selector_plugin_string_t *a, const selector_plugin_string_t *b) {
    return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

static void invalid_option(plugin_error_t *err, const selector_plugin_string_t *key, const char *why) {
    err->tag = FULCRUM_PLUGIN_TYPES_PLUGIN_ERROR_INVALID_OPTION;
    selector_plugin_string_dup_n(&err->val.invalid_option.f0, (const char *)key->ptr, key->len);
    selector_plugin_string_dup(&err->val.invalid_option.f1, why);
}

bool exports_fulcrum_plugin_selector_configure(balancer_info_t *balancer, needs_t *ret, plugin_error_t *err) {
    selector_plugin_list_tuple2_string_string_t *options = &balancer->config.options;
    rule_t *parsed = calloc(options->len ? options->len : 1, sizeof(rule_t));
    bool ok = parsed != NULL;
    for (size_t i = 0; ok && i < options->len; i++) {
        const selector_plugin_string_t *key = &options->ptr[i].f0, *route = &options->ptr[i].f1;
        if (!parse_cidr(key, &parsed[i].net, &parsed[i].mask)) {
            invalid_option(err, key, "not an IPv4 network (`10.0.0.0/8`)");
            ok = false;
            break;
        }
        parsed[i].member = -1;
        for (size_t m = 0; m < balancer->members.len; m++) {
            if (same(&balancer->members.ptr[m].route, route)) {
                parsed[i].member = (int32_t)m;
                break;
            }
        }
        if (parsed[i].member < 0) {
            invalid_option(err, key, "no member of this balancer has that route");
            ok = false;
        }
    }
    if (ok) {
        free(rules);
        rules = parsed;
        rule_count = options->len;
        turn = 0;
        ret->fields = FULCRUM_PLUGIN_TYPES_REQUEST_FIELDS_CLIENT_ADDR;
        ret->headers.ptr = NULL;
        ret->headers.len = 0;
        ret->columns = 0;
    } else {
        free(parsed);
    }
    exports_fulcrum_plugin_selector_balancer_info_free(balancer);
    return ok;
}

static bool is_candidate(const state_t *state, uint32_t member) {
    for (size_t i = 0; i < state->candidates.len; i++)
        if (state->candidates.ptr[i] == member) return true;
    return false;
}

// `request` is NULL only for a selector that declared no request fields and no headers; this one
// declared the client's address, so it always has one.
void exports_fulcrum_plugin_selector_select(request_view_t *request, state_t *state, decision_t *ret) {
    uint32_t client;
    int32_t chosen = -1;
    if (request != NULL && parse_ipv4(request->client_addr.ptr, request->client_addr.len, &client)) {
        for (size_t i = 0; i < rule_count; i++) {
            if ((client & rules[i].mask) == rules[i].net) {
                if (is_candidate(state, (uint32_t)rules[i].member)) chosen = rules[i].member;
                break;
            }
        }
    }
    if (chosen < 0) chosen = (int32_t)state->candidates.ptr[turn++ % state->candidates.len];
    ret->member.is_some = true;
    ret->member.val = (uint32_t)chosen;
    ret->lbstatus.ptr = NULL;
    ret->lbstatus.len = 0;
    if (request != NULL) exports_fulcrum_plugin_selector_request_view_free(request);
    exports_fulcrum_plugin_selector_state_free(state);
}

void exports_fulcrum_plugin_selector_sticky(uint32_t member, state_t *state, selector_plugin_list_s64_t *ret) {
    (void)member;
    ret->ptr = NULL;
    ret->len = 0;
    exports_fulcrum_plugin_selector_state_free(state);
}
