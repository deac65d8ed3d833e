// Command idlelab-xds serves xDS to the lab's sidecars from Istio's own control-plane code.
//
// It hosts Istio's test discovery server (istio.io/istio/pilot/test/xds NewFakeDiscoveryServer):
// the production xDS generators over an in-memory config store and a fake Kubernetes client,
// served on a real TCP listener. It re-implements nothing of Istio: the input is the same
// Kubernetes objects and Istio resources a cluster would hold, and every Istio resource first
// goes through a strict decode of its spec (as `istioctl validate`) and Istio's validating
// webhook handler, as `kubectl apply` would.
//
// Usage:
//
//	idlelab-xds [--listen 127.0.0.1:15010] [--listen-fd N]... [--mesh mesh.yaml] [--debug ADDR] FILE|DIR...
//
// stdout gets exactly one JSON line: {"ready":"ADDR"} once serving, or {"rejected":{...}}
// (exit 2) when Istio's validation refuses a resource. Logs (one "LDS: PUSH ... for node:..."
// line per push and type, from Istio's "ads"/"delta" scopes) go to stderr. It runs until SIGTERM/SIGINT,
// or until stdin reaches EOF when stdin is a pipe.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	xdsfake "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/monitoring"
	"istio.io/istio/pkg/webhooks/validation/server"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// plainEnvoyEnv switches off the Istio extensions that only Istio's own Envoy build has, so that
// an upstream Envoy accepts the config. Istio reads these at package init, hence the re-exec.
// A value already in the environment wins.
var plainEnvoyEnv = []string{
	"PILOT_ENABLE_METADATA_EXCHANGE=false", // istio.metadata_exchange, peer_metadata (peer telemetry only)
	"PILOT_ENABLE_ALPN_FILTER=false",       // istio.alpn (mTLS ALPN override on outbound TLS)
	"XDS_AUTH_PLAINTEXT=true",              // ask the authenticators on plaintext xDS too (see trust.go)
	"PILOT_ENABLE_XDS_IDENTITY_CHECK=true", // Istio's default, explicit: VerifiedIdentity comes from it
	"PILOT_ENVOY_FILTER_STATS=true",        // Istio's per-EnvoyFilter "applied" accounting (see envoyfilters.go)
}

var scope = log.RegisterScope("idlelab", "idlelab-xds")

func main() {
	reexecWithDefaults()

	listen := flag.String("listen", "127.0.0.1:15010", "gRPC xDS listen address (port 0: any)")
	meshFile := flag.String("mesh", "", "MeshConfig YAML file (default: Istio's built-in defaults)")
	debugAddr := flag.String("debug", "", "serve Istio's /debug endpoints (syncz, config_dump, ...) on this address")
	validateOnly := flag.Bool("validate", false, "only run Istio's validation of the inputs: print {\"valid\":…} or {\"rejected\":…} (exit 2), serve nothing")
	var listenFDs fdList
	flag.Var(&listenFDs, "listen-fd", "also serve on this inherited listening socket (repeatable; one per other pod namespace)")
	logOpts := log.DefaultOptions()
	logOpts.OutputPaths = []string{"stderr"}
	logOpts.ErrorOutputPaths = []string{"stderr"}
	// Quiet by default but for Istio's push log ("ads" for state-of-the-world, "delta" for the
	// delta xDS that pilot-agent speaks by default) and our own lines.
	logOpts.SetDefaultOutputLevel("all", log.WarnLevel)
	logOpts.SetDefaultOutputLevel("ads", log.InfoLevel)
	logOpts.SetDefaultOutputLevel("delta", log.InfoLevel)
	logOpts.SetDefaultOutputLevel("idlelab", log.InfoLevel)
	logOpts.AttachFlags(
		func(p *[]string, name string, value []string, usage string) {
			flag.Func(name, usage, func(s string) error { *p = strings.Split(s, ","); return nil })
		},
		flag.StringVar, flag.IntVar, flag.BoolVar)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] FILE|DIR...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := log.Configure(logOpts); err != nil {
		fail(1, "configuring log: %v", err)
	}
	start := time.Now()

	m := mesh.DefaultMeshConfig()
	if *meshFile != "" {
		b, err := os.ReadFile(*meshFile)
		if err != nil {
			fail(1, "%v", err)
		}
		if m, err = mesh.ApplyMeshConfigDefaults(string(b)); err != nil {
			fail(2, "%s: %v", *meshFile, err)
		}
	}

	in, err := readInputs(flag.Args())
	if err != nil {
		fail(1, "%v", err)
	}
	if *validateOnly {
		line, _ := json.Marshal(map[string]any{"valid": map[string]int{"istio": len(in.istio), "kubernetes": len(in.kube)}})
		fmt.Println(string(line))
		return
	}

	t := newFailer()
	go shutdownOn(t)
	// Istio's metrics into the default Prometheus registry, as istiod does at start-up: the
	// EnvoyFilter accounting (envoyfilters.go) reads its gauge from there.
	if _, err := monitoring.RegisterPrometheusExporter(nil, nil); err != nil {
		fail(1, "metrics: %v", err)
	}

	opts := xdsfake.FakeOptions{
		MeshConfig:             m,
		ConfigString:           strings.Join(in.istio, "\n---\n"),
		KubernetesObjectString: strings.Join(in.kube, "\n---\n"),
		ListenerBuilder: func() (net.Listener, error) {
			l, err := net.Listen("tcp", *listen)
			if err != nil {
				return nil, err
			}
			more, err := inherited(listenFDs)
			if err != nil {
				return nil, err
			}
			return merge(append([]net.Listener{l}, more...)), nil
		},
		// The fake Kubernetes client has no RBAC to ask: a gateway may read its credentialName.
		DisableSecretAuthorization: true,
	}
	s := xdsfake.NewFakeDiscoveryServer(t, opts)
	s.Discovery.Authenticators = append(s.Discovery.Authenticators, podIdentities{identitiesOf(in.kube)})

	ready := map[string]string{"ready": s.Listener.Addr().String()}
	if *debugAddr != "" {
		l, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", s.DiscoveryDebug)
		mux.HandleFunc("/idlelab/envoyfilters", envoyFilterStatus)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		ready["debug"] = l.Addr().String()
	}
	scope.Infof("serving %d Istio resources and %d Kubernetes objects, ready after %v",
		len(in.istio), len(in.kube), time.Since(start).Round(time.Millisecond))
	line, _ := json.Marshal(ready)
	fmt.Println(string(line))
	select {}
}

// reexecWithDefaults puts plainEnvoyEnv into the environment and re-executes this binary
// if any of them is missing: Istio's feature flags are read during package initialisation.
func reexecWithDefaults() {
	env := os.Environ()
	missing := false
	for _, kv := range plainEnvoyEnv {
		k := kv[:strings.IndexByte(kv, '=')]
		if _, ok := os.LookupEnv(k); !ok {
			env = append(env, kv)
			missing = true
		}
	}
	if !missing {
		return
	}
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, env)
	}
	fail(1, "re-exec with %v: %v", plainEnvoyEnv, err)
}

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

func shutdownOn(t *failer) {
	done := make(chan string, 2)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { done <- (<-sig).String() }()
	// Only a pipe or socket on stdin is watched: /dev/null or a terminal would end at once or never.
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&(os.ModeNamedPipe|os.ModeSocket) != 0 {
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); done <- "stdin closed" }()
	}
	why := <-done
	scope.Infof("shutting down (%s)", why)
	t.runCleanups()
	os.Exit(0)
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "idlelab-xds: "+format+"\n", args...)
	os.Exit(code)
}
