package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/webhooks/validation/server"
)

var destinationRule = config.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "DestinationRule"}

func TestReadInputsSplitsIstioResourcesFromKubernetesObjects(t *testing.T) {
	dir := t.TempDir()
	doc := `# comments only
---
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: idlelab}
spec: {ports: [{name: tcp-redis, port: 6379}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: keepalive, namespace: idlelab}
spec:
  host: redis.idlelab.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 60s, interval: 10s, probes: 3}}}}
`
	if err := os.WriteFile(filepath.Join(dir, "cell.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	// A file that is not YAML by its name is not read from a directory.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not: [yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := readInputs([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(in.istio) != 1 || !strings.Contains(in.istio[0], "kind: DestinationRule") {
		t.Errorf("istio = %q", in.istio)
	}
	if len(in.kube) != 1 || !strings.Contains(in.kube[0], "kind: Service") {
		t.Errorf("kube = %q", in.kube)
	}
}

func TestStrictSpecRefusesAMisspeltField(t *testing.T) {
	good := []byte("spec:\n  host: redis\n  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 24h}}}\n")
	if err := strictSpec(destinationRule, good); err != nil {
		t.Errorf("a correct spec was refused: %v", err)
	}
	// The webhook alone would let this through, and the rule would silently do nothing.
	bad := []byte("spec:\n  host: redis\n  trafficPolicy: {connectionPool: {tcp: {idleTimout: 24h}}}\n")
	err := strictSpec(destinationRule, bad)
	if err == nil || !strings.Contains(err.Error(), "idleTimout") {
		t.Errorf("a misspelt field: %v", err)
	}
}

func TestValidateAnswersWithIstiosWebhookMessage(t *testing.T) {
	mux := http.NewServeMux()
	if _, err := server.New(server.Options{Schemas: collections.PilotGatewayAPI(), DomainSuffix: "cluster.local", Mux: mux}); err != nil {
		t.Fatal(err)
	}
	ok := []byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: cell}\nspec: {host: redis}\n")
	if err := validate(mux, destinationRule, "cell", "r", ok); err != nil {
		t.Errorf("a valid rule was refused: %v", err)
	}
	// A rule without a host is Istio's to refuse, in Istio's words.
	bad := []byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: cell}\nspec: {host: ''}\n")
	err := validate(mux, destinationRule, "cell", "r", bad)
	if err == nil || !strings.Contains(err.Error(), "empty domain name") {
		t.Errorf("a rule with no host: %v", err)
	}
}
