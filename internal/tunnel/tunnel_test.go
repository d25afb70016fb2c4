package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

func TestForwardAndMetrics(t *testing.T) {
	s := startServer(t, serverConfig("gw"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)}))
	waitFor(t, "client ready", 5*time.Second, c.Ready)
	waitFor(t, "server ready", 5*time.Second, s.Ready)
	if got := readyz(t, s.AdminAddr()); got != 200 {
		t.Fatalf("server /readyz = %d, want 200", got)
	}
	if got := readyz(t, c.AdminAddr()); got != 200 {
		t.Fatalf("client /readyz = %d, want 200", got)
	}
	if got := httpStatus(t, "http://"+s.AdminAddr()+"/healthz"); got != 200 {
		t.Fatalf("/healthz = %d", got)
	}
	got, err := roundTrip(t, s.ListenerAddr("gw"), "hello tunnel")
	if err != nil || got != "hello tunnel" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	waitFor(t, "stream closed", 5*time.Second, func() bool {
		return metric(t, s.m, "l5d_tunnel_streams_open", "listener", "gw") == 0 &&
			metric(t, c.m, "l5d_tunnel_streams_open", "listener", "gw") == 0
	})
	for _, m := range []*metrics{s.m, c.m} {
		if v := metric(t, m, "l5d_tunnel_bytes_total", "listener", "gw", "direction", "in"); v != 12 {
			t.Errorf("bytes in = %v, want 12", v)
		}
		if v := metric(t, m, "l5d_tunnel_bytes_total", "listener", "gw", "direction", "out"); v != 12 {
			t.Errorf("bytes out = %v, want 12", v)
		}
		if v := metric(t, m, "l5d_tunnel_streams_total", "listener", "gw"); v != 1 {
			t.Errorf("streams total = %v, want 1", v)
		}
		if v := metric(t, m, "l5d_tunnel_sessions"); v != 1 {
			t.Errorf("sessions = %v, want 1", v)
		}
	}
	resp, err := http.Get("http://" + s.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"l5d_tunnel_sessions", "l5d_tunnel_reconnects_total", "l5d_tunnel_streams_open",
		"l5d_tunnel_bytes_total", "l5d_tunnel_dial_errors_total", "l5d_tunnel_refused_streams_total", "l5d_tunnel_auth_failures_total"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if strings.Contains(string(body), testToken) {
		t.Error("/metrics contains the token")
	}
}

// patternReader yields n deterministic pseudo-random bytes.
func patternReader(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(mrand.NewChaCha8(s), n)
}

// TestLargeTransferBothDirections moves 256 MiB up and 256 MiB down at the
// same time on two streams and compares SHA-256 digests.
func TestLargeTransferBothDirections(t *testing.T) {
	const size = 256 << 20
	want := func(seed uint64) [32]byte {
		h := sha256.New()
		_, _ = io.Copy(h, patternReader(seed, size))
		var d [32]byte
		copy(d[:], h.Sum(nil))
		return d
	}
	upWant, downWant := want(1), want(2)
	// "sink" hashes what it receives and answers with the digest;
	// "source" sends the pattern.
	sink := testsupport.Serve(t, func(c net.Conn) {
		h := sha256.New()
		_, _ = io.Copy(h, c)
		_, _ = c.Write(h.Sum(nil))
	})
	source := testsupport.Serve(t, func(c net.Conn) {
		_, _ = io.Copy(c, patternReader(2, size))
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	s := startServer(t, serverConfig("sink", "source"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"sink": sink, "source": source}))
	waitFor(t, "ready", 5*time.Second, c.Ready)

	var wg sync.WaitGroup
	wg.Go(func() {
		conn := dial(t, s.ListenerAddr("sink"))
		if _, err := io.Copy(conn, patternReader(1, size)); err != nil {
			t.Errorf("upload: %v", err)
			return
		}
		_ = conn.CloseWrite() // half-close: the digest still comes back
		got, err := io.ReadAll(conn)
		if err != nil || !bytes.Equal(got, upWant[:]) {
			t.Errorf("upload digest = %x, %v; want %x", got, err, upWant)
		}
	})
	wg.Go(func() {
		conn := dial(t, s.ListenerAddr("source"))
		_ = conn.CloseWrite()
		h := sha256.New()
		n, err := io.Copy(h, conn)
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), downWant[:]) {
			t.Errorf("download: %d bytes, err %v, digest %x want %x", n, err, h.Sum(nil), downWant)
		}
	})
	wg.Wait()
}

// TestParallelStreams64 runs 64 streams at once, each with its own random
// data, and checks every echo.
func TestParallelStreams64(t *testing.T) {
	s := startServer(t, serverConfig("gw"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Go(func() {
			data := make([]byte, 512<<10+mrand.IntN(512<<10))
			_, _ = rand.Read(data)
			conn := dial(t, s.ListenerAddr("gw"))
			_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
			go func() { _, _ = conn.Write(data); _ = conn.CloseWrite() }()
			got, err := io.ReadAll(conn)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("stream %d: %d of %d bytes back, err %v, equal=%v", i, len(got), len(data), err, bytes.Equal(got, data))
			}
		})
	}
	wg.Wait()
	if v := metric(t, s.m, "l5d_tunnel_streams_total", "listener", "gw"); v != 64 {
		t.Errorf("streams_total = %v, want 64", v)
	}
}

// TestHeadOfLineProbe: upstreams of "stall" never read, so those streams
// fill their windows and stop; a stream on "gw" must still echo 16 MiB.
func TestHeadOfLineProbe(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stall := testsupport.Serve(t, func(c net.Conn) { <-release })
	s := startServer(t, serverConfig("gw", "stall"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo), "stall": stall}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	for i := 0; i < 4; i++ {
		conn := dial(t, s.ListenerAddr("stall"))
		go func() {
			junk := make([]byte, 1<<20)
			for {
				_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := conn.Write(junk); err != nil {
					return
				}
			}
		}()
	}
	// Let the stalled streams fill every buffer on the way.
	time.Sleep(300 * time.Millisecond)
	conn := dial(t, s.ListenerAddr("gw"))
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, 16<<20)
	_, _ = rand.Read(data)
	go func() { _, _ = conn.Write(data) }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("live stream blocked behind stalled streams: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("live stream data corrupted")
	}
}

// TestHalfClose: the caller shuts its write half; the home service sees EOF
// and still sends its reply, which the caller reads in full.
func TestHalfClose(t *testing.T) {
	up := testsupport.Serve(t, func(c net.Conn) {
		req, err := io.ReadAll(c) // ends at the caller's FIN
		if err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // reply well after the FIN
		_, _ = c.Write([]byte("reply to " + string(req)))
	})
	s := startServer(t, serverConfig("gw"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": up}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	got, err := roundTrip(t, s.ListenerAddr("gw"), "request")
	if err != nil || got != "reply to request" {
		t.Fatalf("got %q, %v", got, err)
	}
	// The other way round: the home service half-closes first.
	up2 := testsupport.Serve(t, func(c net.Conn) {
		_, _ = c.Write([]byte("banner"))
		_ = c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		if string(b) != "ack" {
			t.Errorf("upstream read %q after its own FIN", b)
		}
	})
	s2 := startServer(t, serverConfig("gw"))
	c2, _ := startClient(t, clientConfig(s2, map[string]string{"gw": up2}))
	waitFor(t, "ready", 5*time.Second, c2.Ready)
	conn := dial(t, s2.ListenerAddr("gw"))
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != "banner" {
		t.Fatalf("banner = %q, %v", b, err)
	}
	if _, err := conn.Write([]byte("ack")); err != nil {
		t.Fatalf("write after peer FIN: %v", err)
	}
	_ = conn.CloseWrite()
	waitFor(t, "upstream done", 5*time.Second, func() bool {
		return metric(t, c2.m, "l5d_tunnel_streams_open", "listener", "gw") == 0
	})
}

// TestWrongToken: 401, no session, counted on both sides, the client keeps
// retrying and connects once its token file holds the right token.
func TestWrongToken(t *testing.T) {
	s := startServer(t, serverConfig("gw"))
	cfg := clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)})
	cfg.Token = ""
	cfg.TokenFile = writeFile(t, t.TempDir(), "token", "not-the-token\n")
	c, _ := startClient(t, cfg)
	waitFor(t, "repeated auth failures", 10*time.Second, func() bool {
		return metric(t, c.m, "l5d_tunnel_auth_failures_total") >= 3
	})
	if s.Ready() || c.Ready() {
		t.Fatal("ready with a wrong token")
	}
	if v := metric(t, s.m, "l5d_tunnel_auth_failures_total"); v < 3 {
		t.Fatalf("server auth failures = %v", v)
	}
	if v := metric(t, s.m, "l5d_tunnel_sessions_total"); v != 0 {
		t.Fatalf("server sessions_total = %v, want 0", v)
	}
	// Missing token: 401 too.
	resp, err := http.Get("http://" + s.Addr() + TunnelPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: HTTP %d, want 401", resp.StatusCode)
	}
	// Rotation: the right token shows up in the file; the client recovers.
	writeFile(t, cfg.TokenFile[:strings.LastIndex(cfg.TokenFile, "/")], "token", testToken+"\n")
	waitFor(t, "client ready after token fix", 10*time.Second, c.Ready)
	if got, err := roundTrip(t, s.ListenerAddr("gw"), "x"); err != nil || got != "x" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
}

// TestServerAcceptsRotatedTokens: every line of the server's token file is
// accepted, so a new token can be rolled out before the old one is removed.
func TestServerAcceptsRotatedTokens(t *testing.T) {
	cfg := serverConfig("gw")
	cfg.Token = ""
	cfg.TokenFile = writeFile(t, t.TempDir(), "tokens", "old-token\n\n  new-token  \n")
	s := startServer(t, cfg)
	for _, tok := range []string{"old-token", "new-token"} {
		ccfg := clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)})
		ccfg.Token = tok
		c, stop := startClient(t, ccfg)
		waitFor(t, "ready with "+tok, 5*time.Second, c.Ready)
		stop()
	}
}

func TestCheckAuth(t *testing.T) {
	tests := map[string]struct {
		header string
		want   authResult
	}{
		"ok":              {"Bearer secret", authOK},
		"ok lower-case":   {"bearer secret", authOK},
		"second token":    {"Bearer other", authOK},
		"wrong":           {"Bearer secreT", authWrong},
		"prefix of token": {"Bearer secre", authWrong},
		"longer":          {"Bearer secrets", authWrong},
		"missing":         {"", authMissing},
		"basic":           {"Basic c2VjcmV0", authMissing},
		"bearer no token": {"Bearer ", authMissing},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/tunnel", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := checkAuth(r, []string{"secret", "other"}); got != tc.want {
				t.Fatalf("checkAuth(%q) = %v, want %v", tc.header, got, tc.want)
			}
		})
	}
	if got := checkAuth(httptest.NewRequest("GET", "/", nil), nil); got != authNoServerToken {
		t.Fatalf("no server token: %v", got)
	}
}

// TestRefusals: a listener the client has no upstream for, an upstream that
// refuses connections, and no client at all: each connection is closed at
// once and counted; nothing else is affected.
func TestRefusals(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	s := startServer(t, serverConfig("gw", "extra", "down"))
	expectClosed(t, s.ListenerAddr("gw")) // no client yet
	if v := metric(t, s.m, "l5d_tunnel_refused_streams_total", "reason", "no_session"); v != 1 {
		t.Fatalf("no_session refusals = %v", v)
	}
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo), "down": deadAddr}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	expectClosed(t, s.ListenerAddr("extra"))
	expectClosed(t, s.ListenerAddr("down"))
	waitFor(t, "refusals counted", 5*time.Second, func() bool {
		return metric(t, c.m, "l5d_tunnel_refused_streams_total", "reason", "unknown_listener") == 1 &&
			metric(t, s.m, "l5d_tunnel_refused_streams_total", "reason", "unknown_listener") == 1 &&
			metric(t, c.m, "l5d_tunnel_dial_errors_total", "listener", "down") == 1 &&
			metric(t, s.m, "l5d_tunnel_dial_errors_total", "listener", "down") == 1
	})
	if got, err := roundTrip(t, s.ListenerAddr("gw"), "still fine"); err != nil || got != "still fine" {
		t.Fatalf("round trip after refusals = %q, %v", got, err)
	}
}

// fakeServer is a websocket endpoint that authenticates nothing and hands
// each session to h; it stands in for a malicious or broken tunnel server.
func fakeServer(t *testing.T, h func(ws *websocket.Conn)) string {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		h(ws)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + TunnelPath
}

// TestClientNeverDialsArbitraryHosts: a hostile server names listeners the
// client does not have, including things that look like addresses, and
// sends malformed headers. The client refuses every one, dials nothing, and
// keeps its session.
func TestClientNeverDialsArbitraryHosts(t *testing.T) {
	hits := make(chan struct{}, 100)
	up := testsupport.Serve(t, func(c net.Conn) { hits <- struct{}{}; echo(c) })
	results := make(chan string, 100)
	url := fakeServer(t, func(ws *websocket.Conn) {
		sess, err := smux.Server(smux.NewConn(ws, steadySession().KeepAliveTimeout), steadySession())
		if err != nil {
			return
		}
		defer sess.Close()
		try := func(hdr []byte) {
			st, err := sess.OpenStream()
			if err != nil {
				results <- "open: " + err.Error()
				return
			}
			defer st.Close()
			_, _ = st.Write(hdr)
			_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
			rep, err := smux.ReadReply(st)
			if err != nil {
				results <- "reply: " + err.Error()
				return
			}
			results <- rep.String()
		}
		for _, hdr := range [][]byte{
			[]byte("\x01\x0f127.0.0.1:22222"), // address-looking name: invalid charset
			[]byte("\x01\x05other"),           // valid name, not configured
			[]byte("\x02\x02gw"),              // wrong version
			[]byte("\x01\x00"),                // empty name
			[]byte("\x01\x02gw"),              // the real one
		} {
			try(hdr)
		}
		<-time.After(10 * time.Second)
	})
	cfg := DefaultClientConfig()
	cfg.ServerURL = url
	cfg.Token = "whatever"
	cfg.AdminAddr = ""
	cfg.Session = steadySession()
	cfg.HeaderTimeout = time.Second
	cfg.Upstreams = []Endpoint{{Name: "gw", Addr: up}}
	c, _ := startClient(t, cfg)
	want := []string{"bad_header", "unknown_listener", "bad_header", "bad_header", "ok"}
	for i, w := range want {
		select {
		case got := <-results:
			if got != w {
				t.Errorf("header %d: reply %q, want %q", i, got, w)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("header %d: no reply", i)
		}
	}
	// The upstream's accept may run after the client has already answered.
	waitFor(t, "the upstream dial", 5*time.Second, func() bool { return len(hits) >= 1 })
	if len(hits) != 1 {
		t.Fatalf("upstream dialed %d times, want 1", len(hits))
	}
	if !c.Ready() {
		t.Fatal("client lost its session over refused streams")
	}
	if v := metric(t, c.m, "l5d_tunnel_refused_streams_total", "reason", "bad_header"); v != 3 {
		t.Errorf("bad_header refusals = %v, want 3", v)
	}
}

// TestGarbageFromServer: websocket frames that are not smux end the session
// without a panic, and the client reconnects.
func TestGarbageFromServer(t *testing.T) {
	var mu sync.Mutex
	n := 0
	url := fakeServer(t, func(ws *websocket.Conn) {
		mu.Lock()
		n++
		mu.Unlock()
		junk := make([]byte, 1000)
		_, _ = rand.Read(junk)
		_ = ws.WriteMessage(websocket.BinaryMessage, junk)
		_ = ws.WriteMessage(websocket.TextMessage, []byte("hello"))
		_, _ = ws.NetConn().Write(junk) // not even websocket framing
		time.Sleep(100 * time.Millisecond)
		ws.Close()
	})
	cfg := DefaultClientConfig()
	cfg.ServerURL = url
	cfg.Token = "x"
	cfg.AdminAddr = ""
	cfg.Session = fastSession()
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.Upstreams = []Endpoint{{Name: "gw", Addr: "127.0.0.1:1"}}
	startClient(t, cfg)
	waitFor(t, "three sessions", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return n >= 3 })
}

// TestServerRestart: the server goes away and comes back on the same
// address; the client reconnects on its own and forwards again.
func TestServerRestart(t *testing.T) {
	up := testsupport.Serve(t, echo)
	cfg := serverConfig("gw")
	s1 := startServer(t, cfg)
	ccfg := clientConfig(s1, map[string]string{"gw": up})
	c, _ := startClient(t, ccfg)
	waitFor(t, "ready", 5*time.Second, c.Ready)
	cfg.Listen = s1.Addr()
	cfg.Ports[0].Addr = s1.ListenerAddr("gw")
	s1.Shutdown(0)
	waitFor(t, "client notices", 5*time.Second, func() bool { return !c.Ready() })
	if got := readyz(t, c.AdminAddr()); got != 503 {
		t.Fatalf("client /readyz = %d while server is down, want 503", got)
	}
	waitFor(t, "a failed reconnect attempt", 10*time.Second, func() bool {
		return metric(t, c.m, "l5d_tunnel_connect_errors_total", "reason", "dial") >= 1
	})
	s2 := startServer(t, cfg)
	waitFor(t, "client back", 10*time.Second, func() bool { return c.Ready() && s2.Ready() })
	if got, err := roundTrip(t, s2.ListenerAddr("gw"), "after restart"); err != nil || got != "after restart" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	if v := metric(t, c.m, "l5d_tunnel_reconnects_total"); v < 1 {
		t.Fatalf("reconnects_total = %v", v)
	}
}

// TestNewSessionTakesOver: a second client connects while the first one's
// session is still up (e.g. the first was SIGSTOPped); new connections go to
// the newest session at once.
func TestNewSessionTakesOver(t *testing.T) {
	whoA := testsupport.Serve(t, func(c net.Conn) { _, _ = c.Write([]byte("A")) })
	whoB := testsupport.Serve(t, func(c net.Conn) { _, _ = c.Write([]byte("B")) })
	s := startServer(t, serverConfig("who"))
	a, stopA := startClient(t, clientConfig(s, map[string]string{"who": whoA}))
	waitFor(t, "A ready", 5*time.Second, a.Ready)
	if got, _ := roundTrip(t, s.ListenerAddr("who"), ""); got != "A" {
		t.Fatalf("first answer %q, want A", got)
	}
	b, _ := startClient(t, clientConfig(s, map[string]string{"who": whoB}))
	waitFor(t, "B ready", 5*time.Second, b.Ready)
	waitFor(t, "server has two sessions", 5*time.Second, func() bool { return metric(t, s.m, "l5d_tunnel_sessions") == 2 })
	for i := 0; i < 3; i++ {
		if got, _ := roundTrip(t, s.ListenerAddr("who"), ""); got != "B" {
			t.Fatalf("answer %q after B connected, want B", got)
		}
	}
	stopA()
	waitFor(t, "A's session gone", 5*time.Second, func() bool { return metric(t, s.m, "l5d_tunnel_sessions") == 1 })
	if !s.Ready() {
		t.Fatal("server not ready with B connected")
	}
}

// TestSameClientReconnectReplacesOldSession: when a client reconnects
// (same client ID), the server retires its older session immediately instead
// of waiting for the keepalive timeout.
func TestSameClientReconnectReplacesOldSession(t *testing.T) {
	cfg := serverConfig("gw")
	cfg.Session.KeepAliveInterval = time.Second
	cfg.Session.KeepAliveTimeout = time.Minute
	s := startServer(t, cfg)
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+testToken)
	hdr.Set(ClientIDHeader, "same-client")
	url := "ws://" + s.Addr() + TunnelPath
	ws1, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws1.Close()
	waitFor(t, "first session", 5*time.Second, s.Ready)
	ws2, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	waitFor(t, "old session retired", 5*time.Second, func() bool {
		return metric(t, s.m, "l5d_tunnel_sessions") == 1 && metric(t, s.m, "l5d_tunnel_reconnects_total") == 1
	})
	_ = ws1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws1.ReadMessage(); err == nil {
		t.Fatal("old session still open")
	}
}

// TestSilentClientDetected: a client authenticates and then goes silent
// (never reads or writes, like a frozen process); the server drops it within
// the keepalive timeout and reports not ready.
func TestSilentClientDetected(t *testing.T) {
	cfg := serverConfig("gw")
	cfg.Session = fastSession()
	s := startServer(t, cfg)
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+testToken)
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.Addr()+TunnelPath, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	waitFor(t, "session up", 5*time.Second, s.Ready)
	start := time.Now()
	waitFor(t, "silent client dropped", 10*cfg.Session.KeepAliveTimeout, func() bool { return !s.Ready() })
	if d := time.Since(start); d < cfg.Session.KeepAliveInterval {
		t.Fatalf("dropped after %v: too early to be a keepalive timeout", d)
	}
	if got := readyz(t, s.AdminAddr()); got != 503 {
		t.Fatalf("/readyz = %d, want 503", got)
	}
	expectClosed(t, s.ListenerAddr("gw"))
}

// TestSilentServerDetected: the server accepts the websocket and then goes
// silent; the client notices within the keepalive timeout and reconnects.
func TestSilentServerDetected(t *testing.T) {
	var mu sync.Mutex
	sessions := 0
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	url := fakeServer(t, func(ws *websocket.Conn) {
		mu.Lock()
		sessions++
		mu.Unlock()
		<-hold // never read, never write
	})
	cfg := DefaultClientConfig()
	cfg.ServerURL = url
	cfg.Token = "x"
	cfg.AdminAddr = ""
	cfg.Session = fastSession()
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.Upstreams = []Endpoint{{Name: "gw", Addr: "127.0.0.1:1"}}
	c, _ := startClient(t, cfg)
	waitFor(t, "first session", 5*time.Second, c.Ready)
	start := time.Now()
	waitFor(t, "silent server detected", 10*cfg.Session.KeepAliveTimeout, func() bool { return !c.Ready() })
	if d := time.Since(start); d < cfg.Session.KeepAliveInterval {
		t.Fatalf("dropped after %v: too early", d)
	}
	waitFor(t, "reconnected", 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return sessions >= 2 })
}

// TestShutdownDrains: after Shutdown starts, the server is not ready and
// takes no new connections, but an open stream finishes its transfer.
func TestShutdownDrains(t *testing.T) {
	const size = 8 << 20
	slow := testsupport.Serve(t, func(c net.Conn) {
		for i := 0; i < 8; i++ {
			_, _ = io.Copy(c, patternReader(uint64(i), size/8))
			time.Sleep(50 * time.Millisecond)
		}
	})
	cfg := serverConfig("slow")
	cfg.DrainGrace = 20 * time.Second
	s := startServer(t, cfg)
	c, _ := startClient(t, clientConfig(s, map[string]string{"slow": slow}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	conn := dial(t, s.ListenerAddr("slow"))
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Shutdown(cfg.DrainGrace) }()
	waitFor(t, "not ready", 5*time.Second, func() bool { return !s.Ready() })
	waitFor(t, "listener closed", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", s.ListenerAddr("slow"), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	n, err := io.Copy(io.Discard, conn)
	if err != nil || n != size-1 {
		t.Fatalf("drained stream got %d bytes, err %v; want %d", n, err, size-1)
	}
	conn.Close() // the caller is done too: the stream is finished both ways
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
}

// TestShutdownGraceExpires: a stream that outlives the grace is closed.
func TestShutdownGraceExpires(t *testing.T) {
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	s := startServer(t, serverConfig("gw"))
	c, _ := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, func(net.Conn) { <-hold })}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	conn := dial(t, s.ListenerAddr("gw"))
	waitFor(t, "stream open", 5*time.Second, func() bool { return s.conns.count() == 1 })
	start := time.Now()
	s.Shutdown(300 * time.Millisecond)
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream still open after grace")
	}
}

// TestClientDrainRefusesNewStreams: a draining client answers "draining"
// for new streams but lets an open one finish.
func TestClientDrain(t *testing.T) {
	s := startServer(t, serverConfig("gw"))
	c, stop := startClient(t, clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)}))
	waitFor(t, "ready", 5*time.Second, c.Ready)
	conn := dial(t, s.ListenerAddr("gw"))
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	waitFor(t, "client not ready", 5*time.Second, func() bool { return !c.Ready() })
	expectClosed(t, s.ListenerAddr("gw"))
	// The server learnt from the refusal that its only client is draining.
	waitFor(t, "server not ready", 5*time.Second, func() bool { return !s.Ready() })
	if v := metric(t, s.m, "l5d_tunnel_refused_streams_total", "reason", "draining"); v != 1 {
		t.Fatalf("draining refusals = %v, want 1", v)
	}
	if _, err := conn.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil || b[0] != 'b' {
		t.Fatalf("open stream broken during drain: %q %v", b, err)
	}
	_ = conn.CloseWrite()
	_, _ = io.Copy(io.Discard, conn)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not stop after its last stream ended")
	}
}

func TestBackoff(t *testing.T) {
	minD, maxD := 100*time.Millisecond, 2*time.Second
	for attempt := 0; attempt < 20; attempt++ {
		want := min(minD<<min(attempt, 30), maxD)
		for i := 0; i < 50; i++ {
			d := backoff(minD, maxD, attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	okS := serverConfig("gw")
	okC := DefaultClientConfig()
	okC.ServerURL = "wss://example.test/tunnel"
	okC.Token = "t"
	okC.Upstreams = []Endpoint{{"gw", "10.0.0.7:4143"}}
	srv := map[string]struct {
		mod  func(*ServerConfig)
		flag string
	}{
		"ok":             {func(*ServerConfig) {}, ""},
		"bad listen":     {func(c *ServerConfig) { c.Listen = "nope" }, "Listen"},
		"no ports":       {func(c *ServerConfig) { c.Ports = nil }, "Ports"},
		"dup port":       {func(c *ServerConfig) { c.Ports = append(c.Ports, c.Ports[0]) }, "Ports"},
		"bad port name":  {func(c *ServerConfig) { c.Ports[0].Name = "a/b" }, "Ports"},
		"cert w/o key":   {func(c *ServerConfig) { c.TLSCert = "x" }, "TLSCert"},
		"no token":       {func(c *ServerConfig) { c.Token = "" }, "TokenFile"},
		"bad admin":      {func(c *ServerConfig) { c.AdminAddr = "x" }, "AdminAddr"},
		"bad keepalive":  {func(c *ServerConfig) { c.Session.KeepAliveTimeout = c.Session.KeepAliveInterval }, "Session.KeepAlive"},
		"negative grace": {func(c *ServerConfig) { c.DrainGrace = -1 }, "DrainGrace"},
	}
	for name, tc := range srv {
		t.Run("server/"+name, func(t *testing.T) {
			c := okS
			c.Ports = append([]Endpoint(nil), okS.Ports...)
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != (tc.flag == "") {
				t.Fatalf("Validate() = %v", err)
			}
			if err != nil && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.flag)) {
				t.Fatalf("error %q does not name %s", err, tc.flag)
			}
		})
	}
	cli := map[string]struct {
		mod  func(*ClientConfig)
		flag string
	}{
		"ok":               {func(*ClientConfig) {}, ""},
		"no server":        {func(c *ClientConfig) { c.ServerURL = "" }, "ServerURL"},
		"http server":      {func(c *ClientConfig) { c.ServerURL = "http://x/tunnel" }, "ServerURL"},
		"creds in url":     {func(c *ClientConfig) { c.ServerURL = "wss://u:p@x/tunnel" }, "ServerURL"},
		"no upstream":      {func(c *ClientConfig) { c.Upstreams = nil }, "Upstreams"},
		"upstream no host": {func(c *ClientConfig) { c.Upstreams = []Endpoint{{"gw", ":4143"}} }, "Upstreams"},
		"ca with ws":       {func(c *ClientConfig) { c.ServerURL = "ws://x/tunnel"; c.CAFile = "ca" }, "CAFile"},
		"backoff order":    {func(c *ClientConfig) { c.BackoffMax = time.Millisecond }, "BackoffMax"},
		"no token":         {func(c *ClientConfig) { c.Token = "" }, "TokenFile"},
	}
	for name, tc := range cli {
		t.Run("client/"+name, func(t *testing.T) {
			c := okC
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != (tc.flag == "") {
				t.Fatalf("Validate() = %v", err)
			}
			if err != nil && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.flag)) {
				t.Fatalf("error %q does not name %s", err, tc.flag)
			}
		})
	}
}

var _ = hex.EncodeToString
var _ = context.Background

// TestDrainingClientAvoided: once the newest client answers "draining", new
// connections go to an older client that is not draining.
func TestDrainingClientAvoided(t *testing.T) {
	whoA := testsupport.Serve(t, func(c net.Conn) { _, _ = c.Write([]byte("A")) })
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	whoB := testsupport.Serve(t, func(c net.Conn) { _, _ = c.Write([]byte("B")); <-hold })
	s := startServer(t, serverConfig("who"))
	a, _ := startClient(t, clientConfig(s, map[string]string{"who": whoA}))
	waitFor(t, "A ready", 5*time.Second, a.Ready)
	bcfg := clientConfig(s, map[string]string{"who": whoB})
	bcfg.DrainGrace = 10 * time.Second
	b, stopB := startClient(t, bcfg)
	waitFor(t, "B ready", 5*time.Second, b.Ready)
	waitFor(t, "two sessions", 5*time.Second, func() bool { return metric(t, s.m, "l5d_tunnel_sessions") == 2 })
	open := dial(t, s.ListenerAddr("who")) // keeps B draining (its upstream holds)
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b1 := make([]byte, 1); func() bool { _, err := io.ReadFull(open, b1); return err != nil || b1[0] != 'B' }() {
		t.Fatal("newest session is not B")
	}
	go stopB()
	waitFor(t, "B draining", 5*time.Second, func() bool { return !b.Ready() })
	// At most one connection is refused before the server learns.
	waitFor(t, "connections go to A", 5*time.Second, func() bool {
		got, _ := roundTrip(t, s.ListenerAddr("who"), "")
		return got == "A"
	})
	for i := 0; i < 3; i++ {
		if got, _ := roundTrip(t, s.ListenerAddr("who"), ""); got != "A" {
			t.Fatalf("answer %q while B drains, want A", got)
		}
	}
	if !s.Ready() {
		t.Fatal("server not ready although A is up")
	}
	release() // B's last stream ends, so B finishes draining now
	open.Close()
}
