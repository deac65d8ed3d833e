package tools

import (
	"os"
	"strings"
	"testing"

	"k8s.io/kubernetes/cmd/kubeadm/app/constants"
)

// pinned reads KEY=VALUE lines of ../versions.env, the file build.sh and the Rust side read.
func pinned(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../versions.env")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// The node image preloads the images kubeadm asks for, by tag: versions.env must name the
// etcd, coredns and pause tags of the kubeadm this module builds, or kubeadm would try to
// pull the ones it wants (and fail offline).
func TestVersionsEnvNamesTheImagesThisKubeadmWants(t *testing.T) {
	p := pinned(t)
	for key, want := range map[string]string{
		"ETCD_TAG":        constants.DefaultEtcdVersion,
		"COREDNS_VERSION": constants.CoreDNSVersion,
		"PAUSE_TAG":       constants.PauseVersion,
	} {
		if p[key] != want {
			t.Errorf("versions.env %s=%s, kubeadm of %s wants %s", key, p[key], p["KUBE_VERSION"], want)
		}
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "k8s.io/kubernetes "+p["KUBE_VERSION"]) {
		t.Errorf("go.mod does not require k8s.io/kubernetes %s (versions.env KUBE_VERSION)", p["KUBE_VERSION"])
	}
}
