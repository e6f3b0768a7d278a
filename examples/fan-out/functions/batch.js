'use strict';
// Fan out to one `score` call per item, fan in when all are done; the step count of the
// progress shows in the instance's custom status.
const durable = require('nimbus/durable');

module.exports.batch = durable.orchestrator(function* (ctx) {
  const items = ctx.input.items || [];
  ctx.setCustomStatus({ items: items.length, phase: 'scoring' });
  const scores = yield ctx.whenAll(items.map((item) => ctx.callActivity('score', item)));
  const total = scores.reduce((a, b) => a + b, 0);
  let best = 0;
  scores.forEach((s, i) => { if (s > scores[best]) best = i; });
  ctx.setCustomStatus({ items: items.length, phase: 'done' });
  return { count: scores.length, total, best: items.length ? items[best] : null };
});
