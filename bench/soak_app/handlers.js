// Node handler of the soak app (bench/soak.sh).
exports.hello = () => 'Hello, World!';
