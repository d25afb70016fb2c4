package testsupport

import (
	"bytes"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Serve listens on a loopback TCP port until the test ends and runs h on
// each accepted connection in its own goroutine, closing the connection
// when h returns. It returns the listener's address. The test's end closes
// the listener but does not wait for running handlers: a handler may be
// parked on something a later cleanup releases.
func Serve(t testing.TB, h func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); h(c) }()
		}
	}()
	return ln.Addr().String()
}

// Buffer is a bytes.Buffer that a test may read while servers or processes
// write to it (a log sink).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// EnvDuration is the positive duration in the environment variable name,
// def when it is unset; any other value fails the test.
func EnvDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration like 90s or 10m", name, s)
	}
	return d
}
