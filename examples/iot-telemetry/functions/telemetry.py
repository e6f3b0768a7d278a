import json
import os
import time

from nimbus import HostError, Response

STORE = "minutes"
KEEP_MINUTES = 60  # per device; older minutes are dropped from its record


def ingest(req, ctx):
    """devices/ID/telemetry {"device", "t", "temp"} -> the stream, keyed by device (one device,
    one partition, one order). A reading that is not one fails, and after its retries waits in
    the queue _mqtt.ingest.dead with the error."""
    reading = req.json()
    device = req.metadata.get("mqtt.match.1", "")
    if not isinstance(reading, dict) or reading.get("device", device) != device:
        raise ValueError("reading on %s is not {\"device\": %r, \"t\", \"temp\"}" % (req.metadata.get("mqtt.topic"), device))
    t, temp = float(reading["t"]), float(reading["temp"])
    ctx.output("readings", {"device": device, "t": t, "temp": temp}, {"key": device, "subject": device})


def minute_of(t):
    return time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(int(t // 60) * 60))


def aggregate(req, ctx):
    """Folds a batch of readings into each device's record in state `minutes`, with ETags.
    The record keeps the last stream offset it took, so a batch that runs again (a host killed
    before its checkpoint) is not counted twice. An alert is published when a minute's average
    goes above the threshold (at least once: before the record is written)."""
    threshold = float(os.environ.get("ALERT_ABOVE", "30"))
    by_device = {}
    for record in req.json():
        by_device.setdefault(record["key"], []).append(record)
    for device, records in by_device.items():
        for _ in range(20):
            found = ctx.state_get(STORE, device)
            doc = json.loads(found[0]) if found else {"device": device, "minutes": {}, "offset": -1}
            alerts = []
            for r in records:
                if r["offset"] <= doc["offset"]:
                    continue  # taken already
                reading = r["data"]
                m = doc["minutes"].setdefault(minute_of(reading["t"]),
                                              {"count": 0, "sum": 0.0, "min": reading["temp"], "max": reading["temp"]})
                was_above = m["count"] > 0 and m["sum"] / m["count"] > threshold
                m["count"] += 1
                m["sum"] += reading["temp"]
                m["min"], m["max"] = min(m["min"], reading["temp"]), max(m["max"], reading["temp"])
                m["avg"] = round(m["sum"] / m["count"], 3)
                if m["avg"] > threshold and not was_above:
                    alerts.append({"device": device, "minute": minute_of(reading["t"]), "avg": m["avg"],
                                   "threshold": threshold})
                doc["offset"] = r["offset"]
            for old in sorted(doc["minutes"])[:-KEEP_MINUTES]:
                del doc["minutes"][old]
            for alert in alerts:
                ctx.publish("alerts", json.dumps(alert), type="telemetry.alert", subject=device)
            try:
                ctx.state_put(STORE, device, json.dumps(doc), if_match=found[1] if found else "")
                break
            except HostError as e:
                if not e.conflict:
                    raise
        else:
            raise RuntimeError("too much contention on device " + device)  # the batch runs again


def minutes(req, ctx):
    found = ctx.state_get(STORE, req.params["id"])
    if found is None:
        return Response(json.dumps({"error": "no readings from this device"}), status=404,
                        content_type="application/json")
    doc = json.loads(found[0])
    rows = [{"minute": k, "count": v["count"], "avg": v["avg"], "min": v["min"], "max": v["max"]}
            for k, v in sorted(doc["minutes"].items())]
    return {"device": doc["device"], "minutes": rows}


def notify(req, ctx):
    alert = req.json()
    ctx.output("commands", {"command": "cool-down", "minute": alert["minute"], "avg": alert["avg"]},
               {"device": alert["device"]})
    ctx.output("log", alert, {"subject": alert["device"]})
