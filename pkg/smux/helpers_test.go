package smux

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testConfig is for tests that are not about dead peers: its timeout is long
// enough that a starved CI machine never drops a healthy session.
func testConfig() Config {
	c := DefaultConfig()
	c.KeepAliveInterval = 500 * time.Millisecond
	c.KeepAliveTimeout = 10 * time.Second
	return c
}

// fastConfig keeps keepalives short so dead-peer tests are fast.
func fastConfig() Config {
	c := DefaultConfig()
	c.KeepAliveInterval = 100 * time.Millisecond
	c.KeepAliveTimeout = 600 * time.Millisecond
	return c
}

// wsPair returns both ends of a websocket connection over loopback TCP.
func wsPair(t testing.TB) (server, client *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{ReadBufferSize: 32 << 10, WriteBufferSize: 64 << 10}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		ch <- ws
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{ReadBufferSize: 32 << 10, WriteBufferSize: 64 << 10, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/tunnel", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = resp.Body.Close()
	s := <-ch
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

// sessionPair returns a server and client smux session over a websocket pair.
func sessionPair(t testing.TB, cfg Config) (server, client *Session) {
	t.Helper()
	sws, cws := wsPair(t)
	ss, err := Server(NewConn(sws, cfg.KeepAliveTimeout), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := Client(NewConn(cws, cfg.KeepAliveTimeout), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ss.Close() })
	return ss, cs
}
