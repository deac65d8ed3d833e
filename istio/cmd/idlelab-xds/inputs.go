package main

// What idlelab-xds serves: the YAML it is given, split into Istio resources and Kubernetes
// objects, every Istio resource first through a strict decode and Istio's validating webhook.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/webhooks/validation/server"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
)

type inputs struct {
	istio []string // Istio config documents (networking.istio.io, ...), validated
	kube  []string // everything else: Namespace, Service, EndpointSlice, Pod, Secret, ...
}

// readInputs reads YAML files (or *.yaml / *.yml in directories), splits them into documents
// and runs every resource istiod's webhook knows (Istio and Gateway API kinds) through Istio's
// validating webhook handler. The MeshConfig is validated by mesh.ApplyMeshConfigDefaults.
func readInputs(args []string) (*inputs, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		var found []string
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(a, pat))
			found = append(found, m...)
		}
		sort.Strings(found)
		files = append(files, found...)
	}

	// The webhook as istiod mounts it (pilot/pkg/bootstrap/validation.go).
	mux := http.NewServeMux()
	if _, err := server.New(server.Options{Schemas: collections.PilotGatewayAPI(), DomainSuffix: "cluster.local", Mux: mux}); err != nil {
		return nil, err
	}

	in := &inputs{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		r := kubeyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return nil, fmt.Errorf("%s: %v", f, err)
			}
			if meta.Kind == "" && meta.APIVersion == "" {
				continue // comments only
			}
			gv := strings.SplitN(meta.APIVersion, "/", 2)
			gvk := config.GroupVersionKind{Kind: meta.Kind}
			if len(gv) == 2 {
				gvk.Group, gvk.Version = gv[0], gv[1]
			} else {
				gvk.Version = gv[0]
			}
			if _, validated := collections.PilotGatewayAPI().FindByGroupKind(gvk); !validated {
				in.kube = append(in.kube, string(doc)) // Kubernetes objects: no webhook of Istio's
				continue
			}
			if meta.Metadata.Namespace == "" {
				meta.Metadata.Namespace = "default" // what the fake store assumes, too
			}
			err = strictSpec(gvk, doc)
			if err == nil {
				err = validate(mux, gvk, meta.Metadata.Namespace, meta.Metadata.Name, doc)
			}
			if err != nil {
				line, _ := json.Marshal(map[string]any{"rejected": map[string]string{
					"file": f, "kind": gvk.Kind, "namespace": meta.Metadata.Namespace, "name": meta.Metadata.Name,
					"message": err.Error(),
				}})
				fmt.Println(string(line))
				fail(2, "%s: %s %s/%s rejected by Istio's validation: %v", f, gvk.Kind, meta.Metadata.Namespace, meta.Metadata.Name, err)
			}
			if _, isIstio := collections.Pilot.FindByGroupKind(gvk); isIstio {
				in.istio = append(in.istio, string(doc))
			} else {
				in.kube = append(in.kube, string(doc)) // Gateway API: read through the Kubernetes client
			}
		}
	}
	return in, nil
}

// strictSpec refuses unknown fields in an Istio resource's spec, as `istioctl validate` does
// (and the API server's strict field validation would): the webhook alone ignores them, so a
// misspelt field would silently have no effect.
func strictSpec(gvk config.GroupVersionKind, doc []byte) error {
	s, ok := collections.Pilot.FindByGroupVersionAliasesKind(gvk)
	if !ok {
		return nil
	}
	var obj struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(doc, &obj); err != nil || len(obj.Spec) == 0 {
		return err
	}
	pb, err := s.NewInstance()
	if err != nil {
		return err
	}
	if err := config.ApplyJSONStrict(pb, string(obj.Spec)); err != nil {
		return fmt.Errorf("cannot parse proto message: %v", err)
	}
	return nil
}

// validate sends one resource through the webhook's /validate handler as an AdmissionReview.
func validate(mux *http.ServeMux, gvk config.GroupVersionKind, ns, name string, doc []byte) error {
	obj, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	review, _ := json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1",
		"kind":       "AdmissionReview",
		"request": map[string]any{
			"uid":       "idlelab",
			"kind":      map[string]string{"group": gvk.Group, "version": gvk.Version, "kind": gvk.Kind},
			"operation": "CREATE",
			"namespace": ns,
			"name":      name,
			"object":    json.RawMessage(obj),
		},
	})
	req := httptest.NewRequest(http.MethodPost, "/validate", bytes.NewReader(review))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var out struct {
		Response struct {
			Allowed  bool     `json:"allowed"`
			Warnings []string `json:"warnings"`
			Status   struct {
				Message string `json:"message"`
			} `json:"status"`
		} `json:"response"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return fmt.Errorf("webhook answered %d %q: %v", rec.Code, rec.Body.String(), err)
	}
	for _, w := range out.Response.Warnings {
		scope.Warnf("%s %s/%s: %s", gvk.Kind, ns, name, w)
	}
	if !out.Response.Allowed {
		return errors.New(out.Response.Status.Message)
	}
	return nil
}
