package main

// The four libraries, each with its own pool and its defaults unless the spec sets a value.
// Each setup returns the settings in the library's own words (they end up in the report).

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
	"strings"
	"sync"
	"time"

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

// --- go-redis -------------------------------------------------------------------------

type goRedis struct {
	p   *probe
	opt *redis.Options
	c   *redis.Client
}

func (g *goRedis) setup(p *probe) ([]string, error) {
	s := &p.spec
	g.p = p
	g.opt = &redis.Options{
		Addr:         s.Target,
		Dialer:       p.dial,
		PoolSize:     s.Pool,
		DialTimeout:  s.requestTimeout(),
		ReadTimeout:  s.requestTimeout(),
		WriteTimeout: s.requestTimeout(),
		// Defaults otherwise: MaxRetries 3, the pool's FIN check at checkout.
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

func redisGet(ctx context.Context, c *redis.Client) error {
	err := c.Get(ctx, "idlelab").Err()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

func (g *goRedis) request(ctx context.Context) error { return redisGet(ctx, g.c) }

func (g *goRedis) fresh(ctx context.Context) error {
	c := redis.NewClient(g.opt)
	defer c.Close()
	return redisGet(ctx, c)
}

func (g *goRedis) close() { _ = g.c.Close() }

// --- database/sql + go-sql-driver/mysql -----------------------------------------------

type goSQL struct {
	p    *probe
	conn driver.Connector
	db   *sql.DB
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
	cfg.Timeout = s.requestTimeout()
	cfg.ReadTimeout = s.requestTimeout()
	cfg.WriteTimeout = s.requestTimeout()
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	g.conn = c
	g.db = g.open()
	return []string{
		fmt.Sprintf("database/sql DB.SetMaxIdleConns(%d) (the scenario's pool; database/sql keeps 2 by default)", s.Pool),
		fmt.Sprintf("DB.SetConnMaxIdleTime(%v), DB.SetConnMaxLifetime(%v) (0: no limit, the default)", ms(s.PoolMaxIdleMs), ms(s.PoolMaxLifetimeMs)),
		"go-sql-driver/mysql CheckConnLiveness = true (default)",
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

func selectOne(ctx context.Context, db *sql.DB) error {
	var n int
	return db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
}

func (g *goSQL) request(ctx context.Context) error { return selectOne(ctx, g.db) }

func (g *goSQL) fresh(ctx context.Context) error {
	db := g.open()
	defer db.Close()
	return selectOne(ctx, db)
}

func (g *goSQL) close() { _ = g.db.Close() }

// --- gomemcache -------------------------------------------------------------------------

type goMemcache struct {
	p *probe
	c *memcache.Client
}

func (g *goMemcache) client() *memcache.Client {
	s := &g.p.spec
	c := memcache.New(s.Target)
	c.DialContext = g.p.dial
	c.Timeout = s.requestTimeout()
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
		fmt.Sprintf("gomemcache Client{MaxIdleConns: %d (the scenario's pool; default 2), Timeout: %v}", s.Pool, s.requestTimeout()),
		keepaliveNote(s),
	}, nil
}

// warm runs concurrent sets until the pool holds `pool` connections: gomemcache opens one
// per concurrent call that finds no idle one.
func (g *goMemcache) warm(ctx context.Context) error {
	for round := 0; round < 50 && len(g.p.snapshot()) < g.p.spec.Pool; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, g.p.spec.Pool)
		for i := 0; i < g.p.spec.Pool; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs <- g.c.Set(&memcache.Item{Key: "idlelab", Value: []byte(strings.Repeat("x", 8))})
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func memcacheGet(c *memcache.Client) error {
	_, err := c.Get("idlelab")
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	return err
}

func (g *goMemcache) request(context.Context) error { return memcacheGet(g.c) }

func (g *goMemcache) fresh(context.Context) error {
	c := g.client()
	defer c.Close()
	return memcacheGet(c)
}

func (g *goMemcache) close() { _ = g.c.Close() }

// --- net/http ---------------------------------------------------------------------------

type goHTTP struct {
	p      *probe
	client *http.Client
	base   string
}

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
	g.client = &http.Client{Transport: tr, Timeout: s.requestTimeout()}
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
		keepaliveNote(s),
	}, nil
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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

func (g *goHTTP) warm(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, g.p.spec.Pool)
	for i := 0; i < g.p.spec.Pool; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- get(ctx, g.client, g.base+"/warm")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (g *goHTTP) request(ctx context.Context) error { return get(ctx, g.client, g.base+"/") }

func (g *goHTTP) fresh(ctx context.Context) error {
	tr, err := g.transport()
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	return get(ctx, &http.Client{Transport: tr, Timeout: g.p.spec.requestTimeout()}, g.base+"/")
}

func (g *goHTTP) close() { g.client.CloseIdleConnections() }

var _ = time.Second
