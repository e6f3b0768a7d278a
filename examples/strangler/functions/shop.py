import json

from nimbus import Response


def _json(body, status=200):
    return Response(json.dumps(body), status=status, content_type="application/json")


def get_order(req, ctx):
    """GET /api/orders/ID, moved out of the monolith."""
    order = req.params["id"]
    return _json({"order": order, "status": "shipped", "source": "function"})


def quote(req, ctx):
    """POST /api/quotes {"items": [{"sku", "qty", "price"}]}: the total, with 8% tax."""
    body = req.json() or {}
    items = body.get("items")
    if not isinstance(items, list):
        return _json({"error": {"code": "bad_request", "message": "expected {\"items\": [...]}"}}, 400)
    subtotal = sum(float(i.get("qty", 0)) * float(i.get("price", 0)) for i in items)
    return _json({"subtotal": round(subtotal, 2), "total": round(subtotal * 1.08, 2), "source": "function"})


def inventory(req, ctx):
    """GET /api/inventory/SKU: the next route to move."""
    return _json({"sku": req.params["sku"], "in_stock": 7, "source": "function"})
