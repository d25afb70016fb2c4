package smux

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestConfigValidate(t *testing.T) {
	mod := func(f func(*Config)) Config { c := DefaultConfig(); f(&c); return c }
	tests := map[string]struct {
		cfg Config
		ok  bool
	}{
		"default":              {DefaultConfig(), true},
		"test":                 {testConfig(), true},
		"fast":                 {fastConfig(), true},
		"zero interval":        {mod(func(c *Config) { c.KeepAliveInterval = 0 }), false},
		"timeout too short":    {mod(func(c *Config) { c.KeepAliveTimeout = c.KeepAliveInterval }), false},
		"frame too big":        {mod(func(c *Config) { c.MaxFrameSize = 65536 }), false},
		"frame too small":      {mod(func(c *Config) { c.MaxFrameSize = 100 }), false},
		"window below initial": {mod(func(c *Config) { c.MaxStreamWindow = initialWindow - 1 }), false},
		"window too big":       {mod(func(c *Config) { c.MaxStreamWindow = 1 << 30 }), false},
		"session budget small": {mod(func(c *Config) { c.SessionBudget = 512 << 10 }), false},
		"session budget big":   {mod(func(c *Config) { c.SessionBudget = 2 << 30 }), false},
		"no streams":           {mod(func(c *Config) { c.MaxStreams = 0 }), false},
		"too many streams":     {mod(func(c *Config) { c.MaxStreams = 1 << 20 }), false},
		"stall timeout short":  {mod(func(c *Config) { c.StalledWriteTimeout = time.Millisecond }), false},
		"ws buffer huge":       {mod(func(c *Config) { c.ReadBufferSize = 999999999999 }), false},
		"ws buffers small":     {mod(func(c *Config) { c.WriteBufferSize = 10 }), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			if _, err := Server(nopRWC{}, tc.cfg); (err == nil) != tc.ok {
				t.Fatalf("Server() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

type nopRWC struct{}

func (nopRWC) Read([]byte) (int, error)    { select {} }
func (nopRWC) Write(p []byte) (int, error) { return len(p), nil }
func (nopRWC) Close() error                { return nil }

// acceptEcho accepts streams on s and echoes each back, closing its write
// half at EOF.
func acceptEcho(t testing.TB, s *Session) {
	go func() {
		for {
			st, err := s.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				if _, err := io.Copy(st, st); err != nil {
					return
				}
				_ = st.CloseWrite()
				_, _ = io.Copy(io.Discard, st)
			}()
		}
	}()
}

// TestParallelStreamsIntegrity sends distinct random data on 64 streams at
// once and checks every echo byte for byte.
func TestParallelStreamsIntegrity(t *testing.T) {
	ss, cs := sessionPair(t, testConfig())
	acceptEcho(t, ss)
	const streams, size = 64, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := cs.OpenStream()
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			data := make([]byte, size)
			_, _ = rand.Read(data)
			go func() {
				for b := data; len(b) > 0; {
					n := min(len(b), 1+mrand.IntN(100<<10))
					if _, err := st.Write(b[:n]); err != nil {
						return
					}
					b = b[n:]
				}
				_ = st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil {
				errs <- err
				return
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				errs <- errors.New("stream data corrupted")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestHeadOfLineProbe parks several streams whose reader never reads with
// more data than their window, then checks that another stream on the same
// session still moves 16 MiB in both directions. Without per-stream windows
// the stalled streams would fill the session buffer and this would hang.
func TestHeadOfLineProbe(t *testing.T) {
	cfg := testConfig()
	ss, cs := sessionPair(t, cfg)
	stalled := make(chan *Stream, 8)
	go func() {
		for {
			st, err := ss.AcceptStream()
			if err != nil {
				return
			}
			h, err := ReadHeader(st)
			if err != nil {
				st.Close()
				continue
			}
			if h.Listener == "stalled" {
				stalled <- st // never read
				continue
			}
			go func() { defer st.Close(); _, _ = io.Copy(st, st) }()
		}
	}()
	// Four stalled streams, each trying to push 4 MiB.
	junk := make([]byte, 4<<20)
	writersBlocked := make(chan struct{}, 4)
	for i := 0; i < 4; i++ {
		st, err := cs.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := WriteHeader(st, Header{Listener: "stalled"}); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = st.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
			_, err := st.Write(junk)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				writersBlocked <- struct{}{} // flow control held the writer back
			}
		}()
	}
	for i := 0; i < 4; i++ {
		select {
		case <-writersBlocked:
		case <-time.After(10 * time.Second):
			t.Fatal("stalled stream writers were never held back by the stream window")
		}
	}
	st, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := WriteHeader(st, Header{Listener: "live"}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 16<<20)
	_, _ = rand.Read(data)
	done := make(chan error, 1)
	go func() {
		got := make([]byte, len(data))
		_, err := io.ReadFull(st, got)
		if err == nil && !bytes.Equal(got, data) {
			err = errors.New("echo corrupted")
		}
		done <- err
	}()
	go func() { _, _ = st.Write(data) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("live stream blocked behind stalled streams (head-of-line blocking)")
	}
}

// TestHalfClose: the client shuts its write half; the server sees EOF, then
// replies on the same stream, and the client reads the whole reply.
func TestHalfClose(t *testing.T) {
	ss, cs := sessionPair(t, testConfig())
	go func() {
		st, err := ss.AcceptStream()
		if err != nil {
			return
		}
		defer st.Close()
		req, err := io.ReadAll(st) // returns at the client's FIN
		if err != nil {
			return
		}
		_, _ = st.Write(append([]byte("reply to "), req...))
		_ = st.CloseWrite()
	}()
	st, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite succeeded")
	}
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "reply to request" {
		t.Fatalf("got %q", got)
	}
}

// TestSilentPeerDetected: the websocket peer stops reading and writing; the
// session must close within the keepalive timeout (plus slack for a loaded
// machine), not hang.
func TestSilentPeerDetected(t *testing.T) {
	cfg := fastConfig()
	sws, cws := wsPair(t)
	_ = cws // the client side never reads or writes: a vanished peer
	ss, err := Server(NewConn(sws, cfg.KeepAliveTimeout), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	start := time.Now()
	select {
	case <-ss.CloseChan():
	case <-time.After(20 * cfg.KeepAliveTimeout):
		t.Fatalf("silent peer not detected after %v", time.Since(start))
	}
	if d := time.Since(start); d < cfg.KeepAliveInterval {
		t.Fatalf("session closed after %v, before any keepalive could be missed", d)
	}
}

// TestReadDeadlineOnSilentPeer checks the Conn layer alone: a Read waiting
// on a silent peer fails with a timeout.
func TestReadDeadlineOnSilentPeer(t *testing.T) {
	sws, _ := wsPair(t)
	c := NewConn(sws, 200*time.Millisecond)
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read = %v, want timeout", err)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatalf("timed out too early: %v", time.Since(start))
	}
	// Sticky: later reads fail at once and never panic.
	for i := 0; i < 2000; i++ {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after failure succeeded")
		}
	}
}

// TestConnMessages: Read spans message boundaries, WriteBuffers sends one
// message, and a text message is a protocol error.
func TestConnMessages(t *testing.T) {
	sws, cws := wsPair(t)
	sc := NewConn(sws, 5*time.Second)
	cc := NewConn(cws, 5*time.Second)
	go func() {
		_, _ = cc.Write([]byte("hello "))
		_, _ = cc.WriteBuffers([][]byte{[]byte("wo"), []byte("rld")})
		_ = cws.WriteMessage(websocket.TextMessage, []byte("text"))
	}()
	got := make([]byte, 11)
	if _, err := io.ReadFull(sc, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello world" {
		t.Fatalf("got %q", got)
	}
	if _, err := sc.Read(got); !errors.Is(err, ErrNotBinary) {
		t.Fatalf("text message: got %v, want ErrNotBinary", err)
	}
}

// TestGarbageNeverPanics feeds malformed input at both layers: raw bytes that
// are not websocket frames, and websocket messages that are not smux frames.
// Each must end the session with an error, never a panic or a hang.
func TestGarbageNeverPanics(t *testing.T) {
	cfg := fastConfig()
	garbage := map[string]func(ws *websocket.Conn) error{
		"raw random bytes": func(ws *websocket.Conn) error {
			b := make([]byte, 4096)
			_, _ = rand.Read(b)
			_, err := ws.NetConn().Write(b)
			return err
		},
		"unmasked client frame": func(ws *websocket.Conn) error {
			_, err := ws.NetConn().Write([]byte{0x82, 0x03, 1, 2, 3})
			return err
		},
		"bad smux version": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, []byte{9, 0, 0, 0, 1, 0, 0, 0})
		},
		"bad smux command": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, []byte{2, 77, 0, 0, 1, 0, 0, 0})
		},
		"window update with wrong length": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, []byte{2, 4, 3, 0, 1, 0, 0, 0, 1, 2, 3})
		},
		"truncated frame then close": func(ws *websocket.Conn) error {
			if err := ws.WriteMessage(websocket.BinaryMessage, []byte{2, 2, 0xff, 0xff, 1, 0, 0, 0, 1}); err != nil {
				return err
			}
			return ws.Close()
		},
		"text message": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte("hello"))
		},
		"random messages": func(ws *websocket.Conn) error {
			for i := 0; i < 50; i++ {
				b := make([]byte, mrand.IntN(64))
				_, _ = rand.Read(b)
				if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
					return nil
				}
			}
			return nil
		},
	}
	for name, send := range garbage {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sws, cws := wsPair(t)
			ss, err := Server(NewConn(sws, cfg.KeepAliveTimeout), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ss.Close()
			_ = send(cws)
			go func() {
				for {
					st, err := ss.AcceptStream()
					if err != nil {
						return
					}
					st.Close() // a random SYN may parse; keep going
				}
			}()
			select {
			case <-ss.CloseChan():
			case <-time.After(20 * cfg.KeepAliveTimeout):
				t.Fatal("session survived garbage input")
			}
		})
	}
}
