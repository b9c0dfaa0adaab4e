"""canary: header-based canary routing, as a Fulcrum selector plugin in Python.

Requests carrying `x-canary: 1` go to the member whose route is the `canary_route` option
(default `canary`) when it is a candidate; every other request goes round robin over the other
candidates (the canary is used for them only when nothing else is left).
"""

from typing import Optional

from wit_world import exports
from wit_world.exports import selector
from wit_world.imports import types
from componentize_py_types import Err


# The plugin's state lives at module level: componentize-py may not call every export on the
# same `Selector` object.
STATE = {"canary_route": "canary", "routes": [], "turn": 0}


class Selector(exports.Selector):
    def configure(self, balancer: selector.BalancerInfo) -> selector.Needs:
        options = dict(balancer.config.options)
        canary_route = options.pop("canary_route", "canary")
        if options:
            key = next(iter(options))
            raise Err(types.PluginError_InvalidOption((key, "unknown option (known: canary_route)")))
        STATE.update(canary_route=canary_route, routes=[m.route for m in balancer.members], turn=0)
        return selector.Needs(
            fields=types.RequestFields(0),
            headers=["x-canary"],
            columns=selector.StateColumns(0),
        )

    # `request` is None only for a selector that declared no request fields and no headers; this
    # one declared its header.
    def select(self, request: Optional[types.RequestView], state: selector.State) -> selector.Decision:
        routes, canary_route = STATE["routes"], STATE["canary_route"]
        canary = [i for i in state.candidates if routes[i] == canary_route]
        headers = request.headers if request is not None else []
        wants_canary = any(name == "x-canary" and value == "1" for name, value in headers)
        if wants_canary and canary:
            return selector.Decision(member=canary[0], lbstatus=[])
        others = [i for i in state.candidates if i not in canary] or list(state.candidates)
        member = others[STATE["turn"] % len(others)]
        STATE["turn"] += 1
        return selector.Decision(member=member, lbstatus=[])

    def sticky(self, member: int, state: selector.State) -> list[int]:
        return []
