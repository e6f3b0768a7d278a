# The order's activities: ordinary functions (any runtime would do). Each records what it
# did in the state store `orders`, as a real one would call a stock or payment service.
import json


def _note(ctx, order, what):
    ctx.state_put("orders", f"{order['id']}/{what}", json.dumps(order))


def reserve_stock(req, ctx):
    order = req.json()
    _note(ctx, order, "reserved")
    return "ok"


def release_stock(req, ctx):
    order = req.json()
    _note(ctx, order, "released")
    return "ok"


def charge(req, ctx):
    order = req.json()
    if order.get("card") == "declined":
        raise RuntimeError("card declined")
    _note(ctx, order, "charged")
    return "receipt-" + order["id"]


def ship(req, ctx):
    order = req.json()
    _note(ctx, order, "shipped")
    return "track-" + order["id"]
