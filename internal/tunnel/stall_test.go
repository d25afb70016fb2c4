package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
)

// Issue 11 ("no caller can stall another"): callers that send a lot and
// never read their replies must hold only their own streams back. The
// helpers here are shared by TestNonReadersDoNotStall (in-process, a
// reliability test) and BenchmarkNonReaders250 (the real binaries, latency
// and memory figures).

const (
	nonReaders      = 250
	nonReaderSend   = 4_000_000 // bytes each non-reader sends
	nonReaderHeader = 8         // its index, so its echo can be told apart
)

// nonReaderPayload is what every non-reader sends after its index.
var nonReaderPayload = func() []byte {
	b := make([]byte, nonReaderSend-nonReaderHeader)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

// countingEcho is an echo upstream that counts connections and bytes.
type countingEcho struct {
	addr     string
	accepted atomic.Int64
	echoed   atomic.Int64
}

func startCountingEcho(t testing.TB) *countingEcho {
	e := &countingEcho{}
	e.addr = testsupport.Serve(t, func(c net.Conn) {
		e.accepted.Add(1)
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
				e.echoed.Add(int64(n))
			}
			if err != nil {
				break
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
	})
	return e
}

// settle waits until bytes have been echoed and the count has then not
// moved for quiet, or until limit; it returns the count and whether it
// settled.
func (e *countingEcho) settle(quiet, limit time.Duration) (int64, bool) {
	deadline := time.Now().Add(limit)
	last := e.echoed.Load()
	for time.Now().Before(deadline) {
		time.Sleep(quiet)
		n := e.echoed.Load()
		if n == last && n > 0 {
			return n, true
		}
		last = n
	}
	return last, false
}

// smallReceiveBuffer sets SO_RCVBUF to its minimum before connecting: a
// caller that does not read then holds almost nothing in its own kernel
// buffer, so what it sends backs up into the tunnel, as it does over a real
// network once the path's buffers are full. On loopback the default
// buffers (autotuned to megabytes) would otherwise absorb the 4 MB, and the
// test would depend on the kernel's autotuning rather than on the tunnel.
func smallReceiveBuffer(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	return errors.Join(err, serr)
}

// nonReaderSet is a set of callers that each send nonReaderSend bytes and
// never read.
type nonReaderSet struct {
	conns []*net.TCPConn
	mu    sync.Mutex
	errs  map[int]error // write errors: the connection was refused or broken
	wg    sync.WaitGroup
}

// startNonReaders dials n callers to addr at once; each writes its index and
// the payload (until done or an error) and never reads.
func startNonReaders(t testing.TB, addr string, n int) *nonReaderSet {
	t.Helper()
	ns := &nonReaderSet{errs: map[int]error{}}
	d := net.Dialer{Timeout: 5 * time.Second, Control: smallReceiveBuffer}
	for i := range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("non-reader %d: dial: %v", i, err)
		}
		ns.conns = append(ns.conns, c.(*net.TCPConn))
	}
	t.Cleanup(ns.close)
	for i, c := range ns.conns {
		ns.wg.Go(func() {
			var hdr [nonReaderHeader]byte
			binary.BigEndian.PutUint64(hdr[:], uint64(i))
			_, err := c.Write(hdr[:])
			if err == nil {
				_, err = c.Write(nonReaderPayload)
			}
			if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				ns.mu.Lock()
				ns.errs[i] = err
				ns.mu.Unlock()
			}
		})
	}
	return ns
}

// failed returns the write errors seen so far (index -> error).
func (ns *nonReaderSet) failed() map[int]error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return maps.Clone(ns.errs)
}

// verify reads the first 64 bytes of every non-reader's echo (within limit
// for all of them) and checks they are its own; it returns the problems.
func (ns *nonReaderSet) verify(limit time.Duration) []string {
	deadline := time.Now().Add(limit)
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	for i, c := range ns.conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			got := make([]byte, 64)
			want := make([]byte, 64)
			binary.BigEndian.PutUint64(want, uint64(i))
			copy(want[nonReaderHeader:], nonReaderPayload)
			_, err := io.ReadFull(c, got)
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("echo is not its own bytes: %x", got[:16])
			}
			if err != nil {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("non-reader %d: %v", i, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(bad)
	return bad
}

// close ends the writers (a reset each: no FIN that looks like success).
func (ns *nonReaderSet) close() {
	for _, c := range ns.conns {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	ns.wg.Wait()
}

// freshEcho connects to addr, sends 64 bytes and reads them back, within
// limit; it returns how long that took.
func freshEcho(addr string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, limit)
	if err != nil {
		return time.Since(start), err
	}
	defer func() { _ = c.(*net.TCPConn).SetLinger(0); c.Close() }()
	_ = c.SetDeadline(start.Add(limit))
	msg := []byte("fresh echo, 64 bytes: 0123456789abcdefghijklmnopqrstuvwxyz-----")
	if _, err := c.Write(msg); err != nil {
		return time.Since(start), err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return time.Since(start), err
	}
	if !bytes.Equal(got, msg) {
		return time.Since(start), fmt.Errorf("echo %q, want %q", got, msg)
	}
	return time.Since(start), nil
}

// isConnRefusal: the tunnel turned the caller away (closed or reset).
func isConnRefusal(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// TestNonReadersDoNotStall (issue 11; issue 8 item 6): with the default
// settings, 250 callers each send 4 MB to an echo service through the
// tunnel and never read the echo. Once their traffic has backed up (the
// echo service quiet for a second), a fresh connection's 64-byte echo must
// still complete (the 2 s bound only detects a stall; latency, also while
// the 250 are still moving their bytes, is BenchmarkNonReaders250's
// business), and none of the 250 may be refused: each gets its own echo
// back once it reads. The backing up moves about 2 GB through the tunnel:
// about 10 s on an idle 2-core machine, 25 s on a loaded one, bounded at
// 40 s; the whole test is bounded at about 80 s when everything times out.
func TestNonReadersDoNotStall(t *testing.T) {
	if testing.Short() {
		t.Skip("250 connections sending 4 MB each: skipped with -short")
	}
	const (
		stallBound = 2 * time.Second  // a fresh echo slower than this is a stall
		hardLimit  = 10 * time.Second // when to give up on a fresh echo
		probes     = 10
	)
	ec := startCountingEcho(t)
	scfg := serverConfig("echo")
	scfg.Session = DefaultServerConfig().Session // the defaults, keepalives included
	s := startServer(t, scfg)
	ccfg := clientConfig(s, map[string]string{"echo": ec.addr})
	ccfg.Session = DefaultClientConfig().Session
	c, _ := startClient(t, ccfg)
	waitFor(t, "client ready", 10*time.Second, c.Ready)
	addr := s.ListenerAddr("echo")
	if d, err := freshEcho(addr, hardLimit); err != nil {
		t.Fatalf("echo before the non-readers: %v after %v", err, d)
	}

	ns := startNonReaders(t, addr, nonReaders)
	waitFor(t, "every non-reader at the echo service", 10*time.Second, func() bool {
		return ec.accepted.Load() >= nonReaders+1
	})
	// Let their traffic back up. While it flows, every goroutine of this
	// process competes for the CPU, which says nothing about the tunnel; an
	// unsettled run still probes after the bound.
	t0 := time.Now()
	echoed, settled := ec.settle(time.Second, 40*time.Second)
	t.Logf("%d non-readers connected; the echo service echoed %d of %d bytes (settled: %v after %v)",
		nonReaders, echoed, int64(nonReaders)*nonReaderSend, settled, time.Since(t0).Round(time.Millisecond))

	var lat []time.Duration
	for i := range probes {
		d, err := freshEcho(addr, hardLimit)
		lat = append(lat, d)
		if err != nil {
			t.Errorf("fresh echo %d beside %d non-readers: %v after %v", i, nonReaders, err, d.Round(time.Millisecond))
			break
		}
		if d > stallBound {
			t.Errorf("fresh echo %d beside %d non-readers took %v (a stall: bound %v)", i, nonReaders, d.Round(time.Millisecond), stallBound)
			break
		}
	}
	t.Logf("fresh echoes: %v", lat)

	if f := ns.failed(); len(f) > 0 {
		for i, err := range f {
			t.Errorf("non-reader %d refused or broken while sending: %v (refusal: %v)", i, err, isConnRefusal(err))
			if len(f) > 5 {
				t.Errorf("... %d non-readers in all", len(f))
				break
			}
		}
	}
	verifyLimit := 10 * time.Second
	if t.Failed() {
		verifyLimit = 3 * time.Second // the session is stuck; report, do not wait
	}
	if bad := ns.verify(verifyLimit); len(bad) > 0 {
		t.Errorf("%d of %d non-readers did not get their echo when they read; first: %s", len(bad), nonReaders, bad[0])
	}
}
