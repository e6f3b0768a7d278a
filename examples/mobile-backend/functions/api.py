"""What every route shares: JSON replies and errors, the JSON body, and the caller's verified id."""
import json
import re

from nimbus import Response

# The ids login puts in `sub`: safe as a state key prefix and as one level of an MQTT topic.
USER_ID = re.compile(r"u[0-9a-f]{16}")


def reply(body, status=200, headers=None):
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def error(status, code, message, headers=None):
    return reply({"error": {"code": code, "message": message}}, status, headers)


def body_object(req):
    """The body as a JSON object, or an error reply."""
    try:
        body = req.json()
    except ValueError:
        return error(400, "invalid_json", "the body is not JSON")
    if not isinstance(body, dict):
        return error(400, "invalid_json", "expected a JSON object")
    return body


def caller(req):
    """The user id (`sub`) of the token the gateway verified, or None. The gateway sets
    X-Nimbus-Claims on `auth: jwt` routes and drops any a client sends, so it can be trusted."""
    try:
        claims = json.loads(req.headers.get("x-nimbus-claims", ""))
    except ValueError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and USER_ID.fullmatch(sub) else None


def unauthorized():
    """A route that reached a function without verified claims: a manifest without `auth: jwt`."""
    return error(401, "unauthorized", "a valid bearer token is required",
                 {"www-authenticate": 'Bearer realm="mobile-backend"'})
