package tunnel

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// TestNonReadingCallerDoesNotPinRelay is issue 8 item 3: a caller sends
// 4 MB, never reads the reply and disconnects while the upstream keeps
// sending. Both relays must end within a bounded time; before the session
// layer had stream resets, the client's relay stayed blocked in Write until
// the session ended.
func TestNonReadingCallerDoesNotPinRelay(t *testing.T) {
	up := testsupport.Serve(t, func(c net.Conn) {
		go func() { _, _ = io.Copy(io.Discard, c) }()
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	s := startServer(t, serverConfig("gw"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": up}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	conn := dial(t, s.ListenerAddr("gw"))
	_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(make([]byte, 4<<20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "client relay open", 5*time.Second, func() bool {
		return metric(t, c.m, "l5d_tunnel_streams_open", "listener", "gw") == 1
	})
	_ = conn.Close()
	waitFor(t, "server relay ended", 20*time.Second, func() bool {
		return metric(t, s.m, "l5d_tunnel_streams_open", "listener", "gw") == 0
	})
	waitFor(t, "client relay ended", 20*time.Second, func() bool {
		return metric(t, c.m, "l5d_tunnel_streams_open", "listener", "gw") == 0
	})
}

// TestStreamCapRefusesAtOnce: past --max-streams a caller's connection is
// closed at once (not queued), the refusal is counted, and a slot that
// frees up is usable again.
func TestStreamCapRefusesAtOnce(t *testing.T) {
	scfg := serverConfig("gw")
	scfg.Session.MaxStreams = 4
	s := startServer(t, scfg)
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	var held []*net.TCPConn
	for range 4 {
		conn := dial(t, s.ListenerAddr("gw"))
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	expectReset(t, s.ListenerAddr("gw")) // over the cap
	waitFor(t, "refusal counted", 10*time.Second, func() bool {
		return metric(t, s.m, "l5d_tunnel_refused_streams_total", "reason", "stream_limit") == 1
	})
	_ = held[0].CloseWrite()
	_, _ = io.Copy(io.Discard, held[0])
	_ = held[0].Close()
	waitFor(t, "slot freed", 10*time.Second, func() bool { return s.conns.count() == 3 })
	if got, err := roundTrip(t, s.ListenerAddr("gw"), "again"); err != nil || got != "again" {
		t.Fatalf("after a slot freed: %q %v", got, err)
	}
}

// TestHostileServerStreamCap is issue 8 item 9: a server that opens more
// streams than the client's cap (default 1024) gets the excess refused at
// once; the client dials its upstream at most once per admitted stream.
func TestHostileServerStreamCap(t *testing.T) {
	const opened = 1200
	hold := make(chan struct{})
	var dials atomic.Int64
	up := testsupport.Serve(t, func(c net.Conn) { dials.Add(1); <-hold })
	url := fakeServer(t, func(ws *websocket.Conn) {
		cfg := steadySession()
		cfg.MaxStreams = 1 << 16
		sess, err := smux.Server(smux.NewConn(ws, cfg.KeepAliveTimeout), cfg)
		if err != nil {
			return
		}
		defer sess.Close()
		for range opened {
			st, err := sess.OpenStream()
			if err != nil {
				return
			}
			if err := smux.WriteHeader(st, smux.Header{Listener: "gw"}); err != nil {
				return
			}
		}
		<-hold
	})
	cfg := DefaultClientConfig()
	cfg.ServerURL = url
	cfg.Token = "whatever"
	cfg.AdminAddr = ""
	cfg.Session = steadySession()
	cfg.Upstreams = []Endpoint{{Name: "gw", Addr: up}}
	c, _ := startClient(t, cfg)
	t.Cleanup(func() { close(hold) }) // before the client's drain (cleanups run last first)
	limit := cfg.Session.MaxStreams
	waitFor(t, "refusals counted", 30*time.Second, func() bool {
		return metric(t, c.m, "l5d_tunnel_refused_streams_total", "reason", "stream_limit") == float64(opened-limit)
	})
	waitFor(t, "admitted streams dialed", 30*time.Second, func() bool { return dials.Load() == int64(limit) })
	if n := dials.Load(); n > int64(limit) {
		t.Fatalf("client dialed its upstream %d times for a cap of %d", n, limit)
	}
	if !c.Ready() {
		t.Fatal("client lost its session over refused streams")
	}
}

// TestSessionFlagsNamed: a bad session setting names its field (the
// command line maps it to the flag).
func TestSessionFlagsNamed(t *testing.T) {
	for flag, set := range map[string]func(*smux.Config){
		"Session.MaxStreams":      func(c *smux.Config) { c.MaxStreams = 0 },
		"Session.MaxStreamWindow": func(c *smux.Config) { c.MaxStreamWindow = 999999999999 },
		"Session.SessionBudget":   func(c *smux.Config) { c.SessionBudget = 10 },
		"Session.MaxFrameSize":    func(c *smux.Config) { c.MaxFrameSize = 70000 },
		"Session.ReadBufferSize":  func(c *smux.Config) { c.ReadBufferSize = 999999999999 },
		"Session.WriteBufferSize": func(c *smux.Config) { c.WriteBufferSize = 1 },
	} {
		cfg := serverConfig("gw")
		set(&cfg.Session)
		err := cfg.Validate()
		var fe *FieldError
		if !errors.Is(err, ErrConfig) || !errors.As(err, &fe) || fe.Field != flag {
			t.Errorf("%s: Validate() = %v, want a FieldError naming the field", flag, err)
		}
	}
}
