"""The to-do list's API: items in the state store `items`, one key per item, keyed by an id that
sorts in creation order. Replies carry the item's ETag; PUT and DELETE take If-Match."""
import json
import secrets
import time

from nimbus import HostError, Response

STORE = "items"
MAX_TITLE = 200


def _json(body, status=200, etag=None):
    headers = {"etag": f'"{etag}"'} if etag else None
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def _error(status, code, message):
    return _json({"error": {"code": code, "message": message}}, status)


def _changed():
    return _error(412, "precondition_failed", "the item was changed elsewhere since it was read: try again")


def _item(key, fields, etag):
    """An item as the API shows it: its id, its stored fields and its ETag."""
    return {"id": key, **fields, "etag": etag}


def _if_match(req):
    """The client's If-Match as a store ETag (quotes dropped); None when absent or `*`."""
    value = req.headers.get("if-match", "").strip()
    if value in ("", "*"):
        return None
    return value.removeprefix("W/").strip('"')


def _fields(req):
    """{"title", "done"} from the body, validated; or an error reply."""
    try:
        body = req.json()
    except ValueError:
        return _error(400, "invalid_json", "the body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "invalid_json", 'expected an object: {"title": "...", "done": false}')
    title, done = body.get("title"), body.get("done", False)
    if not isinstance(title, str) or not title.strip():
        return _error(400, "invalid_title", "title is required: a non-empty string")
    if len(title.strip()) > MAX_TITLE:
        return _error(400, "invalid_title", f"title is longer than {MAX_TITLE} characters")
    if not isinstance(done, bool):
        return _error(400, "invalid_done", "done must be true or false")
    return {"title": title.strip(), "done": done}


def list_items(req, ctx):
    """GET /api/items: every item, oldest first."""
    items = [_item(key, json.loads(value), etag) for key, value, etag in ctx.state_list(STORE, prefix="", limit=1000)]
    return _json({"items": items})


def create_item(req, ctx):
    """POST /api/items {"title", "done"?}: 201 with the new item."""
    fields = _fields(req)
    if isinstance(fields, Response):
        return fields
    key = f"{time.time_ns() // 1000:x}-{secrets.token_hex(3)}"  # sorts by creation time
    etag = ctx.state_put(STORE, key, json.dumps(fields), if_match="")
    return _json(_item(key, fields, etag), 201, etag)


def get_item(req, ctx):
    """GET /api/items/ID."""
    key = req.params["id"]
    found = ctx.state_get(STORE, key)
    if found is None:
        return _error(404, "not_found", f"no item {key}")
    return _json(_item(key, json.loads(found[0]), found[1]), etag=found[1])


def update_item(req, ctx):
    """PUT /api/items/ID {"title", "done"}: replaces the item; with If-Match only if it is
    unchanged since the client read it (else 412)."""
    fields = _fields(req)
    if isinstance(fields, Response):
        return fields
    key = req.params["id"]
    found = ctx.state_get(STORE, key)
    if found is None:
        return _error(404, "not_found", f"no item {key}")
    try:
        # Without If-Match, the ETag just read: a delete in between is not undone.
        etag = ctx.state_put(STORE, key, json.dumps(fields), if_match=_if_match(req) or found[1])
    except HostError as e:
        if not e.conflict:
            raise
        return _changed()
    return _json(_item(key, fields, etag), etag=etag)


def delete_item(req, ctx):
    """DELETE /api/items/ID: 204; with If-Match only if it is unchanged."""
    key = req.params["id"]
    found = ctx.state_get(STORE, key)
    if found is None:
        return _error(404, "not_found", f"no item {key}")
    try:
        ctx.state_delete(STORE, key, if_match=_if_match(req) or found[1])
    except HostError as e:
        if not e.conflict:
            raise
        return _changed()
    return None


def not_found(req, ctx):
    """Any other path under /api/: a JSON 404, not the front end's page."""
    return _error(404, "not_found", f"no route {req.method} {req.path}")
