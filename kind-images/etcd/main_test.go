package main

import (
	"os"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/version"
)

// The etcd this module builds is the one the node image tags as kubeadm's etcd image
// (versions.env ETCD_TAG, e.g. 3.6.5-0 for etcd 3.6.5).
func TestTheBuiltEtcdIsTheTaggedVersion(t *testing.T) {
	raw, err := os.ReadFile("../versions.env")
	if err != nil {
		t.Fatal(err)
	}
	var tag string
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "ETCD_TAG="); ok {
			tag = strings.TrimSpace(v)
		}
	}
	if want := version.Version + "-0"; tag != want {
		t.Fatalf("versions.env ETCD_TAG=%q, but this module builds etcd %s (tag %s)", tag, version.Version, want)
	}
}
