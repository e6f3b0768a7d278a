"""Accounts: register and log in. Passwords are kept only as PBKDF2-HMAC-SHA256 hashes with a
salt of each user's own (state store `credentials`, keyed by username); profiles live in `users`,
keyed by the user's id. Login hands out an HS256 JWT that the gateway verifies on /me routes."""
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import unicodedata

from nimbus import HostError

from api import body_object, error, reply

CREDENTIALS = "credentials"
USERS = "users"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256; kept per user, so it can be raised
TOKEN_SECONDS = 3600
USERNAME = re.compile(r"[a-z][a-z0-9._-]{2,31}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


def _hash(password, salt, iterations):
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def _credentials_from(req):
    """(username, password) from the body, normalized, or an error reply."""
    body = body_object(req)
    if not isinstance(body, dict):
        return body
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return error(400, "invalid_request", 'expected {"username": "...", "password": "..."}')
    # One account per name whatever its letter case; one password however the keyboard composed it.
    return username.lower(), unicodedata.normalize("NFKC", password)


def register(req, ctx):
    """POST /auth/register {"username", "password"}: 201 with the new profile; 409 if taken."""
    given = _credentials_from(req)
    if not isinstance(given, tuple):
        return given
    username, password = given
    if not USERNAME.fullmatch(username):
        return error(400, "invalid_username",
                     "a username is 3 to 32 letters, digits, '.', '_' or '-', starting with a letter")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return error(400, "invalid_password", f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    user_id = "u" + secrets.token_hex(8)
    profile = {"id": user_id, "username": username, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    salt = secrets.token_bytes(16)
    record = {"user": user_id, "algorithm": "pbkdf2_sha256", "iterations": ITERATIONS, "salt": salt.hex(),
              "hash": _hash(password, salt, ITERATIONS).hex()}
    # The profile first: a crash before the name is taken leaves only an unreachable profile.
    ctx.state_put(USERS, user_id, json.dumps(profile), if_match="")
    try:
        ctx.state_put(CREDENTIALS, username, json.dumps(record), if_match="")  # create-only
    except HostError as e:
        ctx.state_delete(USERS, user_id)
        if not e.conflict:
            raise
        return error(409, "username_taken", f"the username '{username}' is taken")
    return reply(profile, 201)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(user_id):
    now = int(time.time())
    claims = {"sub": user_id, "iss": os.environ["JWT_ISSUER"], "aud": os.environ["JWT_AUDIENCE"],
              "iat": now, "exp": now + TOKEN_SECONDS}
    signing = (_b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()) + "." +
               _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    mac = hmac.new(os.environ["JWT_SECRET"].encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64url(mac)


def _wrong():
    # Never which part was wrong: that would tell a guesser which usernames exist.
    return error(401, "invalid_credentials", "wrong username or password")


def login(req, ctx):
    """POST /auth/login {"username", "password"}: {"token", "token_type", "expires_in"}, or 401."""
    given = _credentials_from(req)
    if not isinstance(given, tuple):
        return given
    username, password = given
    found = ctx.state_get(CREDENTIALS, username) if USERNAME.fullmatch(username) else None
    if found is None:
        _hash(password, b"\0" * 16, ITERATIONS)  # as slow as a real check: no timing hint either
        return _wrong()
    record = json.loads(found[0])
    if not hmac.compare_digest(_hash(password, bytes.fromhex(record["salt"]), record["iterations"]).hex(),
                               record["hash"]):
        return _wrong()
    if record["iterations"] < ITERATIONS:  # stored under an older count: hash it again now
        salt = secrets.token_bytes(16)
        record.update(iterations=ITERATIONS, salt=salt.hex(), hash=_hash(password, salt, ITERATIONS).hex())
        try:
            ctx.state_put(CREDENTIALS, username, json.dumps(record), if_match=found[1])
        except HostError as e:
            if not e.conflict:
                raise
    return reply({"token": _token(record["user"]), "token_type": "Bearer", "expires_in": TOKEN_SECONDS},
                 headers={"cache-control": "no-store"})
