package main

// The probe contract (scenarios/PROBE.md): the spec the lab sends on stdin and the JSON lines
// the probe prints. Field names are the contract's.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

type keepaliveSecs struct {
	TimeS     uint64 `json:"time_s"`
	IntervalS uint64 `json:"interval_s"`
	Probes    uint32 `json:"probes"`
}

type spec struct {
	Service           string          `json:"service"`
	Library           string          `json:"library"`
	Target            string          `json:"target"`
	Pool              int             `json:"pool"`
	Keepalive         *keepaliveSecs  `json:"keepalive"`
	IdleMs            uint64          `json:"idle_ms"`
	HeartbeatMs       *uint64         `json:"heartbeat_ms"`
	PoolMaxIdleMs     *uint64         `json:"pool_max_idle_ms"`
	TCPUserTimeoutMs  *uint64         `json:"tcp_user_timeout_ms"`
	RequestTimeoutMs  uint64          `json:"request_timeout_ms"`
	TLSCAPem          *string         `json:"tls_ca_pem"`
	TestOnBorrow      bool            `json:"test_on_borrow"`
	PoolMaxLifetimeMs *uint64         `json:"pool_max_lifetime_ms"`
	Authority         *string         `json:"authority"`
	HTTP2Keepalive    *http2Keepalive `json:"http2_keepalive"`
}

// http2Keepalive is gRPC's HTTP/2 keepalive (scaled), for grpc-go's keepalive.ClientParameters.
type http2Keepalive struct {
	IntervalMs uint64 `json:"interval_ms"`
	TimeoutMs  uint64 `json:"timeout_ms"`
	WhileIdle  bool   `json:"while_idle"`
}

func (s *spec) requestTimeout() time.Duration {
	return time.Duration(s.RequestTimeoutMs) * time.Millisecond
}

// libraryTimeout is what the probe gives a library's own timers (read and write timeouts,
// the dial, a client's overall timeout): the request timeout plus a clear margin (half of it,
// at least 1 s), so that the request deadline, the probe's context, is the one thing that
// ends a wait with no answer, whichever timer the scheduler runs first.
func (s *spec) libraryTimeout() time.Duration {
	rt := s.requestTimeout()
	return rt + max(rt/2, time.Second)
}

func ms(p *uint64) time.Duration {
	if p == nil {
		return 0
	}
	return time.Duration(*p) * time.Millisecond
}

type attempt struct {
	AtMs      uint64 `json:"at_ms"`
	LatencyMs uint64 `json:"latency_ms"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error,omitempty"`
	// The local ip:port of the socket that carried the request (absent: none did).
	LocalAddr string `json:"local_addr,omitempty"`
}

type connObservation struct {
	ID                  int      `json:"id"`
	LocalAddr           string   `json:"local_addr"`
	OpenedMs            uint64   `json:"opened_ms"`
	LastActivityMs      uint64   `json:"last_activity_ms"`
	Heartbeats          uint32   `json:"heartbeats"`
	PeerClosedMs        *uint64  `json:"peer_closed_ms,omitempty"`
	PeerResetMs         *uint64  `json:"peer_reset_ms,omitempty"`
	TimedOutMs          *uint64  `json:"timed_out_ms,omitempty"`
	ReplacedBeforeUse   *string  `json:"replaced_before_use,omitempty"`
	Reuse               attempt  `json:"reuse"`
	RetryAfterReconnect *attempt `json:"retry_after_reconnect,omitempty"`
	Reconnects          uint32   `json:"reconnects"`
	Keepalive           bool     `json:"keepalive"`
}

type observations struct {
	Service        string            `json:"service"`
	Target         string            `json:"target"`
	Pool           int               `json:"pool"`
	IdleStartedMs  uint64            `json:"idle_started_ms"`
	IdleMs         uint64            `json:"idle_ms"`
	ReuseStartedMs uint64            `json:"reuse_started_ms"`
	Connections    []connObservation `json:"connections"`
	FinishedMs     uint64            `json:"finished_ms"`
	PeakRSSKiB     uint64            `json:"peak_rss_kib"`
	Notes          []string          `json:"notes,omitempty"`
}

type phaseLine struct {
	Name   string  `json:"name"`
	Ms     uint64  `json:"ms"`
	IdleMs *uint64 `json:"idle_ms,omitempty"`
}

// stdout is where the contract's lines go (a test swaps it).
var stdout io.Writer = os.Stdout

// emit prints one contract line: {"phase": …}, {"observations": …} or {"error": …}.
func emit(key string, v any) {
	b, err := json.Marshal(map[string]any{key: v})
	if err != nil {
		panic(err)
	}
	fmt.Fprintln(stdout, string(b))
}

func emitPhase(name string, at uint64, idleMs *uint64) {
	emit("phase", phaseLine{Name: name, Ms: at, IdleMs: idleMs})
}
