package main

// `idlelab-probe-go probe-grpc`: grpc-go behind the gRPC balance probe's contract (the same
// JSON as `idlelab probe-grpc`, harness/src/probe/grpc.rs): a GrpcProbeSpec on stdin, one
// GrpcProbeReport line on stdout. Each channel is one grpc.ClientConn with the spec's load
// balancing policy by grpc-go's own name: `pick_first` over the one target (the ClusterIP), or
// `round_robin` over every target (a headless Service's records, as resolved at start: a
// manual resolver with a fixed list, as grpc-go's DNS resolver re-resolves only when a
// connection fails). Each channel calls Replica.Who every interval_ms for duration_ms.
//
// The messages are encoded with protowire by hand (replica.proto has two tiny messages), so
// no generated code is needed; the codec is named "proto", as the generated one is.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// whoMethod is Replica.Who of harness/proto/replica.proto.
const whoMethod = "/idlelab.replica.v1.Replica/Who"

type grpcSpec struct {
	Client           string   `json:"client"`
	Targets          []string `json:"targets"`
	LB               string   `json:"lb"`
	Channels         int      `json:"channels"`
	DurationMs       uint64   `json:"duration_ms"`
	IntervalMs       uint64   `json:"interval_ms"`
	RequestTimeoutMs uint64   `json:"request_timeout_ms"`
}

type grpcRequest struct {
	UnixMs    uint64  `json:"unix_ms"`
	Channel   int     `json:"channel"`
	Replica   *uint32 `json:"replica"`
	LatencyMs uint64  `json:"latency_ms"`
	Code      string  `json:"code,omitempty"`
	Message   string  `json:"message,omitempty"`
}

type grpcReport struct {
	Client     string        `json:"client"`
	Requests   []grpcRequest `json:"requests"`
	PeakRssKib uint64        `json:"peak_rss_kib"`
}

type whoRequest struct {
	client string
	seq    uint64
}

type whoReply struct {
	replica uint32
	served  uint64
}

// whoCodec encodes the two messages of replica.proto.
type whoCodec struct{}

func (whoCodec) Name() string { return "proto" }

func (whoCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *whoRequest:
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		b = protowire.AppendString(b, m.client)
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		return protowire.AppendVarint(b, m.seq), nil
	case *whoReply:
		b := protowire.AppendTag(nil, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.replica))
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		return protowire.AppendVarint(b, m.served), nil
	}
	return nil, fmt.Errorf("whoCodec: cannot marshal %T", v)
}

func (whoCodec) Unmarshal(data []byte, v any) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		var (
			varint uint64
			str    string
		)
		switch typ {
		case protowire.VarintType:
			varint, n = protowire.ConsumeVarint(data)
		case protowire.BytesType:
			str, n = protowire.ConsumeString(data)
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		switch m := v.(type) {
		case *whoReply:
			if num == 1 {
				m.replica = uint32(varint)
			} else if num == 2 {
				m.served = varint
			}
		case *whoRequest:
			if num == 1 {
				m.client = str
			} else if num == 2 {
				m.seq = varint
			}
		default:
			return fmt.Errorf("whoCodec: cannot unmarshal into %T", v)
		}
	}
	return nil
}

// resolveAll gives every address of every `host:port` target, each once, in order: an address
// stands for itself, a name (a headless Service's) for its records as resolved now.
func resolveAll(targets []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, t := range targets {
		host, port, err := net.SplitHostPort(t)
		if err != nil {
			return nil, fmt.Errorf("target %q: %v", t, err)
		}
		ips, err := net.DefaultResolver.LookupHost(context.Background(), host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %v", t, err)
		}
		sort.Strings(ips)
		for _, ip := range ips {
			if a := net.JoinHostPort(ip, port); !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s resolved to no address", strings.Join(targets, ", "))
	}
	return out, nil
}

// dialChannel opens one channel with grpc-go's own policy for `lb`.
func dialChannel(spec *grpcSpec, index int) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme(fmt.Sprintf("idlelab%d", index))
	var addrs []resolver.Address
	switch spec.LB {
	case "pick_first":
		addrs = []resolver.Address{{Addr: spec.Targets[0]}}
	case "round_robin":
		all, err := resolveAll(spec.Targets)
		if err != nil {
			return nil, err
		}
		for _, t := range all {
			addrs = append(addrs, resolver.Address{Addr: t})
		}
	default:
		return nil, fmt.Errorf("grpc-go has no load balancing policy %q here: pick_first or round_robin", spec.LB)
	}
	r.InitialState(resolver.State{Addresses: addrs})
	conn, err := grpc.NewClient(r.Scheme()+":///replicas",
		grpc.WithResolvers(r),
		// The :authority an app dialing the Service's address sends (`passthrough:///ip:port`):
		// a client sidecar routes by it, and an authority it does not know goes to Istio's
		// PassthroughCluster, back through the ClusterIP.
		grpc.WithAuthority(spec.Targets[0]),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig": [{%q: {}}]}`, spec.LB)),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(whoCodec{})),
	)
	if err != nil {
		return nil, err
	}
	// Connect now, as the tonic probe does: a channel that cannot connect fails the run.
	conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(spec.RequestTimeoutMs)*time.Millisecond)
	defer cancel()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			conn.Close()
			return nil, fmt.Errorf("gRPC channel %d: connect to %s: still %v after %d ms", index, strings.Join(spec.Targets, ","), state, spec.RequestTimeoutMs)
		}
	}
	return conn, nil
}

func unixMs() uint64 { return uint64(time.Now().UnixMilli()) }

// callLoop calls every interval until `until`, each call bounded by the request timeout.
func callLoop(spec *grpcSpec, index int, conn *grpc.ClientConn, until time.Time) []grpcRequest {
	timeout := time.Duration(spec.RequestTimeoutMs) * time.Millisecond
	ticker := time.NewTicker(time.Duration(spec.IntervalMs) * time.Millisecond)
	defer ticker.Stop()
	var out []grpcRequest
	for seq := uint64(0); ; seq++ {
		if seq > 0 {
			<-ticker.C
		}
		if !time.Now().Before(until) {
			return out
		}
		r := grpcRequest{UnixMs: unixMs(), Channel: index}
		started := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		var reply whoReply
		err := conn.Invoke(ctx, whoMethod, &whoRequest{client: spec.Client, seq: seq}, &reply)
		cancel()
		r.LatencyMs = uint64(time.Since(started).Milliseconds())
		if err != nil {
			s := status.Convert(err)
			// grpc-go's code names (`Unavailable`, `DeadlineExceeded`) are the report's (tonic's).
			r.Code, r.Message = s.Code().String(), s.Message()
		} else {
			replica := reply.replica
			r.Replica = &replica
		}
		out = append(out, r)
	}
}

func runGrpcBalance(in io.Reader, out io.Writer) error {
	var spec grpcSpec
	if err := json.NewDecoder(in).Decode(&spec); err != nil {
		return fmt.Errorf("bad gRPC probe spec: %v", err)
	}
	if len(spec.Targets) == 0 || spec.IntervalMs == 0 || spec.Channels < 1 {
		return fmt.Errorf("a gRPC probe needs targets, channels ≥ 1 and interval_ms > 0")
	}
	conns := make([]*grpc.ClientConn, 0, spec.Channels)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < spec.Channels; i++ {
		c, err := dialChannel(&spec, i)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	until := time.Now().Add(time.Duration(spec.DurationMs) * time.Millisecond)
	var (
		mu  sync.Mutex
		all []grpcRequest
		wg  sync.WaitGroup
	)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := callLoop(&spec, i, c, until)
			mu.Lock()
			all = append(all, reqs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.SliceStable(all, func(a, b int) bool { return all[a].UnixMs < all[b].UnixMs })
	if all == nil {
		all = []grpcRequest{}
	}
	line, err := json.Marshal(grpcReport{Client: spec.Client, Requests: all, PeakRssKib: statusKib("VmHWM")})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(line))
	return err
}
