import hashlib


def build(req, ctx):
    """Runs from the queue behind POST /reports: the caller already has its 202."""
    spec = req.json() or {}
    rows = int(spec.get("rows", 1000))
    digest = hashlib.sha256()
    for i in range(rows):  # stands in for real work
        digest.update(str(i).encode())
    report = {"title": spec.get("title", "report"), "rows": rows, "checksum": digest.hexdigest()[:16]}
    ctx.output("notify", {"job": ctx.message_id, "title": report["title"]})  # the job id is the message id
    return report


def notify(req, ctx):
    note = req.json()
    ctx.log.info("report ready: " + note["title"])
    ctx.output("sent", {"title": note["title"], "message_id": ctx.message_id}, {"key": note["job"]})


def sent(req, ctx):
    found = ctx.state_get("notifications", req.params["id"])
    if found is None:
        from nimbus import Response
        return Response('{"error": "no notification yet"}', status=404, content_type="application/json")
    return found[0]
