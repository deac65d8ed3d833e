package main

import (
	"testing"

	"istio.io/istio/pkg/version"
)

func TestReleaseOfNamesTheVersionAndTheRevisionTheBuildStamped(t *testing.T) {
	got := releaseOf(version.BuildInfo{Version: "1.31-dev", GitRevision: "eed52ebb66ad"})
	if got != "1.31-dev (eed52ebb66ad)" {
		t.Fatalf("releaseOf = %q", got)
	}
}
