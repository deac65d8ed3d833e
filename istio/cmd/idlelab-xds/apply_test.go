package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestServeAppliesCreatesThenUpdatesAndRefusesOtherKinds(t *testing.T) {
	slice := func(addrs ...string) string {
		y := "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: grpc-1, namespace: idlelab, labels: {kubernetes.io/service-name: grpc}}\naddressType: IPv4\nendpoints:\n"
		for _, a := range addrs {
			y += "- addresses: [" + a + "]\n"
		}
		line, _ := json.Marshal(change{Apply: y})
		return string(line) + "\n"
	}
	kube := fake.NewClientset()
	in := slice("198.18.0.66") + "\n" + slice("198.18.0.66", "198.18.0.70") +
		`{"apply": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"}` + "\n" + "not json\n"
	var out bytes.Buffer
	serveApplies(strings.NewReader(in), kube, &out)
	answers := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(answers) != 4 {
		t.Fatalf("one answer per change, got %q", answers)
	}
	for _, a := range answers[:2] {
		if a != `{"applied":"EndpointSlice idlelab/grpc-1"}` {
			t.Errorf("answer %s", a)
		}
	}
	if !strings.Contains(answers[2], "ConfigMap") || !strings.Contains(answers[2], "only EndpointSlice") {
		t.Errorf("a kind it does not change: %s", answers[2])
	}
	if !strings.Contains(answers[3], `expected {\"apply\"`) {
		t.Errorf("not JSON: %s", answers[3])
	}
	got, err := kube.DiscoveryV1().EndpointSlices("idlelab").Get(context.Background(), "grpc-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Endpoints) != 2 || got.Endpoints[1].Addresses[0] != "198.18.0.70" {
		t.Errorf("the update did not land: %+v", got.Endpoints)
	}
}
