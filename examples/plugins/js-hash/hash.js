// hash: consistent routing by a request header, as a Fulcrum selector plugin in JavaScript.
//
// Requests with the same value of the header (default `x-user`; option `header`) always go to
// the same member while it is a candidate, and when a member leaves only its own share of keys
// moves (rendezvous hashing: the member with the highest hash of key + member wins), like
// nginx's `hash $http_x_user consistent`. Requests without the header go round robin.
//
// Built with componentize-qjs (QuickJS, from npm): see build.sh.

let header = "x-user";
let names = [];
let turn = 0;

// 32-bit FNV-1a over the UTF-16 code units of a string, then a final avalanche.
function hash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

export const selector = {
  configure(balancer) {
    const options = new Map(balancer.config.options);
    header = (options.get("header") ?? "x-user").toLowerCase();
    options.delete("header");
    for (const key of options.keys()) {
      throw { tag: "invalid-option", val: [key, "unknown option (known: header)"] };
    }
    // A member is known by its route (or its URL when it has none), so keys stay put when the
    // member list is reordered.
    names = balancer.members.map((m) => m.route || m.name);
    turn = 0;
    return { fields: {}, headers: [header], columns: {} };
  },

  // `request` is undefined only for a selector that declared no request fields and no headers;
  // this one declared its header.
  select(request, state) {
    const sent = request?.headers.find(([name]) => name === header);
    if (sent === undefined) {
      return { member: state.candidates[turn++ % state.candidates.length], lbstatus: [] };
    }
    let best = state.candidates[0];
    let bestScore = -1;
    for (const i of state.candidates) {
      const score = hash(sent[1] + "\u0000" + names[i]);
      if (score > bestScore) {
        best = i;
        bestScore = score;
      }
    }
    return { member: best, lbstatus: [] };
  },

  sticky(member, state) {
    return [];
  },
};
