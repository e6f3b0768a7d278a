import json


def ingest(req, ctx):
    """POST /ingest with CSV lines "sku,quantity,unit_price": one record per line."""
    lines = [line for line in req.text().splitlines() if line.strip()]
    for line in lines:
        ctx.output("raw", line, {"type": "record.raw"})
    return {"accepted": len(lines)}


def parse(req, ctx):
    sku, quantity, price = req.text().split(",")  # a malformed line raises: retried, then dead-lettered
    record = {"sku": sku.strip(), "quantity": int(quantity), "unit_price": float(price)}
    ctx.output("parsed", record, {"type": "record.parsed"})


def enrich(req, ctx):
    record = req.json()
    record["total"] = round(record["quantity"] * record["unit_price"], 2)
    ctx.output("done", record, {"type": "record.enriched", "subject": record["sku"]})
    ctx.output("totals", json.dumps({"sku": record["sku"], "total": record["total"]}),
               {"key": record["sku"] + "/" + ctx.message_id})
