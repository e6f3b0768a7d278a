"""The caller's own data: the profile and notes. Every key starts with the user id from the
verified token (`<user>/<note>` in the state store `notes`), so no id a client sends can reach
another user's note: it is simply not there (404). Each change is an output to the topic
`user-changes`, committed with the reply, which `push` turns into an MQTT message for the phone."""
import json
import re
import secrets
import time

from nimbus import HostError, Response

from api import body_object, caller, error, reply, unauthorized

NOTES = "notes"
USERS = "users"
NOTE_ID = re.compile(r"[0-9a-f]{1,16}-[0-9a-f]{6}")
MAX_TITLE, MAX_BODY = 200, 20_000


def _now_ms():
    return time.time_ns() // 1_000_000


def _key(user, note_id):
    return f"{user}/{note_id}"


def _if_match(req):
    """The client's If-Match as a store ETag (quotes dropped); None when absent or `*`."""
    value = req.headers.get("if-match", "").strip()
    return None if value in ("", "*") else value.removeprefix("W/").strip('"')


def _changed():
    return error(412, "precondition_failed", "the note was changed elsewhere since it was read: fetch it again")


def _not_found(note_id):
    return error(404, "not_found", f"you have no note {note_id}")


def _fields(req):
    """{"title", "body"} from the request, validated; or an error reply."""
    body = body_object(req)
    if not isinstance(body, dict):
        return body
    title, text = body.get("title"), body.get("body", "")
    if not isinstance(title, str) or not title.strip():
        return error(400, "invalid_title", "title is required: a non-empty string")
    if len(title.strip()) > MAX_TITLE:
        return error(400, "invalid_title", f"title is longer than {MAX_TITLE} characters")
    if not isinstance(text, str) or len(text) > MAX_BODY:
        return error(400, "invalid_body", f"body must be a string of at most {MAX_BODY} characters")
    return {"title": title.strip(), "body": text}


def _with_etag(note, etag, status=200):
    return reply({**note, "etag": etag}, status, {"etag": f'"{etag}"'})


def _emit(ctx, user, kind, change):
    """One change for the user's phone, committed with the reply (not before it, not without it)."""
    ctx.output("changes", {"type": kind, "at": _now_ms(), **change}, {"type": kind, "subject": user})


def profile(req, ctx):
    """GET /me."""
    user = caller(req)
    if user is None:
        return unauthorized()
    found = ctx.state_get(USERS, user)
    if found is None:  # a valid token for an account that is gone
        return error(404, "not_found", "this account does not exist")
    return Response(found[0], content_type="application/json")


def list_notes(req, ctx):
    """GET /me/notes: the caller's notes, oldest first (the first 1000)."""
    user = caller(req)
    if user is None:
        return unauthorized()
    notes = [{**json.loads(value), "etag": etag}
             for _, value, etag in ctx.state_list(NOTES, prefix=user + "/", limit=1000)]
    return reply({"notes": notes})


def create_note(req, ctx):
    """POST /me/notes {"title", "body"?}: 201 with the note, its id and its ETag."""
    user = caller(req)
    if user is None:
        return unauthorized()
    fields = _fields(req)
    if isinstance(fields, Response):
        return fields
    now = _now_ms()
    note_id = f"{time.time_ns() // 1000:x}-{secrets.token_hex(3)}"  # sorts by creation time
    note = {"id": note_id, **fields, "version": 1, "created_ms": now, "updated_ms": now}
    etag = ctx.state_put(NOTES, _key(user, note_id), json.dumps(note), if_match="")
    _emit(ctx, user, "note.created", {"id": note_id, "note": note})
    return _with_etag(note, etag, 201)


def _own_note(req, ctx):
    """(user, note id, (value, etag)) of the caller's note named in the path, or the reply
    (401, 404) when there is none: another user's id reads as absent."""
    user = caller(req)
    if user is None:
        return unauthorized()
    note_id = req.params["id"]
    found = ctx.state_get(NOTES, _key(user, note_id)) if NOTE_ID.fullmatch(note_id) else None
    if found is None:
        return _not_found(note_id)
    return user, note_id, found


def update_note(req, ctx):
    """PUT /me/notes/ID {"title", "body"?}: replaces the note; with If-Match only if it is
    unchanged since the phone read it (else 412)."""
    mine = _own_note(req, ctx)
    if isinstance(mine, Response):
        return mine
    user, note_id, found = mine
    fields = _fields(req)
    if isinstance(fields, Response):
        return fields
    old = json.loads(found[0])
    note = {**old, **fields, "version": old["version"] + 1, "updated_ms": _now_ms()}
    try:
        # Without If-Match, the ETag just read: a delete in between is not undone.
        etag = ctx.state_put(NOTES, _key(user, note_id), json.dumps(note), if_match=_if_match(req) or found[1])
    except HostError as e:
        if not e.conflict:
            raise
        return _changed()
    _emit(ctx, user, "note.updated", {"id": note_id, "note": note})
    return _with_etag(note, etag)


def delete_note(req, ctx):
    """DELETE /me/notes/ID: 204; with If-Match only if it is unchanged."""
    mine = _own_note(req, ctx)
    if isinstance(mine, Response):
        return mine
    user, note_id, found = mine
    try:
        ctx.state_delete(NOTES, _key(user, note_id), if_match=_if_match(req) or found[1])
    except HostError as e:
        if not e.conflict:
            raise
        return _changed()
    _emit(ctx, user, "note.deleted", {"id": note_id, "version": json.loads(found[0])["version"] + 1})
    return None
