import json
import uuid

from nimbus import Response


def place(req, ctx):
    order = req.json()
    order_id = order.get("id") or uuid.uuid4().hex[:8]
    tier = "vip" if order.get("vip") else "std"
    # Published with the reply: the 201 means every subscriber will get its copy.
    ctx.output("placed", {"id": order_id, **order}, {"type": "order.placed", "subject": f"{tier}/{order_id}"})
    return Response(json.dumps({"id": order_id}), status=201, content_type="application/json")


def email(req, ctx):
    order = req.json()
    ctx.output("log", {"to": order.get("email", "?"), "order": order["id"]}, {"key": order["id"]})


def loyalty(req, ctx):
    order = req.json()
    ctx.output("log", {"points": int(order.get("total", 0))}, {"key": order["id"]})


def seen(req, ctx):
    found = ctx.state_get(req.params["store"], req.params["id"])
    if found is None:
        return Response('{"seen": false}', status=404, content_type="application/json")
    return found[0]
