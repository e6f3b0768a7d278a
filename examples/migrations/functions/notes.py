import json
import os
import sqlite3

from nimbus import Response

# The database every version shares lives in the app's folder (NIMBUS_APP_DIR); each version's
# code, migrations included, runs from a folder of its own.
DB = os.path.join(os.environ["NIMBUS_APP_DIR"], "notes.db")
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "migrations")


def connect():
    db = sqlite3.connect(DB, timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def migrate(req, ctx):
    """Applies every migrations/NNN_*.sql not applied yet, in order, each in a transaction with
    its row in schema_migrations: a failing one changes nothing and fails the deploy."""
    db = connect()
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)")
    applied = []
    for name in sorted(f for f in os.listdir(MIGRATIONS) if f.endswith(".sql")):
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone():
                db.execute("ROLLBACK")
                continue
            with open(os.path.join(MIGRATIONS, name)) as f:
                for statement in f.read().split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("INSERT INTO schema_migrations (name) VALUES (?)", (name,))
            db.execute("COMMIT")
            applied.append(name)
        except Exception:
            db.execute("ROLLBACK")
            raise
    return {"applied": applied}


def notes(req, ctx):
    """GET /notes lists them; POST /notes {"text"} adds one."""
    db = connect()
    if req.method == "POST":
        text = (req.json() or {}).get("text", "")
        if not text:
            return Response(json.dumps({"error": "text is required"}), status=400, content_type="application/json")
        cur = db.execute("INSERT INTO notes (text) VALUES (?)", (text,))
        return Response(json.dumps({"id": cur.lastrowid}), status=201, content_type="application/json")
    return [{"id": i, "text": t} for i, t in db.execute("SELECT id, text FROM notes ORDER BY id")]
