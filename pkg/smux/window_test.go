package smux

import (
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestRecvWindowTuning drives the auto-tuning with chosen clocks: a reader
// that drains an epoch within two round trips doubles the window, a slow one
// does not, growth stops at the cap and at the budget.
func TestRecvWindowTuning(t *testing.T) {
	const rtt = 50 * time.Millisecond
	epoch := func(w *recvWindow, elapsed time.Duration, maxW uint32, b *budget) {
		t.Helper()
		start := time.Unix(1000, 0)
		w.epochStart, w.epochBase = start, w.consumed
		n := int(w.threshold())
		if !w.admit(n) {
			t.Fatalf("admit %d with window %d refused", n, w.window)
		}
		w.consumed += uint32(n)
		w.tune(start.Add(elapsed), rtt, maxW, b)
		w.advertised = w.consumed
	}
	newW := func(b *budget) *recvWindow {
		b.force(initialWindow)
		return &recvWindow{window: initialWindow}
	}
	t.Run("fast reader doubles up to the cap", func(t *testing.T) {
		var b budget
		b.avail.Store(1 << 30)
		w := newW(&b)
		for want := uint32(2 * initialWindow); want <= 4<<20; want *= 2 {
			epoch(w, time.Millisecond, 4<<20, &b)
			if w.window != want {
				t.Fatalf("window %d, want %d", w.window, want)
			}
		}
		epoch(w, time.Millisecond, 4<<20, &b)
		if w.window != 4<<20 {
			t.Fatalf("window %d grew past the 4 MiB cap", w.window)
		}
		if got := int64(1<<30) - b.avail.Load(); got != 4<<20 {
			t.Fatalf("budget charged %d, want the window %d", got, 4<<20)
		}
	})
	t.Run("slow reader stays", func(t *testing.T) {
		var b budget
		b.avail.Store(1 << 30)
		w := newW(&b)
		for range 10 {
			epoch(w, 3*rtt, 32<<20, &b) // half a window took 3 RTT: the reader, not the window, limits
		}
		if w.window != initialWindow {
			t.Fatalf("window grew to %d for a slow reader", w.window)
		}
	})
	t.Run("no rtt no growth", func(t *testing.T) {
		var b budget
		b.avail.Store(1 << 30)
		w := newW(&b)
		start := time.Unix(1000, 0)
		w.epochStart = start
		w.consumed = w.threshold()
		w.tune(start, 0, 32<<20, &b)
		if w.window != initialWindow {
			t.Fatalf("window grew to %d without an RTT", w.window)
		}
	})
	t.Run("budget bounds the sum", func(t *testing.T) {
		var b budget
		const total = 2 << 20
		b.avail.Store(total)
		ws := []*recvWindow{newW(&b), newW(&b), newW(&b)}
		for range 8 {
			for _, w := range ws {
				epoch(w, time.Millisecond, 32<<20, &b)
			}
		}
		sum := 0
		for _, w := range ws {
			sum += int(w.window)
		}
		if sum > total || b.avail.Load() < 0 {
			t.Fatalf("windows sum to %d, budget %d (left %d)", sum, total, b.avail.Load())
		}
		if sum < total-minGrow {
			t.Fatalf("windows sum to %d, budget %d not used", sum, total)
		}
	})
	t.Run("admit enforces the window", func(t *testing.T) {
		w := &recvWindow{window: initialWindow}
		if !w.admit(initialWindow) {
			t.Fatal("a full window refused")
		}
		if w.admit(1) {
			t.Fatal("one byte past the window admitted")
		}
		w.consumed = 1000
		w.advertised = 1000 // a window update for 1000 bytes went out
		if !w.admit(1000) || w.admit(1) {
			t.Fatal("window not reopened by exactly the advertised bytes")
		}
	})
}

// TestWindowGrowsEndToEnd: with an RTT the receiver's window grows while a
// fast reader drains a bulk transfer, within MaxStreamWindow, and the data
// arrives intact.
func TestWindowGrowsEndToEnd(t *testing.T) {
	cfg := testConfig()
	cfg.MaxStreamWindow = 2 << 20
	ss, cs := sessionPair(t, cfg)
	ss.rttOverride.Store(int64(20 * time.Millisecond))
	data := make([]byte, 16<<20)
	_, _ = rand.Read(data)
	go func() {
		st, err := cs.OpenStream()
		if err != nil {
			return
		}
		_, _ = st.Write(data)
		_ = st.CloseWrite()
	}()
	st, err := ss.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil || string(got) != string(data) {
		t.Fatalf("transfer: %d bytes, %v", len(got), err)
	}
	if w := st.Window(); w != cfg.MaxStreamWindow {
		t.Fatalf("window %d after a fast bulk read, want the cap %d", w, cfg.MaxStreamWindow)
	}
}

// TestNonReadingStreamBounded: a stream nobody reads buffers at most its
// window (the sender is held back), and the session keeps serving others.
func TestNonReadingStreamBounded(t *testing.T) {
	cfg := testConfig()
	ss, cs := sessionPair(t, cfg)
	ss.rttOverride.Store(int64(time.Second)) // growth would be allowed if anyone read
	const n = 8
	for range n {
		st, err := cs.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = st.SetWriteDeadline(time.Now().Add(30 * time.Second))
			_, _ = st.Write(make([]byte, 4<<20))
		}()
	}
	var parked []*Stream
	for range n {
		st, err := ss.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		parked = append(parked, st)
	}
	for _, st := range parked {
		deadline := time.Now().Add(10 * time.Second)
		for st.Buffered() < initialWindow && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if b, w := st.Buffered(), st.Window(); b != initialWindow || w != initialWindow {
			t.Fatalf("non-reading stream buffers %d with window %d, want both %d", b, w, initialWindow)
		}
	}
	// Another stream still flows both ways.
	acceptEcho(t, ss)
	st, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msg := make([]byte, 1<<20)
	go func() { _, _ = st.Write(msg) }()
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(st, make([]byte, len(msg))); err != nil {
		t.Fatalf("live stream beside non-reading ones: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // any excess would have arrived by now
	for _, st := range parked {
		if b := st.Buffered(); b > st.Window() {
			t.Fatalf("non-reading stream buffers %d > window %d", b, st.Window())
		}
	}
}

// TestWriteDeadline: a writer held back by the window fails with a timeout
// at its deadline.
func TestWriteDeadline(t *testing.T) {
	ss, cs := sessionPair(t, testConfig())
	st, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = st.Write(make([]byte, 2<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %v, want deadline exceeded", err)
	}
	_ = ss
}
