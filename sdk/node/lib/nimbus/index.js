'use strict';
// `require('nimbus')` inside a function: the host puts sdk/node/lib on NODE_PATH.
module.exports = { Response: require('../../worker.js').Response };
