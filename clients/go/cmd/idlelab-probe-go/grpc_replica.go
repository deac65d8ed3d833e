package main

// `idlelab-probe-go serve-grpc`: a replica of the lab's gRPC service in grpc-go, the same
// contract as `idlelab serve-grpc` (harness/src/local/grpc_replica.rs): Replica.Who answers
// with the replica id and its count; a count line (JSON: unix_ms, replica, served, rss_kib)
// goes to the counts file at the start, every 200 ms, and once more after a graceful stop on
// SIGTERM/SIGINT. What tonic lacks, grpc-go has: MaxConnectionAge with its grace
// (keepalive.ServerParameters), the time calls in flight get after the GOAWAY.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

type replicaCount struct {
	UnixMs  uint64 `json:"unix_ms"`
	Replica uint32 `json:"replica"`
	Served  uint64 `json:"served"`
	RssKib  uint64 `json:"rss_kib"`
}

// replicaServer builds the grpc-go server of replica `id`, counting into `served`.
func replicaServer(id uint32, served *atomic.Uint64, age, grace time.Duration) *grpc.Server {
	opts := []grpc.ServerOption{grpc.ForceServerCodec(whoCodec{})}
	if age > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: age, MaxConnectionAgeGrace: grace}))
	}
	desc := grpc.ServiceDesc{
		ServiceName: "idlelab.replica.v1.Replica",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Who", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req whoRequest
			if err := dec(&req); err != nil {
				return nil, err
			}
			return &whoReply{replica: id, served: served.Add(1)}, nil
		}}},
	}
	s := grpc.NewServer(opts...)
	s.RegisterService(&desc, struct{}{})
	return s
}

func runReplica(args []string) error {
	fs := flag.NewFlagSet("serve-grpc", flag.ContinueOnError)
	listen := fs.String("listen", "0.0.0.0:50051", "address to serve on")
	id := fs.Uint("replica", 0, "the replica id Who answers with")
	countsFile := fs.String("counts", "", "append a count line here at the start, every 200 ms and at the end")
	ageMs := fs.Uint64("max-connection-age-ms", 0, "keepalive.ServerParameters.MaxConnectionAge (0: none)")
	graceMs := fs.Uint64("max-connection-age-grace-ms", 0, "keepalive.ServerParameters.MaxConnectionAgeGrace (0: grpc-go's default, infinite)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *countsFile == "" {
		return fmt.Errorf("--counts is required")
	}
	counts, err := os.OpenFile(*countsFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer counts.Close()
	var served atomic.Uint64
	write := func() error {
		line, _ := json.Marshal(replicaCount{UnixMs: unixMs(), Replica: uint32(*id), Served: served.Load(), RssKib: statusKib("VmRSS")})
		_, err := counts.Write(append(line, '\n')) // one write per line: a reader never sees half of one
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// A zero grace is grpc-go's default: infinite (the calls in flight always finish).
	s := replicaServer(uint32(*id), &served, time.Duration(*ageMs)*time.Millisecond, time.Duration(*graceMs)*time.Millisecond)
	if err := write(); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := write(); err != nil {
				return err
			}
		case err := <-done:
			return fmt.Errorf("the gRPC server stopped by itself: %v", err)
		case <-stop:
			stopped := make(chan struct{})
			go func() { s.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				s.Stop()
			}
			return write()
		}
	}
}
