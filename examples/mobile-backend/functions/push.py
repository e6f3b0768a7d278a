"""user-changes -> the phone: each change becomes an MQTT message on users/<id>/changes (QoS 1),
published once the broker has it, at least once. The event's subject is the user id the change
belongs to (set by notes.py from the verified token), so the topic is always the owner's."""
from api import USER_ID


def push(req, ctx):
    user = req.attributes.get("subject", "")
    if not USER_ID.fullmatch(user):
        raise ValueError(f"change {req.attributes.get('id')} has no user id as its subject: {user!r}")
    ctx.output("phone", req.body, {"user": user})
