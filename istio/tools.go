//go:build tools

// Package tools names the Istio commands the kind backend builds from this same module, so
// that go.sum has their dependencies: istiod (pilot-discovery) for the cluster's pilot image
// and istioctl to install it. One pinned Istio serves the local lab and the cluster.
package tools

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
