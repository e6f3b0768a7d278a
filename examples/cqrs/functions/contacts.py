import json

from nimbus import HostError, Response


def update(req, ctx):
    """PUT /contacts/ID {"name", "email", "street", "city", "zip"}: the header and the address
    are separate events, published together with the reply."""
    body = req.json() or {}
    contact = req.params["id"]
    header = {k: body[k] for k in ("name", "email") if k in body}
    address = {k: body[k] for k in ("street", "city", "zip") if k in body}
    if header:
        ctx.output("events", {"contact": contact, **header}, {"type": "contact.header.changed", "subject": contact})
    if address:
        ctx.output("events", {"contact": contact, **address}, {"type": "contact.address.changed", "subject": contact})
    return Response(json.dumps({"contact": contact, "events": int(bool(header)) + int(bool(address))}),
                    status=202, content_type="application/json")


def project(req, ctx):
    """Merges one event into contacts/ID with optimistic concurrency: events for one contact
    may be projected at the same time, and neither update may be lost."""
    event = req.json()
    contact = event.pop("contact")
    kind = req.attributes.get("type", "")
    for _ in range(20):
        found = ctx.state_get("contacts", contact)
        model = json.loads(found[0]) if found else {"id": contact}
        if kind == "contact.address.changed":
            model["address"] = ", ".join(str(event[k]) for k in ("street", "zip", "city") if k in event)
            model.update({"street": event.get("street"), "city": event.get("city"), "zip": event.get("zip")})
        else:
            model.update(event)
        model["version"] = model.get("version", 0) + 1
        try:
            ctx.state_put("contacts", contact, json.dumps(model), if_match=found[1] if found else "")
            return None
        except HostError as e:
            if not e.conflict:
                raise
    raise RuntimeError("too much contention on contact " + contact)  # retried by the trigger


def query(req, ctx):
    found = ctx.state_get("contacts", req.params["id"])
    if found is None:
        return Response(json.dumps({"error": "no such contact"}), status=404, content_type="application/json")
    return Response(found[0], content_type="application/json")
