package main

import (
	"fmt"
	"os"
	"sync"

	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
)

// failer is the test.Failer the fake discovery server is built with, for a long-running process:
// Fatal ends the process (exit 1), Cleanup callbacks are kept and run, newest first, at shutdown.
type failer struct {
	mu       sync.Mutex
	cleanups []func()
}

var _ test.Failer = (*failer)(nil)

func newFailer() *failer { return &failer{} }

func (f *failer) Fail()                             { f.FailNow() }
func (f *failer) FailNow()                          { fail(1, "fatal: FailNow called") }
func (f *failer) Fatal(args ...any)                 { fail(1, "fatal: %s", fmt.Sprint(args...)) }
func (f *failer) Fatalf(format string, args ...any) { fail(1, "fatal: "+format, args...) }
func (f *failer) Skip(args ...any)                  { fail(1, "fatal: skip: %s", fmt.Sprint(args...)) }
func (f *failer) Log(args ...any)                   { log.Info(fmt.Sprint(args...)) }
func (f *failer) Logf(format string, args ...any)   { log.Infof(format, args...) }
func (f *failer) Helper()                           {}

func (f *failer) TempDir() string {
	d, err := os.MkdirTemp("", "idlelab-xds-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func (f *failer) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *failer) runCleanups() {
	f.mu.Lock()
	c := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}
