package smux

import (
	"errors"
	"io"
	"testing"
	"time"
)

// TestStreamCapLocal: OpenStream past MaxStreams fails at once with
// ErrStreamLimit, and works again once a stream is gone.
func TestStreamCapLocal(t *testing.T) {
	cfg := resetConfig()
	cfg.MaxStreams = 4
	ss, cs := sessionPair(t, cfg)
	acceptEcho(t, ss)
	var open []*Stream
	for range 4 {
		st, err := cs.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	if _, err := cs.OpenStream(); !errors.Is(err, ErrStreamLimit) {
		t.Fatalf("5th OpenStream = %v, want ErrStreamLimit", err)
	}
	if n := cs.RefusedStreams(); n != 1 {
		t.Fatalf("RefusedStreams = %d, want 1", n)
	}
	_ = open[0].Reset()
	if _, err := cs.OpenStream(); err != nil {
		t.Fatalf("OpenStream after one stream ended: %v", err)
	}
}

// TestStreamCapPeer: a peer's SYN past MaxStreams is refused at once: with
// the extension its stream is reset, without it closed with FIN; the
// refusal is counted and the session lives on.
func TestStreamCapPeer(t *testing.T) {
	for _, reset := range []bool{true, false} {
		cfg := testConfig()
		cfg.Reset = reset
		cfg.MaxStreams = 4
		s, p := newRawPeer(t, cfg, false)
		for sid := uint32(1); sid <= 7; sid += 2 {
			p.send(cmdSYN, sid, nil)
			if _, err := s.AcceptStream(); err != nil {
				t.Fatal(err)
			}
		}
		p.send(cmdSYN, 11, nil)
		want := cmdFIN
		if reset {
			want = cmdRST
		}
		p.waitFrame("refusal", isCmd(want, 11))
		if n := s.RefusedStreams(); n != 1 {
			t.Fatalf("reset=%v: RefusedStreams = %d, want 1", reset, n)
		}
		if n := s.NumStreams(); n != 4 {
			t.Fatalf("reset=%v: NumStreams = %d, want 4", reset, n)
		}
		p.send(cmdPSH, 11, []byte("ignored")) // data for the refused stream is dropped
		if s.IsClosed() {
			t.Fatal("session closed by a refused stream")
		}
	}
}

// TestStreamCapBothWays: whichever side opens, one session holds at most
// MaxStreams; the opener over the cap sees its stream reset at once.
func TestStreamCapBothWays(t *testing.T) {
	srvCfg, cliCfg := resetConfig(), resetConfig()
	srvCfg.MaxStreams = 1024
	cliCfg.MaxStreams = 8 // the client (home side) refuses a hostile server's flood
	sws, cws := wsPair(t)
	ss, err := Server(NewConn(sws, srvCfg.KeepAliveTimeout), srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := Client(NewConn(cws, cliCfg.KeepAliveTimeout), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ss.Close() })
	go func() {
		for {
			if _, err := cs.AcceptStream(); err != nil {
				return
			}
		}
	}()
	for range 20 {
		st, err := ss.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = st.Write([]byte("hello"))
		_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
		go func() { _, _ = io.Copy(io.Discard, st) }()
		defer st.Close()
	}
	within(t, 20*time.Second, "refusals", func() int {
		for cs.RefusedStreams() < 12 {
			time.Sleep(time.Millisecond)
		}
		return 0
	})
	if n := cs.NumStreams(); n != 8 {
		t.Fatalf("client holds %d streams, cap 8", n)
	}
	within(t, 20*time.Second, "server forgets refused streams", func() int {
		for ss.NumStreams() != 8 {
			time.Sleep(time.Millisecond)
		}
		return 0
	})
}
