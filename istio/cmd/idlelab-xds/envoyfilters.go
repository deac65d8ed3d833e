package main

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"istio.io/istio/pilot/pkg/networking/core/envoyfilter"
)

// envoyFilterStatus answers which EnvoyFilter patches Istio applied, from Istio's own
// accounting: while it generates a proxy's config, Istio notes each EnvoyFilter patch it
// applied (envoyfilter.IncrementEnvoyFilterMetric, with PILOT_ENVOY_FILTER_STATS=true), and
// RecordMetrics turns the notes into the pilot_envoy_filter_status gauge; istiod does that at
// its next full push, this endpoint does it on request. A filter Istio looked at and applied
// nothing of has no "applied" entry; an error has result "error" (per patch type, no name).
//
// Call it once all proxies have their config: RecordMetrics also clears the notes.
func envoyFilterStatus(w http.ResponseWriter, _ *http.Request) {
	envoyfilter.RecordMetrics()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	type entry struct {
		Name   string  `json:"name,omitempty"`
		Patch  string  `json:"patch"`
		Result string  `json:"result"`
		Value  float64 `json:"value"`
	}
	out := []entry{}
	for _, f := range families {
		if f.GetName() != "pilot_envoy_filter_status" {
			continue
		}
		for _, m := range f.GetMetric() {
			e := entry{Value: m.GetGauge().GetValue()}
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "name":
					e.Name = l.GetValue()
				case "patch":
					e.Patch = l.GetValue()
				case "result":
					e.Result = l.GetValue()
				}
			}
			out = append(out, e)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
