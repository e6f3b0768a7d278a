import json

# The reference data the enrich stage looks up (a real pipeline would read a table).
CATALOG = {
    "apple": {"unit_price": 0.50, "category": "fruit"},
    "pear": {"unit_price": 1.25, "category": "fruit"},
    "coffee": {"unit_price": 7.90, "category": "pantry"},
}
REGIONS = {"de": "eu", "fr": "eu", "us": "na", "ca": "na"}


def ingest(req, ctx):
    """POST /orders with one JSON order per line: {"id", "customer", "sku", "quantity", "country"}."""
    accepted = 0
    for line in req.text().splitlines():
        if not line.strip():
            continue
        try:
            order = json.loads(line)
            key = str(order.get("customer", ""))
        except ValueError:
            order, key = {"raw": line}, ""  # kept as it came: validate rejects it with the reason
        ctx.output("raw", order, {"key": key, "type": "order.received"})
        accepted += 1
    return {"accepted": accepted}


def problems(order):
    if "raw" in order:
        return "not JSON: " + order["raw"][:80]
    missing = [k for k in ("id", "customer", "sku", "quantity", "country") if k not in order]
    if missing:
        return "missing " + ", ".join(missing)
    if order["sku"] not in CATALOG:
        return "unknown sku " + str(order["sku"])
    if not isinstance(order["quantity"], int) or order["quantity"] <= 0:
        return "quantity must be a positive whole number"
    return None


def validate(req, ctx):
    """A batch of raw records, in order per customer: each goes on, or is rejected with why."""
    for record in req.json():
        order = record["data"]
        why = problems(order)
        if why:
            ctx.output("rejected", {"order": order, "reason": why, "offset": record["offset"]},
                       {"type": "order.rejected"})
        else:
            ctx.output("valid", order, {"type": "order.valid", "subject": order["customer"]})


def enrich(req, ctx):
    order = req.json()
    item = CATALOG[order["sku"]]
    order["unit_price"] = item["unit_price"]
    order["category"] = item["category"]
    order["total"] = round(order["quantity"] * item["unit_price"], 2)
    order["region"] = REGIONS.get(order["country"], "other")
    ctx.output("enriched", order, {"key": order["customer"], "type": "order.enriched"})


def store(req, ctx):
    """Adds a batch to each customer's totals. The new totals are outputs, committed together
    with the stream checkpoint: if the host dies first, neither lands and the batch is read
    again, so no order is counted twice."""
    totals = {}
    for record in req.json():
        order = record["data"]
        c = order["customer"]
        if c not in totals:
            found = ctx.state_get("customer-totals", c)
            totals[c] = json.loads(found[0]) if found else {"customer": c, "orders": 0, "spent": 0.0,
                                                            "by_category": {}}
        t = totals[c]
        t["orders"] += 1
        t["spent"] = round(t["spent"] + order["total"], 2)
        t["by_category"][order["category"]] = round(t["by_category"].get(order["category"], 0) + order["total"], 2)
        t["region"] = order["region"]
    for c, t in totals.items():
        ctx.output("totals", t, {"key": c})


def customer(req, ctx):
    from nimbus import Response
    found = ctx.state_get("customer-totals", req.params["id"])
    if not found:
        return Response(json.dumps({"error": "no orders for this customer yet"}), status=404,
                        content_type="application/json")
    return json.loads(found[0])
