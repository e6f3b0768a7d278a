#!/usr/bin/env bash
# Checks deploy/ by the tools that read those files (ctest: deploy_files): the Kubernetes set
# builds with `kubectl kustomize` and holds what docs/deploy.md promises; the HAProxy and nginx
# configurations pass their own checkers; the systemd unit, Containerfile and manifests only
# use `nimbus start` options that exist and probe endpoints the host serves; the Grafana
# dashboard's queries are PromQL.
# Usage: deploy_check.sh REPO NIMBUS_BINARY
set -euo pipefail
repo=$1 nimbus=$2
deploy=$repo/deploy
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "deploy_check: $*" >&2; exit 1; }

# Kubernetes: kustomize builds it, every document parses, and the parts are there.
kubectl kustomize "$deploy/kubernetes" > "$scratch/all.yaml" || fail "kubectl kustomize deploy/kubernetes failed"
/usr/bin/python3 - "$scratch/all.yaml" <<'PY' || fail "the Kubernetes set is not what docs/deploy.md describes"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
need = ["Namespace", "Deployment", "Service", "StatefulSet", "HorizontalPodAutoscaler", "Secret"]
missing = [k for k in need if k not in kinds]
assert not missing, "missing kinds: %s" % missing
deploy = next(d for d in kinds["Deployment"] if d["metadata"]["name"] == "nimbus")
assert all(d["metadata"].get("namespace") == "nimbus" for d in docs if d["kind"] != "Namespace"), "not all in namespace nimbus"
c = deploy["spec"]["template"]["spec"]["containers"][0]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness is not /readyz"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness is not /healthz"
assert c["image"].startswith("registry.example.com/nimbus-app"), "the kustomize image was not applied: %s" % c["image"]
env = {e["name"]: e for e in c["env"]}
assert env["NIMBUS_STORE"]["valueFrom"]["secretKeyRef"]["name"] == "postgres", "NIMBUS_STORE is not from the secret"
hpa = kinds["HorizontalPodAutoscaler"][0]
assert hpa["spec"]["scaleTargetRef"]["name"] == "nimbus"
metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
assert metric.startswith("nimbus_"), metric
secret = kinds["Secret"][0]["stringData"]["NIMBUS_STORE"]
assert secret.startswith("postgres://"), secret
print("kubernetes: %d documents, HPA on %s" % (len(docs), metric))
PY

# The HPA's metric is one the host exports.
metric=$(grep -o 'name: nimbus_[a-z_]*' "$deploy/kubernetes/hpa.yaml" | head -1 | cut -d' ' -f2)
grep -q "$metric" "$repo/src/observe/metrics.cpp" || fail "hpa.yaml scales on $metric, which the host does not export"

# Every option the deploy files pass to `nimbus start` exists.
help=$("$nimbus" start --help)
starts=$(grep -h 'nimbus start ' "$deploy/systemd/nimbus.service" "$deploy/Containerfile" | grep -v '^#')
[[ -n $starts ]] || fail "no 'nimbus start' line in the systemd unit or the Containerfile"
for opt in $(grep -o -- ' --[a-z-]*' <<< "$starts" | sort -u); do
  grep -q -- "$opt" <<< "$help" || fail "deploy/ passes $opt to nimbus start, which has no such option"
done

# HAProxy and nginx check their own configurations.
if command -v haproxy > /dev/null; then
  haproxy -c -q -f "$deploy/haproxy/haproxy.cfg" || fail "haproxy -c rejects deploy/haproxy/haproxy.cfg"
else
  fail "haproxy is not installed (scripts/setup.sh installs it)"
fi
grep -q 'option httpchk GET /readyz' "$deploy/haproxy/haproxy.cfg" || fail "haproxy does not check /readyz"
if command -v nginx > /dev/null; then
  mkdir -p "$scratch/nginx"
  printf 'pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  include %s;\n}\n' \
    "$scratch/nginx" "$scratch/nginx" "$deploy/nginx/nimbus.conf" > "$scratch/nginx/nginx.conf"
  nginx -t -q -e "$scratch/nginx/error.log" -c "$scratch/nginx/nginx.conf" || fail "nginx -t rejects deploy/nginx/nimbus.conf"
else
  fail "nginx is not installed (scripts/setup.sh installs it)"
fi

# The systemd unit has the sections and keys systemd needs.
for key in '^\[Unit\]' '^\[Service\]' '^\[Install\]' '^ExecStart=/usr/local/bin/nimbus start ' '^KillSignal=SIGTERM'; do
  grep -q -- "$key" "$deploy/systemd/nimbus.service" || fail "deploy/systemd/nimbus.service lacks $key"
done
# The Grafana dashboard: the JSON parses, and every panel's query is PromQL promtool accepts
# (as a recording rule, with Grafana's variables filled in). That every metric it names is one a
# host serves is checked against a live scrape (tests/history_it_test.cpp, Metrics.*).
command -v promtool > /dev/null || fail "promtool is not installed (scripts/setup.sh installs Debian's prometheus package)"
/usr/bin/python3 - "$deploy/grafana/nimbus-dashboard.json" "$scratch/rules.yaml" <<'PY' || fail "deploy/grafana/nimbus-dashboard.json is not a dashboard of queries"
import json, sys, yaml
dash = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert len(exprs) >= 20, "only %d queries" % len(exprs)
fill = {"$__rate_interval": "5m", "$function": ".*", "$job": ".*"}
rules = []
for i, e in enumerate(exprs):
    for k, v in fill.items():
        e = e.replace(k, v)
    assert "$" not in e, "an unknown variable in: " + e
    rules.append({"record": "nimbus:panel_%d" % i, "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
PY
promtool check rules "$scratch/rules.yaml" > "$scratch/promtool.out" 2>&1 || { cat "$scratch/promtool.out" >&2; fail "promtool rejects a query of the Grafana dashboard"; }

echo "deploy_check: ok"
