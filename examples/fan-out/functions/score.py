# One item's score: its letters weighted by position (a stand-in for real work).
def score(req, ctx):
    word = str(req.json())
    return sum((i + 1) * (ord(c) % 32) for i, c in enumerate(word))
