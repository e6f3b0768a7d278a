import json
import os
import sqlite3

DB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "legacy.db")
COUNTRIES = {"germany": "DE", "finland": "FI", "united states": "US", "united kingdom": "GB", "france": "FR"}
UNKNOWN_DATE = "1970-01-01"  # the legacy system's own convention for "not recorded"


def repairs(row):
    """The changes a row needs, as {column: new value}."""
    _id, email, country, signed_up = row
    fix = {}
    if email != email.strip().lower():
        fix["email"] = email.strip().lower()
    code = country.strip()
    code = COUNTRIES.get(code.lower(), code.upper()) if len(code) != 2 or code != code.upper() else code
    if code != country:
        fix["country"] = code
    if signed_up is None:
        fix["signed_up"] = UNKNOWN_DATE
    return fix


def scrub(req, ctx):
    """The timer's run: every repair in one transaction, then a report (committed by the host
    with the run, so a report exists exactly for the runs that finished)."""
    timer = req.json()
    db = sqlite3.connect(DB, timeout=30)
    fixed = []
    with db:  # one transaction: the legacy database never sees half a scrub
        for row in db.execute("SELECT id, email, country, signed_up FROM customers ORDER BY id").fetchall():
            fix = repairs(row)
            if fix:
                sets = ", ".join("%s = ?" % column for column in fix)
                db.execute("UPDATE customers SET %s WHERE id = ?" % sets, [*fix.values(), row[0]])
                fixed.append({"id": row[0], "changed": sorted(fix)})
    db.close()
    report = {"scheduled_time": timer["scheduled_time"], "is_past_due": timer["is_past_due"],
              "rows_fixed": len(fixed), "fixes": fixed}
    ctx.output("reports", report, {"type": "scrub.report"})
    ctx.output("last", report, {"key": "last"})
    ctx.log.info("scrub at %s fixed %d rows" % (timer["scheduled_time"], len(fixed)))


def status(req, ctx):
    from nimbus import Response
    found = ctx.state_get("scrub-status", "last")
    if not found:
        return Response(json.dumps({"error": "no scrub has run yet"}), status=404, content_type="application/json")
    return json.loads(found[0])
