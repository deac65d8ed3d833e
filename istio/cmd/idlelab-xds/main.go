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
// stdout gets exactly one JSON line: {"ready":"ADDR","istio":"1.30-dev (9739e10eb9d7)"} once
// serving (the Istio release this binary was built from, as its build stamped it), or {"rejected":{...}}
// (exit 2) when Istio's validation refuses a resource. Logs (one "LDS: PUSH ... for node:..."
// line per push and type, from Istio's "ads"/"delta" scopes) go to stderr. It runs until SIGTERM/SIGINT,
// or until stdin reaches EOF when stdin is a pipe. While it serves, each line on that pipe is a
// change to a Kubernetes object (apply.go), answered by one line on stdout.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	xdsfake "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/monitoring"
	"istio.io/istio/pkg/version"
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
	changes := make(chan *xdsfake.FakeDiscoveryServer, 1)
	go shutdownOn(t, changes)
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

	ready := map[string]string{"ready": s.Listener.Addr().String(), "istio": releaseOf(version.Info)}
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
	changes <- s
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

// shutdownOn ends the process on SIGTERM/SIGINT or when stdin (a pipe) closes; until then,
// once the server is up, it applies the changes stdin carries.
func shutdownOn(t *failer, server <-chan *xdsfake.FakeDiscoveryServer) {
	done := make(chan string, 2)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { done <- (<-sig).String() }()
	// Only a pipe or socket on stdin is watched: /dev/null or a terminal would end at once or never.
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&(os.ModeNamedPipe|os.ModeSocket) != 0 {
		go func() {
			// Changes only once the server is up (a closed stdin before that ends it then).
			s := <-server
			serveApplies(os.Stdin, s.KubeClient().Kube(), os.Stdout)
			done <- "stdin closed"
		}()
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

// releaseOf names the Istio release a build came from: its VERSION and the module's revision,
// as scripts/build-istio.sh stamps them into pkg/version.
func releaseOf(info version.BuildInfo) string {
	return fmt.Sprintf("%s (%s)", info.Version, info.GitRevision)
}
