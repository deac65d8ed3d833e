package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// replica serves Replica.Who on 127.0.0.1 as the lab's replicas do (grpc_replica.go).
func replica(t *testing.T, id uint32) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := replicaServer(id, new(atomic.Uint64), 0, 0)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func balanceRun(t *testing.T, lb string, targets []string) grpcReport {
	t.Helper()
	spec, _ := json.Marshal(grpcSpec{Client: "c", Targets: targets, LB: lb, Channels: 1, DurationMs: 300, IntervalMs: 10, RequestTimeoutMs: 1000})
	var out bytes.Buffer
	if err := runGrpcBalance(bytes.NewReader(spec), &out); err != nil {
		t.Fatal(err)
	}
	var r grpcReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	return r
}

func replicasReached(r grpcReport) map[uint32]int {
	seen := map[uint32]int{}
	for _, q := range r.Requests {
		if q.Replica != nil {
			seen[*q.Replica]++
		}
	}
	return seen
}

func TestRoundRobinSpreadsCallsAndPickFirstStaysOnOne(t *testing.T) {
	targets := []string{replica(t, 0), replica(t, 1), replica(t, 2)}
	rr := balanceRun(t, "round_robin", targets)
	if len(rr.Requests) < 10 || rr.PeakRssKib == 0 {
		t.Fatalf("calls for 300 ms every 10 ms, and the probe's memory: %+v", rr)
	}
	if seen := replicasReached(rr); len(seen) != 3 {
		t.Errorf("round_robin reaches every replica: %v", seen)
	}
	pf := balanceRun(t, "pick_first", targets)
	if seen := replicasReached(pf); len(seen) != 1 || seen[0] == 0 {
		t.Errorf("pick_first stays on the first target: %v", seen)
	}
}

func TestAnUnknownPolicyOrADeadTargetFailsTheRun(t *testing.T) {
	spec := `{"client":"c","targets":["127.0.0.1:1"],"lb":"balance_list","channels":1,"duration_ms":10,"interval_ms":5,"request_timeout_ms":200}`
	err := runGrpcBalance(strings.NewReader(spec), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "pick_first or round_robin") {
		t.Errorf("tonic's balance_list is not grpc-go's: %v", err)
	}
	spec = strings.Replace(spec, "balance_list", "pick_first", 1)
	err = runGrpcBalance(strings.NewReader(spec), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "connect to 127.0.0.1:1") {
		t.Errorf("nothing listens there: %v", err)
	}
}

// round_robin's list: a name stands for every address it resolves to (a headless Service's
// replicas), an address for itself, each once; a target that is no host:port fails the run.
func TestRoundRobinResolvesNamesToEveryAddressOnce(t *testing.T) {
	got, err := resolveAll([]string{"127.0.0.1:50051", "localhost:50051", "127.0.0.1:50051"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != "127.0.0.1:50051" || strings.Count(strings.Join(got, " "), "127.0.0.1:50051") != 1 {
		t.Errorf("127.0.0.1 once, first: %v", got)
	}
	if _, err := resolveAll([]string{"no-port"}); err == nil || !strings.Contains(err.Error(), `target "no-port"`) {
		t.Errorf("a target without a port: %v", err)
	}
}

// grpc-go in an idle cell, end to end against an in-process replica: each ClientConn's one
// connection carries its own warm and reuse call; a pool setting it lacks is refused.
func TestGrpcGoIdleCellReusesEachClientConnsOwnConnection(t *testing.T) {
	addr := replica(t, 0)
	obs := runProbe(t, spec{Service: "grpc", Library: "grpc-go", Target: addr, Pool: 3, IdleMs: 200, RequestTimeoutMs: 2000}, nil)
	checkRows(t, obs)
	for _, c := range obs.Connections {
		if c.Reuse.Outcome != "ok" || c.ReplacedBeforeUse != nil {
			t.Errorf("row %d: %+v", c.ID, c)
		}
	}
	max := uint64(60000)
	_, err := libraryFor(&spec{Service: "grpc", Library: "grpc-go", Pool: 1, PoolMaxIdleMs: &max})
	if err == nil {
		p := newProbe()
		p.spec = spec{Service: "grpc", Library: "grpc-go", Target: addr, Pool: 1, PoolMaxIdleMs: &max}
		lib, _ := libraryFor(&p.spec)
		_, err = lib.setup(p)
	}
	if err == nil || !strings.Contains(err.Error(), "no pool idle limit") {
		t.Errorf("a pool idle limit grpc-go lacks: %v", err)
	}
}

// The grpc-go replica: its count file starts with 0, ends with every call answered, and its
// MaxConnectionAge sends the clients to a new connection (a pick_first channel reconnects).
func TestTheGrpcGoReplicaCountsAndAgesConnections(t *testing.T) {
	var served atomic.Uint64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := replicaServer(3, &served, 200*time.Millisecond, 100*time.Millisecond)
	go s.Serve(l)
	defer s.Stop()
	r := balanceRun(t, "pick_first", []string{l.Addr().String()})
	seen := replicasReached(r)
	if seen[3] != len(r.Requests) || uint64(len(r.Requests)) != served.Load() {
		t.Errorf("every call answered by replica 3 and counted: %v, served %d", seen, served.Load())
	}
}
