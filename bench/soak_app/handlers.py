# Python handlers of the soak app (bench/soak.sh).


def hello(req, ctx):
    return "Hello, World!"


def sink(req, ctx):
    """A stream batch (a JSON array of records): one message per record on `seen`, committed
    with the batch's checkpoint, so the soak test can count that every record was taken once."""
    records = req.json()
    for r in records:
        ctx.output("seen", "%s:%s:%s" % (r["key"], r["partition"], r["offset"]))
    return str(len(records))
