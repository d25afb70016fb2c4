package delayline

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// target is a loopback server whose connections are handled by h.
func target(t testing.TB, h func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); h(c.(*net.TCPConn)) })
		}
	})
	return ln.Addr().String()
}

func relay(t testing.TB, to string, cfg Config) *Relay {
	t.Helper()
	r, err := Listen("127.0.0.1:0", to, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // no test hangs
	return c.(*net.TCPConn)
}

// TestDelayEachWay: a byte sent either way arrives no sooner than Delay
// after it was written, and not much later (a generous bound, half the
// delay on the median: the machine is shared).
func TestDelayEachWay(t *testing.T) {
	const delay = 100 * time.Millisecond
	const rounds = 10
	arrived := make(chan time.Time, 1)
	sent := make(chan time.Time, 1)
	addr := target(t, func(c *net.TCPConn) {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			arrived <- time.Now()
			sent <- time.Now()
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	})
	r := relay(t, addr, Config{Delay: delay})
	c := dial(t, r.Addr())
	var up, down []time.Duration
	b := make([]byte, 1)
	for range rounds {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		t3 := time.Now()
		up = append(up, (<-arrived).Sub(t0))
		down = append(down, t3.Sub(<-sent))
	}
	slices.Sort(up)
	slices.Sort(down)
	t.Logf("one-way delay, target %v: up min/median/max %v/%v/%v, down %v/%v/%v",
		delay, up[0], up[rounds/2], up[rounds-1], down[0], down[rounds/2], down[rounds-1])
	for _, d := range [][]time.Duration{up, down} {
		if d[0] < delay {
			t.Errorf("a byte arrived after %v, before the %v delay", d[0], delay)
		}
		if d[rounds/2] > delay+delay/2 {
			t.Errorf("median one-way delay %v, want about %v", d[rounds/2], delay)
		}
	}
}

// TestIntact: 32 MiB each way at once through a small in-flight bound arrive
// intact and in order.
func TestIntact(t *testing.T) {
	const size = 32 << 20
	addr := target(t, func(c *net.TCPConn) {
		_, _ = io.Copy(c, c)
		_ = c.CloseWrite()
	})
	r := relay(t, addr, Config{Delay: 2 * time.Millisecond, MaxInFlight: 512 << 10})
	c := dial(t, r.Addr())
	src := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(src)
	errc := make(chan error, 1)
	go func() {
		// Uneven writes, so chunks do not line up with reads.
		for off := 0; off < size; {
			n := min(size-off, 1+int(rng.Uint64()%(300<<10)))
			if _, err := c.Write(src[off : off+n]); err != nil {
				errc <- err
				return
			}
			off += n
		}
		errc <- c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(got) != size || sha256.Sum256(got) != sha256.Sum256(src) {
		t.Fatalf("got %d bytes back, want the %d sent, in order", len(got), size)
	}
}

// TestBackPressure: when the target does not read, the relay stops reading
// at MaxInFlight per connection and direction, and at MaxInFlightTotal for
// all connections together; the senders are held back, and every byte still
// arrives once the target reads.
func TestBackPressure(t *testing.T) {
	const size = 48 << 20
	for _, tc := range []struct {
		name       string
		conns      int
		max, total int
	}{
		{"per connection", 2, 1 << 20, 64 << 20},
		{"relay total", 2, 8 << 20, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			result := make(chan []byte, tc.conns)
			addr := target(t, func(c *net.TCPConn) {
				<-release
				b, _ := io.ReadAll(c)
				result <- b
			})
			r := relay(t, addr, Config{Delay: time.Millisecond, MaxInFlight: tc.max, MaxInFlightTotal: tc.total})
			src := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			var written atomic.Int64
			done := make(chan error, tc.conns)
			for range tc.conns {
				c := dial(t, r.Addr())
				go func() {
					for off := 0; off < size; off += 64 << 10 {
						if _, err := c.Write(src[off : off+64<<10]); err != nil {
							done <- err
							return
						}
						written.Add(64 << 10)
					}
					done <- c.CloseWrite()
				}()
			}
			// Wait until the writers stop making progress.
			var last int64 = -1
			deadline := time.Now().Add(20 * time.Second)
			for {
				time.Sleep(200 * time.Millisecond)
				w := written.Load()
				if w == last {
					break
				}
				if w == int64(tc.conns)*size || time.Now().After(deadline) {
					t.Fatalf("writers never held back: %d of %d bytes written", w, tc.conns*size)
				}
				last = w
			}
			var held []int
			r.mu.Lock()
			for p := range r.pairs {
				p.lines[0].mu.Lock()
				held = append(held, p.lines[0].inFlight)
				p.lines[0].mu.Unlock()
			}
			r.mu.Unlock()
			r.total.mu.Lock()
			total := r.total.used
			r.total.mu.Unlock()
			t.Logf("senders held back after %d bytes; relay holds %v, %d in all (bounds %d, %d)", last, held, total, tc.max, tc.total)
			sum := 0
			for _, h := range held {
				sum += h
				if h > tc.max+readSize {
					t.Errorf("a connection holds %d bytes, over its bound %d (+ one read)", h, tc.max)
				}
			}
			if sum != total {
				t.Errorf("connections hold %d bytes together, relay total says %d", sum, total)
			}
			if total > tc.total+tc.conns*readSize {
				t.Errorf("relay holds %d bytes, over its bound %d (+ one read per connection)", total, tc.total)
			}
			if bound := min(tc.total, tc.conns*tc.max); total < bound {
				t.Errorf("relay holds %d bytes, stopped before its bound %d", total, bound)
			}
			close(release)
			for range tc.conns {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				if got := <-result; !bytes.Equal(got, src) {
					t.Fatalf("target got %d bytes, want the %d sent", len(got), size)
				}
			}
			r.Close()
			if r.total.used != 0 {
				t.Errorf("relay total %d after close, want 0", r.total.used)
			}
		})
	}
}

// TestHalfClose: the caller's FIN reaches the target after the data and
// after the delay, and the other direction keeps flowing until the
// target's own FIN.
func TestHalfClose(t *testing.T) {
	const delay = 20 * time.Millisecond
	eofAt := make(chan time.Time, 1)
	addr := target(t, func(c *net.TCPConn) {
		req, err := io.ReadAll(c)
		eofAt <- time.Now()
		if err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // the caller's read side stays open
		_, _ = c.Write(append([]byte("reply to "), req...))
		_ = c.CloseWrite()
	})
	r := relay(t, addr, Config{Delay: delay})
	c := dial(t, r.Addr())
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "reply to request" {
		t.Fatalf("got %q, want %q", got, "reply to request")
	}
	if d := (<-eofAt).Sub(t0); d < delay {
		t.Errorf("FIN reached the target after %v, before the %v delay", d, delay)
	}
}

// isReset reports whether err is a connection reset (not a clean EOF).
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestReset: a reset on either side resets the other side, after the data
// already sent and the delay.
func TestReset(t *testing.T) {
	for _, who := range []string{"caller", "target"} {
		t.Run(who+" resets", func(t *testing.T) {
			targetErr := make(chan error, 1)
			addr := target(t, func(c *net.TCPConn) {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				b := make([]byte, 5)
				if _, err := io.ReadFull(c, b); err != nil {
					targetErr <- err
					return
				}
				if who == "target" {
					_, _ = c.Write([]byte("bye"))
					time.Sleep(10 * time.Millisecond)
					_ = c.SetLinger(0)
					_ = c.Close()
					return
				}
				_, err := io.Copy(io.Discard, c)
				if err == nil {
					err = io.EOF
				}
				targetErr <- err
			})
			r := relay(t, addr, Config{Delay: 5 * time.Millisecond})
			c := dial(t, r.Addr())
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if who == "caller" {
				time.Sleep(20 * time.Millisecond) // the hello is through
				_ = c.SetLinger(0)
				_ = c.Close()
				if err := <-targetErr; !isReset(err) {
					t.Fatalf("target saw %v, want a connection reset", err)
				}
				return
			}
			got, err := io.ReadAll(c)
			if string(got) != "bye" || !isReset(err) {
				t.Fatalf("caller read %q, %v; want %q then a connection reset", got, err, "bye")
			}
		})
	}
}

// TestDialFailure: when the target refuses, the caller is reset, not left
// hanging.
func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	r := relay(t, dead, Config{Delay: time.Millisecond})
	// The reset may come before the caller's connect returns.
	c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !isReset(err) {
		t.Fatalf("connect and read: %v, want a connection reset", err)
	}
}

// TestCloseResets: closing the relay resets the connections it carries.
func TestCloseResets(t *testing.T) {
	addr := target(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	r := relay(t, addr, Config{Delay: time.Millisecond})
	c := dial(t, r.Addr())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("read after relay close: %v, want a connection reset", err)
	}
}

// BenchmarkThroughput: one TCP stream through the relay, 25 ms each way
// (and with no delay, for scale): 256 MiB from a source to the caller per
// iteration, timed from the request to the last byte (one round trip of
// the 256 MiB is latency). The relay must not be the bottleneck of the
// WAN benchmarks: it should carry hundreds of MiB/s.
func BenchmarkThroughput(b *testing.B) {
	const size = 256 << 20
	addr := target(b, func(c *net.TCPConn) {
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return
		}
		buf := make([]byte, 128<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	for _, delay := range []time.Duration{0, 25 * time.Millisecond} {
		b.Run("delay="+delay.String(), func(b *testing.B) {
			r := relay(b, addr, Config{Delay: delay})
			buf := make([]byte, 256<<10)
			var total time.Duration
			for b.Loop() {
				c := dial(b, r.Addr())
				start := time.Now()
				if _, err := c.Write([]byte{1}); err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
				if err != nil || n != size {
					b.Fatalf("got %d of %d bytes: %v", n, size, err)
				}
				total += time.Since(start)
				c.Close()
			}
			b.ReportMetric(float64(b.N)*size/(1<<20)/total.Seconds(), "MiB/s")
		})
	}
}
