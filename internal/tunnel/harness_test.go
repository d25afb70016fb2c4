package tunnel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

const testToken = "test-token-0123456789"

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TUNNEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// steadySession is used by tests that are not about dead peers: a short
// interval, but a timeout long enough that a starved CI machine never drops
// a healthy session mid-test.
func steadySession() smux.Config {
	c := smux.DefaultConfig()
	c.KeepAliveInterval = 500 * time.Millisecond
	c.KeepAliveTimeout = 10 * time.Second
	return c
}

// fastSession keeps keepalives short so dead-peer tests finish quickly.
func fastSession() smux.Config {
	c := smux.DefaultConfig()
	c.KeepAliveInterval = 100 * time.Millisecond
	c.KeepAliveTimeout = 700 * time.Millisecond
	return c
}

func serverConfig(ports ...string) ServerConfig {
	cfg := DefaultServerConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Token = testToken
	cfg.Session = steadySession()
	cfg.DrainGrace = 2 * time.Second
	for _, p := range ports {
		cfg.Ports = append(cfg.Ports, Endpoint{Name: p, Addr: "127.0.0.1:0"})
	}
	return cfg
}

func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	s, err := NewServer(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(0) })
	return s
}

func clientConfig(s *Server, upstreams map[string]string) ClientConfig {
	cfg := DefaultClientConfig()
	cfg.ServerURL = "ws://" + s.Addr() + TunnelPath
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Token = testToken
	cfg.Session = steadySession()
	cfg.BackoffMin = 20 * time.Millisecond
	cfg.BackoffMax = 200 * time.Millisecond
	cfg.DrainGrace = 2 * time.Second
	for name, addr := range upstreams {
		cfg.Upstreams = append(cfg.Upstreams, Endpoint{Name: name, Addr: addr})
	}
	return cfg
}

// startClient runs a client until the test ends (or stop is called).
func startClient(t testing.TB, cfg ClientConfig) (c *Client, stop func()) {
	t.Helper()
	c, err := NewClient(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("client.Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return c, stop
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echo copies everything back and half-closes at EOF.
func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := tryDial(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryDial connects to addr. A tunnel that refuses a connection may reset
// it before the dialing goroutine has looked at the connect result, so a
// dial can fail with ECONNRESET; that is returned, anything else is fatal.
func tryDial(t testing.TB, addr string) (*net.TCPConn, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil, err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), nil
}

// roundTrip sends msg, half-closes, and returns everything read back.
func roundTrip(t testing.TB, addr, msg string) (string, error) {
	t.Helper()
	c, err := tryDial(t, addr)
	if err != nil {
		return "", err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// expectClosed checks that the server closes a connection on addr without
// sending anything (EOF or reset), rather than holding it open.
func expectClosed(t testing.TB, addr string) {
	t.Helper()
	c, err := tryDial(t, addr)
	if err != nil {
		return // reset
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection to %s held open (black-holed) instead of closed", addr)
	}
	if n != 0 || err == nil {
		t.Fatalf("connection to %s: read %d bytes, err %v; want closed", addr, n, err)
	}
}

func httpStatus(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func readyz(t testing.TB, admin string) int { return httpStatus(t, "http://"+admin+"/readyz") }

// metric reads one sample from a metrics registry by name and labels.
func metric(t testing.TB, m *metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, s := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range s.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case s.Counter != nil:
				return s.Counter.GetValue()
			case s.Gauge != nil:
				return s.Gauge.GetValue()
			}
		}
	}
	return 0
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ = strings.TrimSpace
