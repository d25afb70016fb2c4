package smux

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// TestWindowViolationResetsStream: a peer that sends more than the window
// it was granted has that stream reset (RST with the extension, FIN
// without); the session and its other streams live on.
func TestWindowViolationResetsStream(t *testing.T) {
	for _, reset := range []bool{true, false} {
		cfg := testConfig()
		cfg.Reset = reset
		s, p := newRawPeer(t, cfg, true) // ours is the client: the peer opens even ids
		p.send(cmdSYN, 2, nil)
		p.send(cmdSYN, 4, nil)
		st, err := s.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		other, err := s.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		frame := make([]byte, 65535)
		for sent := 0; sent+len(frame) <= initialWindow; sent += len(frame) {
			p.send(cmdPSH, 2, frame)
		}
		p.send(cmdPSH, 2, frame) // past 256 KiB with no window update
		want := cmdFIN
		if reset {
			want = cmdRST
		}
		p.waitFrame("reset of the violating stream", isCmd(want, 2))
		_, err = st.Read(make([]byte, 1))
		if !errors.Is(err, ErrWindowExceeded) || !errors.Is(err, ErrReset) {
			t.Fatalf("reset=%v: Read = %v, want ErrWindowExceeded and ErrReset", reset, err)
		}
		p.send(cmdPSH, 4, []byte("fine"))
		b := make([]byte, 4)
		if _, err := io.ReadFull(other, b); err != nil || string(b) != "fine" {
			t.Fatalf("other stream after a violation: %q %v", b, err)
		}
		if s.IsClosed() {
			t.Fatal("session closed by one stream's violation")
		}
	}
}

// TestBogusWindowUpdateResetsStream: a window update that acknowledges
// bytes never sent resets the stream.
func TestBogusWindowUpdateResetsStream(t *testing.T) {
	s, p := newRawPeer(t, resetConfig(), true)
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	p.waitFrame("data", isCmd(cmdPSH, st.ID()))
	p.sendUPD(st.ID(), 1000, initialWindow)
	p.waitFrame("RST", isCmd(cmdRST, st.ID()))
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrReset) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("Write = %v, want ErrReset/ErrProtocol", err)
	}
}

// TestProtocolErrorsEndSession: malformed frames end the session with
// ErrProtocol, and streams then fail with ErrSessionClosed.
func TestProtocolErrorsEndSession(t *testing.T) {
	cases := map[string]func(p *rawPeer){
		"SYN with our parity": func(p *rawPeer) { p.send(cmdSYN, 3, nil) },
		"SYN with a body":     func(p *rawPeer) { p.sendLoose(cmdSYN, 2, []byte{1}) },
		"FIN with a body":     func(p *rawPeer) { p.sendLoose(cmdFIN, 2, []byte{1}) },
		"NOP with a body":     func(p *rawPeer) { p.sendLoose(cmdNOP, 0, []byte{1}) },
		"short UPD":           func(p *rawPeer) { p.sendLoose(cmdUPD, 2, []byte{1, 2, 3, 4}) },
		"unknown command":     func(p *rawPeer) { p.send(9, 2, nil) },
		"RST with a body":     func(p *rawPeer) { p.sendLoose(cmdRST, 2, []byte{1}) },
		"version 1": func(p *rawPeer) {
			_, _ = p.conn.Write([]byte{1, cmdNOP, 0, 0, 0, 0, 0, 0})
		},
	}
	for name, send := range cases {
		t.Run(name, func(t *testing.T) {
			s, p := newRawPeer(t, resetConfig(), true)
			st, err := s.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			send(p)
			select {
			case <-s.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("session survived a protocol error")
			}
			_, err = s.AcceptStream()
			if !errors.Is(err, ErrSessionClosed) || !bytes.Contains([]byte(err.Error()), []byte(ErrProtocol.Error())) {
				t.Fatalf("AcceptStream = %v, want ErrSessionClosed naming the protocol error", err)
			}
			if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("Read = %v, want ErrSessionClosed", err)
			}
		})
	}
}

// TestKeepaliveTimeout: a peer that stays connected but sends nothing (no
// websocket under it, so only the smux keepalive can notice) is dropped
// after KeepAliveTimeout; its streams fail with ErrSessionClosed.
func TestKeepaliveTimeout(t *testing.T) {
	cfg := fastConfig()
	s, p := newRawPeer(t, cfg, true)
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	p.waitFrame("keepalive NOP", isCmd(cmdNOP, 0))
	start := time.Now()
	err = within(t, 30*cfg.KeepAliveTimeout, "Read on a silent peer", func() error {
		_, err := st.Read(make([]byte, 1))
		return err
	})
	if !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Read = %v, want ErrSessionClosed", err)
	}
	if d := time.Since(start); d < cfg.KeepAliveTimeout/2 {
		t.Fatalf("dropped after %v, before the keepalive timeout %v", d, cfg.KeepAliveTimeout)
	}
}

// FuzzParseFrames feeds arbitrary bytes to a session's frame reader: it must end
// (input exhausted or protocol error) and never panic.
func FuzzParseFrames(f *testing.F) {
	var seed []byte
	seed = appendControl(seed, cmdSYN, 1)
	seed = appendUPD(seed, 1, 10, 1<<20)
	seed = append(seed, 2, cmdPSH, 3, 0, 1, 0, 0, 0, 'a', 'b', 'c')
	seed = appendControl(seed, cmdFIN, 1)
	seed = appendControl(seed, cmdRST, 1)
	f.Add(seed)
	f.Add([]byte{2, cmdPSH, 0xff, 0xff, 1, 0, 0, 0})
	f.Add([]byte{2, 9, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := testConfig()
		cfg.Reset = len(data)%2 == 0
		s, err := Server(&fuzzConn{r: bytes.NewReader(data)}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				st, err := s.AcceptStream()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, st); _ = st.Close() }()
			}
		}()
		select {
		case <-s.CloseChan():
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end at the end of its input")
		}
	})
}

type fuzzConn struct{ r io.Reader }

func (c *fuzzConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *fuzzConn) Close() error                { return nil }
