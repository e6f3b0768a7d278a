"""Reads Prometheus text (format 0.0.4) on stdin and parses it with the reference Python
client's parser, an implementation independent of Nimbus's own. Exits non-zero, naming the
problem, when the text does not parse; prints the sample count otherwise."""
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
samples = 0
try:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples += 1
            if family.type == "histogram" and sample.name.endswith("_bucket") and "le" not in sample.labels:
                raise ValueError(f"{sample.name}: bucket without le")
except Exception as exc:  # the parser raises ValueError and friends on bad input
    print(f"invalid exposition text: {exc}", file=sys.stderr)
    sys.exit(1)
print(samples)
