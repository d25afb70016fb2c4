package tunnel

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
)

func openFDs(t testing.TB) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(es)
}

// closedWithin reports whether the server closes c (EOF or reset) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestUnauthenticatedConnectionsBounded: connections that fail
// authentication are closed (no keep-alive after a 401), connections that
// say nothing are bounded in number and time, the failed-auth log is rate
// limited while the counter counts every attempt, and goroutines and file
// descriptors return to the baseline.
func TestUnauthenticatedConnectionsBounded(t *testing.T) {
	const n401, idle, maxPending = 2000, 60, 20
	cfg := serverConfig("gw")
	cfg.HandshakeTimeout = 3 * time.Second
	cfg.MaxPendingConns = maxPending
	var logs testsupport.Buffer
	s, err := NewServer(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(0) })
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	// 2000 wrong-token requests whose callers keep the connection open.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	sem := make(chan struct{}, maxPending/2) // within the cap: none is refused for it
	for i := 0; i < n401; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(c, "GET "+TunnelPath+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: keep-alive\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	var held atomic.Int32
	for _, c := range conns {
		wg.Go(func() {
			if !closedWithin(c, 2*time.Second) {
				held.Add(1)
			}
			c.Close()
		})
	}
	wg.Wait()
	if held.Load() > 0 {
		t.Errorf("%d of %d connections still open 2s after a 401", held.Load(), n401)
	}
	if v := metric(t, s.m, "l5d_tunnel_auth_failures_total"); v != n401 {
		t.Errorf("auth failures counted %v, want %d", v, n401)
	}
	if lines := strings.Count(logs.String(), "client rejected"); lines < 1 || lines > 2 {
		t.Errorf("%d 'client rejected' log lines for %d failures; want 1 or 2 (rate limited)", lines, n401)
	}

	// Connections that never send a byte: at most maxPending are held, the
	// others are closed at once, and the held ones after the timeout.
	var idleConns []net.Conn
	closedAtOnce := 0
	for range idle {
		c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			closedAtOnce++ // reset before the dial returned
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		idleConns = append(idleConns, c)
	}
	for _, c := range idleConns {
		if closedWithin(c, 20*time.Millisecond) {
			closedAtOnce++
		}
	}
	if closedAtOnce < idle-maxPending {
		t.Errorf("%d of %d silent connections closed at once; want at least %d (cap %d)", closedAtOnce, idle, idle-maxPending, maxPending)
	}
	for i, c := range idleConns {
		wg.Go(func() {
			if !closedWithin(c, 3*cfg.HandshakeTimeout) {
				t.Errorf("silent connection %d still open after %v", i, 3*cfg.HandshakeTimeout)
			}
			c.Close()
		})
	}
	wg.Wait()
	if v := metric(t, s.m, "l5d_tunnel_pending_conns_rejected_total"); v < idle-maxPending {
		t.Errorf("pending_conns_rejected_total %v, want at least %d", v, idle-maxPending)
	}
	waitFor(t, "no pending connection", 10*time.Second, func() bool { return metric(t, s.m, "l5d_tunnel_pending_conns") == 0 })
	settledGoroutines(t, baseG, 5)
	waitFor(t, "file descriptors back to the baseline", 10*time.Second, func() bool { return openFDs(t) <= baseFD+5 })

	// A client with the right token still gets in.
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	if metric(t, s.m, "l5d_tunnel_pending_conns") != 0 {
		t.Error("an authenticated session still counts as pending")
	}
}
