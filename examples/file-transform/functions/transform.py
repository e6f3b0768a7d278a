import csv
import io
import json
import os

OUTBOX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "outbox")


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def transform(req, ctx):
    """One dropped CSV (header line first): rows -> outbox/<name>.json, plus a summary.
    A malformed file raises: retried once, then it lands in inbox/failed/ with the reason."""
    name = req.metadata["file.name"]
    text = req.body.decode("utf-8")  # not UTF-8: UnicodeDecodeError, which is the reason given
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise ValueError(name + " is empty; expected a header line and rows")
    header, body = rows[0], [r for r in rows[1:] if r]
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError("line %d has %d fields, the header has %d" % (n, len(row), len(header)))
    records = [dict(zip(header, row)) for row in body]
    os.makedirs(OUTBOX, exist_ok=True)
    target = os.path.join(OUTBOX, os.path.splitext(name)[0] + ".json")
    with open(target + ".tmp", "w") as f:  # written whole, then renamed: readers never see half
        json.dump(records, f, indent=1)
    os.replace(target + ".tmp", target)
    sums = {}
    for column in header:
        values = [number(r[column]) for r in records]
        if records and all(v is not None for v in values):
            sums[column] = round(sum(values), 6)
    summary = {"file": name, "rows": len(records), "columns": header, "sums": sums,
               "json": os.path.relpath(target, os.path.join(OUTBOX, ".."))}
    ctx.output("summary", summary, {"key": name})
    ctx.log.info("transformed %s: %d rows" % (name, len(records)))


def summary(req, ctx):
    from nimbus import Response
    found = ctx.state_get("summaries", req.params["name"])
    if not found:
        return Response(json.dumps({"error": "no such file transformed"}), status=404,
                        content_type="application/json")
    return json.loads(found[0])
