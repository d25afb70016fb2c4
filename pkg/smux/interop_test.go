package smux

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	xsmux "github.com/xtaci/smux"
)

// The reference peer: xtaci/smux speaking protocol v2 over the same
// websocket Conn. These tests pin wire compatibility in both roles.

// muxSession is what both implementations offer.
type muxSession interface {
	open() (io.ReadWriteCloser, error)
	accept() (io.ReadWriteCloser, error)
	close()
	closed() <-chan struct{}
}

type ours struct{ s *Session }

func (o ours) open() (io.ReadWriteCloser, error)   { return o.s.OpenStream() }
func (o ours) accept() (io.ReadWriteCloser, error) { return o.s.AcceptStream() }
func (o ours) close()                              { _ = o.s.Close() }
func (o ours) closed() <-chan struct{}             { return o.s.CloseChan() }

type theirs struct{ s *xsmux.Session }

func (x theirs) open() (io.ReadWriteCloser, error)   { return x.s.OpenStream() }
func (x theirs) accept() (io.ReadWriteCloser, error) { return x.s.AcceptStream() }
func (x theirs) close()                              { _ = x.s.Close() }
func (x theirs) closed() <-chan struct{}             { return x.s.CloseChan() }

func xtaciConfig(cfg Config) *xsmux.Config {
	return &xsmux.Config{
		Version:           ProtocolVersion,
		KeepAliveInterval: cfg.KeepAliveInterval,
		KeepAliveTimeout:  cfg.KeepAliveTimeout,
		MaxFrameSize:      32768,
		MaxReceiveBuffer:  16 << 20,
		MaxStreamBuffer:   initialWindow,
	}
}

// interopPair returns (ours, theirs) connected over a websocket; oursClient
// picks the roles.
func interopPair(t *testing.T, cfg Config, oursClient bool) (muxSession, muxSession) {
	t.Helper()
	sws, cws := wsPair(t)
	ows, xws := sws, cws
	if oursClient {
		ows, xws = cws, sws
	}
	var o *Session
	var x *xsmux.Session
	var err error
	if oursClient {
		o, err = Client(NewConn(ows, cfg.KeepAliveTimeout), cfg)
		if err == nil {
			x, err = xsmux.Server(NewConn(xws, cfg.KeepAliveTimeout), xtaciConfig(cfg))
		}
	} else {
		o, err = Server(NewConn(ows, cfg.KeepAliveTimeout), cfg)
		if err == nil {
			x, err = xsmux.Client(NewConn(xws, cfg.KeepAliveTimeout), xtaciConfig(cfg))
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close(); x.Close() })
	return ours{o}, theirs{x}
}

func forRoles(t *testing.T, f func(t *testing.T, a, b muxSession)) {
	for _, oursClient := range []bool{true, false} {
		for _, oursOpens := range []bool{true, false} {
			name := fmt.Sprintf("ours-client=%v/ours-opens=%v", oursClient, oursOpens)
			t.Run(name, func(t *testing.T) {
				o, x := interopPair(t, testConfig(), oursClient)
				if oursOpens {
					f(t, o, x)
				} else {
					f(t, x, o)
				}
			})
		}
	}
}

// bulkBothWays sends size random bytes each way on one stream opened by
// opener and compares sha256 sums.
func TestInteropBulk(t *testing.T) {
	const size = 24 << 20
	forRoles(t, func(t *testing.T, opener, acceptor muxSession) {
		up, down := make([]byte, size), make([]byte, size)
		_, _ = rand.Read(up)
		_, _ = rand.Read(down)
		type result struct {
			sum [32]byte
			err error
		}
		far := make(chan result, 1)
		go func() {
			st, err := acceptor.accept()
			if err != nil {
				far <- result{err: err}
				return
			}
			defer st.Close()
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				_, _ = st.Write(down)
				_ = st.(interface{ CloseWrite() error }).CloseWrite()
			}()
			h := sha256.New()
			_, err = io.Copy(h, st)
			<-wrote
			far <- result{sum: [32]byte(h.Sum(nil)), err: err}
		}()
		st, err := opener.open()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		wrote := make(chan struct{})
		defer func() { <-wrote }()
		go func() {
			defer close(wrote)
			_, _ = st.Write(up)
			_ = st.(interface{ CloseWrite() error }).CloseWrite()
		}()
		h := sha256.New()
		done := make(chan error, 1)
		go func() { _, err := io.Copy(h, st); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("download hung")
		}
		if [32]byte(h.Sum(nil)) != sha256.Sum256(down) {
			t.Fatal("download corrupted")
		}
		select {
		case r := <-far:
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.sum != sha256.Sum256(up) {
				t.Fatal("upload corrupted")
			}
		case <-time.After(60 * time.Second):
			t.Fatal("upload hung")
		}
	})
}

func TestInteropParallelAndHalfClose(t *testing.T) {
	forRoles(t, func(t *testing.T, opener, acceptor muxSession) {
		// acceptor: read the request to EOF, then answer with its sha256
		// and half-close.
		go func() {
			for {
				st, err := acceptor.accept()
				if err != nil {
					return
				}
				go func() {
					defer st.Close()
					h := sha256.New()
					if _, err := io.Copy(h, st); err != nil {
						return
					}
					_, _ = st.Write(h.Sum(nil))
					_ = st.(interface{ CloseWrite() error }).CloseWrite()
				}()
			}
		}()
		const streams = 48
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := opener.open()
				if err != nil {
					errs <- err
					return
				}
				defer st.Close()
				data := make([]byte, 1000+i*20000)
				_, _ = rand.Read(data)
				if _, err := st.Write(data); err != nil {
					errs <- err
					return
				}
				if err := st.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(st)
				if err != nil {
					errs <- err
					return
				}
				if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
					errs <- errors.New("reply does not match the request")
				}
			}()
		}
		waitGroup(t, &wg, 60*time.Second)
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestInteropKeepalive: an idle session with short keepalives survives
// several timeouts in both roles (each side's NOPs satisfy the other).
func TestInteropKeepalive(t *testing.T) {
	cfg := testConfig()
	cfg.KeepAliveInterval = 200 * time.Millisecond
	cfg.KeepAliveTimeout = 2 * time.Second // several missed NOPs, even on a loaded machine
	for _, oursClient := range []bool{true, false} {
		t.Run(fmt.Sprintf("ours-client=%v", oursClient), func(t *testing.T) {
			o, x := interopPair(t, cfg, oursClient)
			select {
			case <-o.closed():
				t.Fatal("our session dropped an idle but live xtaci peer")
			case <-x.closed():
				t.Fatal("xtaci dropped our idle session")
			case <-time.After(3 * cfg.KeepAliveTimeout):
			}
			// Still usable.
			go func() {
				st, err := x.accept()
				if err == nil {
					_, _ = io.Copy(st, st)
					st.Close()
				}
			}()
			st, err := o.open()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4)
			_ = st.(*Stream).SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(st, b); err != nil || string(b) != "ping" {
				t.Fatalf("echo %q %v", b, err)
			}
			// Then the xtaci side goes away: ours notices.
			x.close()
			select {
			case <-o.closed():
			case <-time.After(20 * cfg.KeepAliveTimeout):
				t.Fatal("our session outlived its closed peer")
			}
		})
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("timed out")
	}
}

// TestInteropStalledWrite: xtaci closes a stream it never read (it drops
// later data silently and grants no window); our blocked writer is released
// with ErrReset after StalledWriteTimeout, and the session lives on.
func TestInteropStalledWrite(t *testing.T) {
	cfg := testConfig()
	cfg.StalledWriteTimeout = 300 * time.Millisecond
	o, x := interopPair(t, cfg, true)
	st, err := o.open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	xs, err := x.accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = xs.Close()
	done := make(chan error, 1)
	go func() { _, err := st.Write(make([]byte, 4<<20)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrReset) {
			t.Fatalf("Write = %v, want ErrReset", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writer still blocked on a stream xtaci closed")
	}
	// Our Close and Reset toward xtaci send FIN only: its session survives.
	st2, err := o.open()
	if err != nil {
		t.Fatal(err)
	}
	_ = st2.(*Stream).Reset()
	st3, err := o.open()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			s, err := x.accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(s, s); s.Close() }()
		}
	}()
	if _, err := st3.Write([]byte("alive")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	_ = st3.(*Stream).SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(st3, b); err != nil {
		t.Fatalf("xtaci session after our reset: %v", err)
	}
}
