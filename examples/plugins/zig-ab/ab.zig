//! ab: A/B routing by cookie, as a Fulcrum selector plugin in Zig.
//!
//! The balancer's `lbmethod_config` names the cookie (default `ab`), the arm for clients without
//! it (`default`, default `a`), and each arm's member routes, space-separated:
//!
//!     lbmethod_config = { cookie = "ab", default = "a", a = "web1", b = "web2 web3" }
//!
//! A client whose cookie names an arm goes round robin over that arm's members that are
//! candidates; a client without the cookie (or with an unknown arm) gets the default arm; when
//! none of an arm's members is a candidate, the request goes round robin over all candidates.
//!
//! Bindings: `fulcrum plugin bindings c`, turned into Zig by `zig translate-c` (build.sh). As in
//! C, an export owns its arguments and frees them; what it returns is malloc'ed (the generated
//! post-return function frees it).

const std = @import("std");
const c = @import("selector_c.zig");

const alloc = std.heap.c_allocator;

const Arm = struct {
    name: []u8,
    members: []u32,
    turn: u32 = 0,
};

var arms: []Arm = &.{};
var cookie: []u8 = &.{};
var default_arm: ?usize = null;
var turn: u32 = 0;

fn slice(s: c.selector_plugin_string_t) []const u8 {
    if (s.len == 0) return "";
    return s.ptr[0..s.len];
}

fn freeArms(list: []Arm) void {
    for (list) |arm| {
        alloc.free(arm.name);
        alloc.free(arm.members);
    }
    alloc.free(list);
}

fn invalidOption(err: *c.exports_fulcrum_plugin_selector_plugin_error_t, key: []const u8, why: [:0]const u8) void {
    err.tag = c.FULCRUM_PLUGIN_TYPES_PLUGIN_ERROR_INVALID_OPTION;
    c.selector_plugin_string_dup_n(&err.val.invalid_option.f0, key.ptr, key.len);
    c.selector_plugin_string_dup(&err.val.invalid_option.f1, why.ptr);
}

const ConfigError = error{ Invalid, OutOfMemory };

fn configure(
    balancer: *c.exports_fulcrum_plugin_selector_balancer_info_t,
    err: *c.exports_fulcrum_plugin_selector_plugin_error_t,
) ConfigError!void {
    const options = balancer.config.options.ptr[0..balancer.config.options.len];
    const members = balancer.members.ptr[0..balancer.members.len];
    var cookie_name: []const u8 = "ab";
    var default_name: []const u8 = "a";
    var arm_count: usize = 0;
    for (options) |o| {
        const key = slice(o.f0);
        if (!std.mem.eql(u8, key, "cookie") and !std.mem.eql(u8, key, "default")) arm_count += 1;
    }
    const new_arms = try alloc.alloc(Arm, arm_count);
    var built: usize = 0;
    errdefer {
        for (new_arms[0..built]) |arm| {
            alloc.free(arm.name);
            alloc.free(arm.members);
        }
        alloc.free(new_arms);
    }
    for (options) |o| {
        const key = slice(o.f0);
        const value = slice(o.f1);
        if (std.mem.eql(u8, key, "cookie")) {
            if (value.len == 0) {
                invalidOption(err, key, "the cookie name is empty");
                return error.Invalid;
            }
            cookie_name = value;
            continue;
        }
        if (std.mem.eql(u8, key, "default")) {
            default_name = value;
            continue;
        }
        var indices = try alloc.alloc(u32, members.len);
        var n: usize = 0;
        var routes = std.mem.tokenizeScalar(u8, value, ' ');
        while (routes.next()) |route| {
            const found = for (members, 0..) |m, i| {
                if (std.mem.eql(u8, slice(m.route), route)) break i;
            } else null;
            if (found == null or n == members.len) {
                alloc.free(indices);
                invalidOption(err, key, "names a route that no member of this balancer has");
                return error.Invalid;
            }
            indices[n] = @intCast(found.?);
            n += 1;
        }
        if (n == 0) {
            alloc.free(indices);
            invalidOption(err, key, "an arm needs at least one member route");
            return error.Invalid;
        }
        indices = alloc.realloc(indices, n) catch indices[0..n];
        new_arms[built] = .{ .name = try alloc.dupe(u8, key), .members = indices[0..n] };
        built += 1;
    }
    var new_default: ?usize = null;
    for (new_arms, 0..) |arm, i| {
        if (std.mem.eql(u8, arm.name, default_name)) new_default = i;
    }
    if (new_default == null and new_arms.len > 0) {
        invalidOption(err, "default", "names no arm of this configuration");
        return error.Invalid;
    }
    const new_cookie = try alloc.dupe(u8, cookie_name);
    freeArms(arms);
    alloc.free(cookie);
    arms = new_arms;
    cookie = new_cookie;
    default_arm = new_default;
    turn = 0;
}

export fn exports_fulcrum_plugin_selector_configure(
    balancer: *c.exports_fulcrum_plugin_selector_balancer_info_t,
    ret: *c.exports_fulcrum_plugin_selector_needs_t,
    err: *c.exports_fulcrum_plugin_selector_plugin_error_t,
) bool {
    defer c.exports_fulcrum_plugin_selector_balancer_info_free(balancer);
    configure(balancer, err) catch |e| {
        if (e == error.OutOfMemory) {
            err.tag = c.FULCRUM_PLUGIN_TYPES_PLUGIN_ERROR_OTHER;
            c.selector_plugin_string_dup(&err.val.other, "out of memory");
        }
        return false;
    };
    // One header wanted: `cookie` (a list of one string, freed by the post-return function).
    const names: [*c]c.selector_plugin_string_t = @ptrCast(@alignCast(std.c.malloc(@sizeOf(c.selector_plugin_string_t))));
    c.selector_plugin_string_dup(&names[0], "cookie");
    ret.* = .{ .fields = 0, .headers = .{ .ptr = names, .len = 1 }, .columns = 0 };
    return true;
}

/// The arm named by the request's cookie, or the default arm.
fn armOf(headers: []const c.selector_plugin_tuple2_string_string_t) ?usize {
    for (headers) |h| {
        var pairs = std.mem.tokenizeScalar(u8, slice(h.f1), ';');
        while (pairs.next()) |pair| {
            const text = std.mem.trim(u8, pair, " ");
            const eq = std.mem.indexOfScalar(u8, text, '=') orelse continue;
            if (!std.mem.eql(u8, text[0..eq], cookie)) continue;
            for (arms, 0..) |arm, i| {
                if (std.mem.eql(u8, arm.name, text[eq + 1 ..])) return i;
            }
        }
    }
    return default_arm;
}

fn isCandidate(candidates: []const u32, member: u32) bool {
    return std.mem.indexOfScalar(u32, candidates, member) != null;
}

/// `maybe_request` is null only for a selector that declared no request fields and no headers;
/// this one declared the cookie header.
export fn exports_fulcrum_plugin_selector_select(
    maybe_request: ?*c.exports_fulcrum_plugin_selector_request_view_t,
    state: *c.exports_fulcrum_plugin_selector_state_t,
    ret: *c.exports_fulcrum_plugin_selector_decision_t,
) void {
    defer if (maybe_request) |request| c.exports_fulcrum_plugin_selector_request_view_free(request);
    defer c.exports_fulcrum_plugin_selector_state_free(state);
    const candidates = state.candidates.ptr[0..state.candidates.len];
    var chosen: ?u32 = null;
    const arm_index = if (maybe_request) |request| armOf(request.headers.ptr[0..request.headers.len]) else null;
    if (arm_index) |i| {
        const arm = &arms[i];
        // Round robin over the arm's members, skipping those that are not candidates.
        for (0..arm.members.len) |_| {
            const m = arm.members[arm.turn % arm.members.len];
            arm.turn +%= 1;
            if (isCandidate(candidates, m)) {
                chosen = m;
                break;
            }
        }
    }
    if (chosen == null) {
        chosen = candidates[turn % candidates.len];
        turn +%= 1;
    }
    ret.* = .{ .member = .{ .is_some = true, .val = chosen.? }, .lbstatus = .{ .ptr = null, .len = 0 } };
}

export fn exports_fulcrum_plugin_selector_sticky(
    member: u32,
    state: *c.exports_fulcrum_plugin_selector_state_t,
    ret: *c.selector_plugin_list_s64_t,
) void {
    _ = member;
    c.exports_fulcrum_plugin_selector_state_free(state);
    ret.* = .{ .ptr = null, .len = 0 };
}
