package main

// The four libraries, each with its own pool and its defaults unless the spec sets a value.
// Each setup returns the settings in the library's own words (they end up in the report).
//
// Timeouts: every library timer (read, write, dial, a client's overall timeout) is
// spec.libraryTimeout(), the request timeout plus a clear margin, so that the request deadline
// (probe.do) is the one thing that ends a wait with no answer.
//
// The reuse takes each pooled connection out of the pool once, holding every one it took
// until all requests have one: database/sql's DB.Conn and go-redis's Client.Conn hold a
// connection by API; gomemcache (no checkout API) and net/http (a connection is back in the
// pool once its answer is read) send their requests at once behind a gate (observe.go).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

func keepaliveNote(s *spec) string {
	if ka := s.Keepalive; ka != nil {
		return fmt.Sprintf("net.Dialer.KeepAliveConfig{Idle: %ds, Interval: %ds, Count: %d}", ka.TimeS, ka.IntervalS, ka.Probes)
	}
	return "net.Dialer.KeepAlive = -1 (off)"
}

func deadlineNote(s *spec, timers string) string {
	return fmt.Sprintf("%s = %v: the request timeout (%v) plus a margin, so that the request's context deadline, not a library timer, ends a wait with no answer",
		timers, s.libraryTimeout(), s.requestTimeout())
}

// concurrently runs fn(i) for i in 0..n-1, all started at once; returns the first error.
func concurrently(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errors.Join(errs...)
}

// --- go-redis -------------------------------------------------------------------------

type goRedis struct {
	p   *probe
	opt *redis.Options
	c   *redis.Client
}

func (g *goRedis) words() (string, string) { return "go-redis", "go-redis checked out" }

func (g *goRedis) setup(p *probe) ([]string, error) {
	s := &p.spec
	g.p = p
	g.opt = &redis.Options{
		Addr:         s.Target,
		Dialer:       p.dial,
		PoolSize:     s.Pool,
		DialTimeout:  s.libraryTimeout(),
		ReadTimeout:  s.libraryTimeout(),
		WriteTimeout: s.libraryTimeout(),
		// Defaults otherwise: MaxRetries 3, the pool's FIN check at checkout,
		// ContextTimeoutEnabled false (the probe's own deadline ends the wait).
		ConnMaxIdleTime: -1,
		ConnMaxLifetime: ms(s.PoolMaxLifetimeMs),
	}
	if s.PoolMaxIdleMs != nil {
		g.opt.ConnMaxIdleTime = ms(s.PoolMaxIdleMs)
	}
	if s.TestOnBorrow {
		return nil, errors.New("go-redis has no test-on-borrow")
	}
	g.c = redis.NewClient(g.opt)
	return []string{
		"go-redis v9 Options{PoolSize: " + fmt.Sprint(s.Pool) + ", MaxRetries: 3 (default)}",
		fmt.Sprintf("ConnMaxIdleTime = %v, ConnMaxLifetime = %v", g.opt.ConnMaxIdleTime, g.opt.ConnMaxLifetime),
		deadlineNote(s, "go-redis Options.ReadTimeout = WriteTimeout = DialTimeout"),
		keepaliveNote(s),
	}, nil
}

func (g *goRedis) warm(ctx context.Context) error {
	conns := make([]*redis.Conn, g.p.spec.Pool)
	for i := range conns {
		conns[i] = g.c.Conn()
		if err := conns[i].Set(ctx, "idlelab", i, 0).Err(); err != nil {
			return err
		}
	}
	for _, c := range conns {
		_ = c.Close() // back to the pool
	}
	return nil
}

type redisGetter interface {
	Get(ctx context.Context, key string) *redis.StringCmd
}

func redisGet(ctx context.Context, c redisGetter, key string) error {
	err := c.Get(ctx, key).Err()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

func (g *goRedis) reuse(reqs []*request) (string, func()) {
	held := make([]*redis.Conn, 0, len(reqs))
	for _, r := range reqs {
		c := g.c.Conn() // checks a pooled connection out at its first command, and keeps it
		held = append(held, c)
		g.p.send(r, func(ctx context.Context) error { return redisGet(ctx, c, r.tag) })
	}
	note := fmt.Sprintf("reuse: go-redis Client.Conn() ×%d, each held until every request had one (a command on a held Conn stays on its connection: go-redis's retries do not move it)", len(reqs))
	return note, func() {
		for _, c := range held {
			_ = c.Close()
		}
	}
}

func (g *goRedis) fresh(ctx context.Context, tag string) error {
	c := redis.NewClient(g.opt)
	defer c.Close()
	return redisGet(ctx, c, tag)
}

func (g *goRedis) close() { _ = g.c.Close() }

// --- database/sql + go-sql-driver/mysql -----------------------------------------------

type goSQL struct {
	p    *probe
	cfg  *mysql.Config
	conn driver.Connector
	db   *sql.DB
}

func (g *goSQL) words() (string, string) {
	return "database/sql", "database/sql retried the request on"
}

func (g *goSQL) setup(p *probe) ([]string, error) {
	s := &p.spec
	g.p = p
	mysql.RegisterDialContext("idlelab", func(ctx context.Context, addr string) (net.Conn, error) {
		return p.dial(ctx, "tcp", addr)
	})
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "idlelab"
	cfg.Addr = s.Target
	cfg.Timeout = s.libraryTimeout()
	cfg.ReadTimeout = s.libraryTimeout()
	cfg.WriteTimeout = s.libraryTimeout()
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	g.cfg = cfg
	g.conn = c
	g.db = g.open()
	return []string{
		fmt.Sprintf("database/sql DB.SetMaxIdleConns(%d) (the scenario's pool; database/sql keeps 2 by default)", s.Pool),
		fmt.Sprintf("DB.SetConnMaxIdleTime(%v), DB.SetConnMaxLifetime(%v) (0: no limit, the default)", ms(s.PoolMaxIdleMs), ms(s.PoolMaxLifetimeMs)),
		"go-sql-driver/mysql CheckConnLiveness = true (default)",
		deadlineNote(s, "go-sql-driver/mysql Config.ReadTimeout = WriteTimeout = Timeout"),
		keepaliveNote(s),
	}, nil
}

func (g *goSQL) open() *sql.DB {
	s := &g.p.spec
	db := sql.OpenDB(g.conn)
	db.SetMaxIdleConns(s.Pool)
	db.SetConnMaxIdleTime(ms(s.PoolMaxIdleMs))
	db.SetConnMaxLifetime(ms(s.PoolMaxLifetimeMs))
	return db
}

func (g *goSQL) warm(ctx context.Context) error {
	conns := make([]*sql.Conn, g.p.spec.Pool)
	for i := range conns {
		c, err := g.db.Conn(ctx)
		if err != nil {
			return err
		}
		conns[i] = c
		var n int
		if err := c.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil {
			return err
		}
	}
	for _, c := range conns {
		_ = c.Close() // back to the pool
	}
	return nil
}

func selectOne(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, tag string) error {
	var n int
	return q.QueryRowContext(ctx, "SELECT 1 /* "+tag+" */").Scan(&n)
}

func (g *goSQL) reuse(reqs []*request) (string, func()) {
	var mu sync.Mutex
	var held []*sql.Conn
	for _, r := range reqs {
		g.p.send(r, func(ctx context.Context) error {
			// DB.Conn checks a connection out (database/sql's retry after driver.ErrBadConn,
			// e.g. go-sql-driver's liveness check, included) and holds it.
			c, err := g.db.Conn(ctx)
			if err != nil {
				return err
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			return selectOne(ctx, c, r.tag)
		})
	}
	note := fmt.Sprintf("reuse: database/sql DB.Conn(ctx) ×%d, each held until every request had one", len(reqs))
	return note, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	}
}

func (g *goSQL) fresh(ctx context.Context, tag string) error {
	db := g.open()
	defer db.Close()
	return selectOne(ctx, db, tag)
}

func (g *goSQL) close() { _ = g.db.Close() }

// --- gomemcache -------------------------------------------------------------------------

type goMemcache struct {
	p *probe
	c *memcache.Client
}

func (g *goMemcache) words() (string, string) { return "gomemcache", "gomemcache sent the request on" }

func (g *goMemcache) client() *memcache.Client {
	s := &g.p.spec
	c := memcache.New(s.Target)
	c.DialContext = g.p.dial
	c.Timeout = s.libraryTimeout()
	c.MaxIdleConns = s.Pool
	return c
}

func (g *goMemcache) setup(p *probe) ([]string, error) {
	s := &p.spec
	g.p = p
	if s.PoolMaxIdleMs != nil || s.PoolMaxLifetimeMs != nil || s.TestOnBorrow {
		return nil, errors.New("gomemcache has no idle-time, lifetime or test-on-borrow setting for its pool")
	}
	g.c = g.client()
	return []string{
		fmt.Sprintf("gomemcache Client{MaxIdleConns: %d (the scenario's pool; default 2)}", s.Pool),
		deadlineNote(s, "gomemcache Client.Timeout"),
		keepaliveNote(s),
	}, nil
}

// warm sends `pool` concurrent sets behind the gate: each takes its own connection.
func (g *goMemcache) warm(context.Context) error {
	n := g.p.spec.Pool
	g.p.armGate("warm", n)
	return concurrently(n, func(i int) error {
		tag := fmt.Sprintf("idlelab-warm-%d", i)
		return g.p.gated(tag, func() error {
			return g.c.Set(&memcache.Item{Key: tag, Value: []byte(strings.Repeat("x", 8))})
		})
	})
}

func memcacheGet(c *memcache.Client, key string) error {
	_, err := c.Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	return err
}

func (g *goMemcache) reuse(reqs []*request) (string, func()) {
	g.p.armGate("reuse", len(reqs))
	_ = concurrently(len(reqs), func(i int) error {
		r := reqs[i]
		g.p.send(r, func(context.Context) error { return memcacheGet(g.c, r.tag) })
		return nil
	})
	note := fmt.Sprintf("reuse: %d gomemcache Gets sent at once (it has no checkout API); each answer was handed to gomemcache once every Get had a connection, so each took a distinct one", len(reqs))
	return note, func() {}
}

func (g *goMemcache) fresh(_ context.Context, tag string) error {
	c := g.client()
	defer c.Close()
	return memcacheGet(c, tag)
}

func (g *goMemcache) close() { _ = g.c.Close() }

// --- net/http ---------------------------------------------------------------------------

type goHTTP struct {
	p      *probe
	client *http.Client
	base   string
}

func (g *goHTTP) words() (string, string) { return "net/http", "net/http retried the request on" }

func (g *goHTTP) transport() (*http.Transport, error) {
	s := &g.p.spec
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = g.p.dial
	tr.MaxIdleConnsPerHost = s.Pool
	tr.IdleConnTimeout = ms(s.PoolMaxIdleMs)
	// HTTP/1.1: the lab's server speaks it only.
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if s.TLSCAPem != nil {
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(*s.TLSCAPem)) {
			return nil, errors.New("tls_ca_pem holds no certificate")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, ServerName: "idlelab.test"}
	}
	return tr, nil
}

func (g *goHTTP) setup(p *probe) ([]string, error) {
	s := &p.spec
	g.p = p
	if s.PoolMaxLifetimeMs != nil || s.TestOnBorrow {
		return nil, errors.New("net/http's Transport has no connection lifetime or test-on-borrow")
	}
	tr, err := g.transport()
	if err != nil {
		return nil, err
	}
	g.client = &http.Client{Transport: tr, Timeout: s.libraryTimeout()}
	scheme := "http"
	if s.TLSCAPem != nil {
		scheme = "https"
	}
	host := "idlelab.test"
	if s.Authority != nil {
		host = *s.Authority
	}
	g.base = scheme + "://" + host
	return []string{
		fmt.Sprintf("net/http DefaultTransport clone: MaxIdleConnsPerHost = %d (the scenario's pool; default 2), IdleConnTimeout = %v, HTTP/1.1", s.Pool, tr.IdleConnTimeout),
		deadlineNote(s, "net/http Client.Timeout"),
		keepaliveNote(s),
	}, nil
}

// get sends GET path tagged `tag`: httptrace's GotConn names each connection that carries it
// (the first one, and net/http's retry's).
func (g *goHTTP) get(ctx context.Context, c *http.Client, path, tag string) error {
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { g.p.carried(tag, logOf(info.Conn)) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 500 {
		return fmt.Errorf("HTTP %d (server: %s): %s", resp.StatusCode, resp.Header.Get("Server"), strings.TrimSpace(string(body)))
	}
	return nil
}

// warm sends `pool` concurrent GET /warm behind the gate: each takes its own connection.
func (g *goHTTP) warm(ctx context.Context) error {
	n := g.p.spec.Pool
	g.p.armGate("warm", n)
	return concurrently(n, func(i int) error {
		tag := fmt.Sprintf("idlelab-warm-%d", i)
		return g.p.gated(tag, func() error { return g.get(ctx, g.client, "/warm", tag) })
	})
}

func (g *goHTTP) reuse(reqs []*request) (string, func()) {
	g.p.armGate("reuse", len(reqs))
	_ = concurrently(len(reqs), func(i int) error {
		r := reqs[i]
		g.p.send(r, func(ctx context.Context) error { return g.get(ctx, g.client, "/", r.tag) })
		return nil
	})
	note := fmt.Sprintf("reuse: %d net/http GETs sent at once; each answer was handed to net/http once every GET had a connection (httptrace GotConn), so each took a distinct one", len(reqs))
	return note, func() {}
}

func (g *goHTTP) fresh(ctx context.Context, tag string) error {
	tr, err := g.transport()
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	return g.get(ctx, &http.Client{Transport: tr, Timeout: g.p.spec.libraryTimeout()}, "/", tag)
}

func (g *goHTTP) close() { g.client.CloseIdleConnections() }

// libraryFor is the library the spec names, refused when it cannot do what the spec asks.
func libraryFor(s *spec) (library, error) {
	want := map[string]string{"go-redis": "redis", "go-sql-driver": "mysql", "gomemcache": "memcached", "go-net-http": "http", "grpc-go": "grpc"}
	svc, ok := want[s.Library]
	if !ok {
		return nil, fmt.Errorf("idlelab-probe-go has no library %q (it has go-redis, go-sql-driver, gomemcache, go-net-http, grpc-go)", s.Library)
	}
	if svc != s.Service && !(svc == "http" && s.Service == "https") {
		return nil, fmt.Errorf("library %s does not speak %s", s.Library, s.Service)
	}
	if s.HeartbeatMs != nil {
		return nil, fmt.Errorf("%s owns its pool: the probe cannot ping each idle connection (heartbeat)", s.Library)
	}
	switch s.Library {
	case "go-redis":
		return &goRedis{}, nil
	case "go-sql-driver":
		if s.TestOnBorrow {
			return nil, errors.New("database/sql has no test-on-borrow")
		}
		return &goSQL{}, nil
	case "gomemcache":
		return &goMemcache{}, nil
	case "grpc-go":
		return &grpcGo{}, nil
	default:
		return &goHTTP{}, nil
	}
}
