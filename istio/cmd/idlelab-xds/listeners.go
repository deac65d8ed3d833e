package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
)

// fdList collects repeated --listen-fd flags.
type fdList []int

func (f *fdList) String() string { return fmt.Sprint(*f) }

func (f *fdList) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 3 {
		return fmt.Errorf("--listen-fd takes an inherited file descriptor number (3 or more), got %q", s)
	}
	*f = append(*f, n)
	return nil
}

// inherited turns listening sockets the parent passed down (opened in other network
// namespaces: the server pod's, the gateway's) into net.Listeners. One control plane then
// serves every proxy of a cell, each on 127.0.0.1:15010 of its own namespace, as one istiod
// serves every pod of a cluster.
func inherited(fds []int) ([]net.Listener, error) {
	var out []net.Listener
	for _, fd := range fds {
		l, err := net.FileListener(os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd)))
		if err != nil {
			return nil, fmt.Errorf("--listen-fd %d: %v", fd, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// merged is one net.Listener over several: Accept returns the next connection from any.
// NewFakeDiscoveryServer serves exactly one listener.
type merged struct {
	ls    []net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func merge(ls []net.Listener) net.Listener {
	if len(ls) == 1 {
		return ls[0]
	}
	m := &merged{ls: ls, conns: make(chan net.Conn), done: make(chan struct{})}
	for _, l := range ls {
		go func(l net.Listener) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				select {
				case m.conns <- c:
				case <-m.done:
					_ = c.Close()
					return
				}
			}
		}(l)
	}
	return m
}

func (m *merged) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *merged) Close() error {
	var errs []error
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			errs = append(errs, l.Close())
		}
	})
	return errors.Join(errs...)
}

func (m *merged) Addr() net.Addr { return m.ls[0].Addr() }
