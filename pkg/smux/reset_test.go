package smux

import (
	"errors"
	"io"
	"testing"
	"time"
)

func resetConfig() Config {
	c := testConfig()
	c.Reset = true
	return c
}

// openPair opens a stream on cs and accepts it on ss, after one byte so the
// SYN has certainly arrived.
func openPair(t *testing.T, ss, cs *Session) (server, client *Stream) {
	t.Helper()
	c, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	s, err := ss.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return s, c
}

// within runs f and fails the test if it does not return in d (a hang).
func within[T any](t *testing.T, d time.Duration, what string, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v", what, d)
		panic("unreachable")
	}
}

func readErr(st *Stream) error {
	_, err := io.Copy(io.Discard, readerOnly{st})
	if err == nil {
		return io.EOF // io.Copy hides EOF
	}
	return err
}

type readerOnly struct{ io.Reader }

func TestPeerResetFailsReadAndWrite(t *testing.T) {
	ss, cs := sessionPair(t, resetConfig())
	s, c := openPair(t, ss, cs)
	if _, err := s.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	// Wait until the data is buffered at the client, then reset.
	within(t, 10*time.Second, "data", func() int {
		for c.Buffered() < 6 {
			time.Sleep(time.Millisecond)
		}
		return 0
	})
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	// Data sent before the reset is still readable, then ErrReset (not EOF).
	b := make([]byte, 6)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "before" {
		t.Fatalf("read before reset: %q %v", b, err)
	}
	err := within(t, 10*time.Second, "Read after reset", func() error { _, err := c.Read(b); return err })
	if !errors.Is(err, ErrReset) || errors.Is(err, io.EOF) {
		t.Fatalf("Read after peer reset = %v, want ErrReset", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrReset) {
		t.Fatalf("Write after peer reset = %v, want ErrReset", err)
	}
	// The resetting side is done with the stream at once.
	if _, err := s.Write([]byte("x")); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Write after own Reset = %v, want ErrStreamClosed", err)
	}
	within(t, 10*time.Second, "streams forgotten", func() int {
		for ss.NumStreams()+cs.NumStreams() > 0 {
			time.Sleep(time.Millisecond)
		}
		return 0
	})
}

// blockedWriter opens a stream pair (s near, c far) on a session pair with
// resets, and has c write more than a window that s never reads; it returns
// once s buffers a full window, with the channel c's Write ends on.
func blockedWriter(t *testing.T) (s, c *Stream, werr <-chan error) {
	t.Helper()
	ss, cs := sessionPair(t, resetConfig())
	s, c = openPair(t, ss, cs)
	errs := make(chan error, 1)
	go func() { _, err := c.Write(make([]byte, 4<<20)); errs <- err }()
	within(t, 10*time.Second, "window full", func() int {
		for s.Buffered() < initialWindow-1 { // openPair read one byte
			time.Sleep(time.Millisecond)
		}
		return 0
	})
	return s, c, errs
}

// TestResetWakesBlockedWriter is issue 8 item 3 at the session layer: the
// far side sends more than a window, the near side never reads and closes;
// the far writer, blocked on the window, is released with ErrReset.
func TestResetWakesBlockedWriter(t *testing.T) {
	s, c, werr := blockedWriter(t)
	_ = s.Close() // unread data: RST, not FIN
	err := within(t, 10*time.Second, "blocked Write", func() error { return <-werr })
	if !errors.Is(err, ErrReset) {
		t.Fatalf("blocked Write = %v, want ErrReset", err)
	}
	if err := readErr(c); !errors.Is(err, ErrReset) {
		t.Fatalf("Read = %v, want ErrReset", err)
	}
}

// TestDataAfterCloseAnsweredWithReset: the near side closed with nothing
// unread (FIN); the far side keeps writing and gets ErrReset, once.
func TestDataAfterCloseAnsweredWithReset(t *testing.T) {
	ss, cs := sessionPair(t, resetConfig())
	s, c := openPair(t, ss, cs)
	_ = s.Close()
	if err := readErr(c); !errors.Is(err, io.EOF) {
		t.Fatalf("Read after the peer's Close = %v, want EOF (its FIN)", err)
	}
	err := within(t, 10*time.Second, "Write to a closed peer", func() error {
		for {
			if _, err := c.Write(make([]byte, 64<<10)); err != nil {
				return err
			}
		}
	})
	if !errors.Is(err, ErrReset) {
		t.Fatalf("Write after the peer closed = %v, want ErrReset", err)
	}
}

// TestStalledWriteWithoutReset: without the extension a peer that closed can
// only send FIN; a Write that then gets no window fails with ErrReset after
// StalledWriteTimeout instead of blocking forever.
func TestStalledWriteWithoutReset(t *testing.T) {
	cfg := testConfig()
	cfg.StalledWriteTimeout = 300 * time.Millisecond
	ss, cs := sessionPair(t, cfg)
	s, c := openPair(t, ss, cs)
	_ = s.Close()
	err := within(t, 20*time.Second, "Write after the peer's FIN", func() error {
		_, err := c.Write(make([]byte, 4<<20))
		return err
	})
	if !errors.Is(err, ErrReset) {
		t.Fatalf("Write = %v, want ErrReset after the stall timeout", err)
	}
	if ss.IsClosed() || cs.IsClosed() {
		t.Fatal("a stalled stream took the session down")
	}
}

// TestHalfClosedPeerStillReads: the stall timeout does not touch a peer that
// half-closed but keeps reading.
func TestHalfClosedPeerStillReads(t *testing.T) {
	cfg := testConfig()
	cfg.StalledWriteTimeout = 3 * time.Second
	ss, cs := sessionPair(t, cfg)
	s, c := openPair(t, ss, cs)
	_ = s.CloseWrite()
	go func() {
		// A slow but steady reader: a window update every 128 KiB, about
		// every 400 ms, well inside the stall timeout.
		b := make([]byte, 32<<10)
		for {
			if _, err := io.ReadFull(s, b); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatalf("Write to a half-closed but reading peer: %v", err)
	}
}

// TestSessionCloseIsNotEOF: when the session dies, every stream on both
// sides fails with ErrSessionClosed, never io.EOF, in Read and Write.
func TestSessionCloseIsNotEOF(t *testing.T) {
	for _, reset := range []bool{false, true} {
		cfg := testConfig()
		cfg.Reset = reset
		ss, cs := sessionPair(t, cfg)
		s, c := openPair(t, ss, cs)
		blockedRead := make(chan error, 1)
		go func() { _, err := s.Read(make([]byte, 1)); blockedRead <- err }()
		_ = cs.Close()
		for name, err := range map[string]error{
			"local Read":  readErr(c),
			"local Write": func() error { _, err := c.Write([]byte("x")); return err }(),
			"peer blocked Read": within(t, 20*time.Second, "peer Read", func() error {
				return <-blockedRead
			}),
			"peer Write": within(t, 20*time.Second, "peer Write", func() error {
				for {
					if _, err := s.Write(make([]byte, 64<<10)); err != nil {
						return err
					}
				}
			}),
		} {
			if !errors.Is(err, ErrSessionClosed) || errors.Is(err, io.EOF) || errors.Is(err, ErrReset) {
				t.Errorf("reset=%v %s = %v, want ErrSessionClosed", reset, name, err)
			}
		}
		if _, err := cs.OpenStream(); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("OpenStream on a closed session = %v", err)
		}
		if _, err := ss.AcceptStream(); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("AcceptStream on a dead session = %v", err)
		}
	}
}

// TestEOFOnlyAfterFINAndData: buffered data is read in full before io.EOF.
func TestEOFOnlyAfterFINAndData(t *testing.T) {
	ss, cs := sessionPair(t, resetConfig())
	s, c := openPair(t, ss, cs)
	if _, err := c.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "tail" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("Read after EOF = %v", err)
	}
}

// TestResetNotNegotiated: a session without the extension never sends RST
// (xtaci would drop the session), and an RST it receives is a protocol
// error.
func TestResetNotNegotiated(t *testing.T) {
	cfg := testConfig()
	s, p := newRawPeer(t, cfg, false)
	p.send(cmdSYN, 1, nil)
	st, err := s.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	p.send(cmdPSH, 1, []byte("unread"))
	within(t, 10*time.Second, "data", func() int {
		for st.Buffered() == 0 {
			time.Sleep(time.Millisecond)
		}
		return 0
	})
	_ = st.Close() // unread data, but no extension: FIN
	p.waitFrame("FIN", isCmd(cmdFIN, 1))
	p.send(cmdPSH, 1, []byte("late"))
	p.send(cmdSYN, 3, nil)
	st3, err := s.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	_ = st3.Reset()
	p.waitFrame("FIN for the reset stream", isCmd(cmdFIN, 3))
	p.send(cmdNOP, 0, nil) // a round trip through the session's reader
	if n := p.count(func(f rawFrame) bool { return f.cmd == cmdRST }); n != 0 {
		t.Fatalf("%d RST frames sent to a peer without the extension", n)
	}
	p.send(cmdRST, 3, nil)
	select {
	case <-s.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("RST without the extension did not end the session")
	}
}

// blockingWriter accepts one Write and then blocks until released.
type blockingWriter struct {
	first   chan struct{}
	release chan struct{}
	n       int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		close(w.first)
	}
	w.n++
	<-w.release
	return 0, io.ErrClosedPipe
}

// TestCloseDuringStuckWriteToResets: WriteTo took the data but its writer is
// stuck (a caller that stopped reading); Close must reset, not FIN, or the
// far writer waits forever for window.
func TestCloseDuringStuckWriteToResets(t *testing.T) {
	s, _, werr := blockedWriter(t)
	bw := &blockingWriter{first: make(chan struct{}), release: make(chan struct{})}
	go func() { _, _ = s.WriteTo(bw) }()
	within(t, 10*time.Second, "WriteTo", func() int { <-bw.first; return 0 })
	_ = s.Close()
	close(bw.release)
	err := within(t, 10*time.Second, "far Write", func() error { return <-werr })
	if !errors.Is(err, ErrReset) {
		t.Fatalf("far Write = %v, want ErrReset", err)
	}
}
