package main

import (
	"fmt"

	"istio.io/istio/pkg/security"
	"sigs.k8s.io/yaml"
)

// podIdentities trusts the plaintext xDS channel the way istiod trusts a client certificate:
// every caller gets the SPIFFE identities of the cell's pods, and Istio's own authorisation
// (checkConnectionIdentity) keeps the one that matches the proxy's namespace and service
// account. The channel is 127.0.0.1 inside the pod's own network namespace, so only that pod's
// pilot-agent can reach it. Istio needs a verified identity before it serves a gateway its
// credentialName Secret over SDS (pilot/pkg/xds/sds.go); with XDS_AUTH_PLAINTEXT=true it asks
// the authenticators even on a plaintext stream (pkg/security/authentication.go).
type podIdentities struct{ ids []string }

func (p podIdentities) AuthenticatorType() string { return "IdlelabPodNamespace" }

func (p podIdentities) Authenticate(security.AuthContext) (*security.Caller, error) {
	if len(p.ids) == 0 {
		return nil, fmt.Errorf("no pods in the input")
	}
	return &security.Caller{AuthSource: security.AuthSourceClientCertificate, Identities: p.ids}, nil
}

// identitiesOf lists spiffe://cluster.local/ns/<ns>/sa/<serviceAccountName or default> for
// every Pod document.
func identitiesOf(kube []string) []string {
	var ids []string
	for _, doc := range kube {
		var pod struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec struct {
				ServiceAccountName string `json:"serviceAccountName"`
			} `json:"spec"`
		}
		if yaml.Unmarshal([]byte(doc), &pod) != nil || pod.Kind != "Pod" {
			continue
		}
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		ns := pod.Metadata.Namespace
		if ns == "" {
			ns = "default"
		}
		ids = append(ids, fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa))
	}
	return ids
}
