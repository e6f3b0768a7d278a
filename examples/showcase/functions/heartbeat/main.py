def beat(req, ctx):
    """Runs every minute (and once at start); keeps the last run in state 'heartbeats'."""
    info = req.json()
    ctx.output("last", info, {"key": "showcase"})
