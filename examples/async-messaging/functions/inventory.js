// The inventory subscriber, in JavaScript: reserves stock for every order.
exports.reserve = async (req, ctx) => {
  const order = req.json();
  ctx.output('log', { items: order.items || [], reservedBy: ctx.function }, { key: order.id });
};
