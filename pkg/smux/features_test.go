package smux

import (
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"time"
)

func TestFeatureNegotiation(t *testing.T) {
	for name, tc := range map[string]struct {
		offer     string
		reset     bool
		initial   int
		agreedLen int
	}{
		"old client, no header": {"", false, initialWindow, 0},
		"reset only":            {"reset", true, initialWindow, 1},
		"both, odd spacing":     {" Reset ,initial-window-64k", true, SmallInitialWindow, 2},
		"unknown only":          {"compress, zstd", false, initialWindow, 0},
		"what we offer":         {Features(), true, SmallInitialWindow, 2},
	} {
		t.Run(name, func(t *testing.T) {
			agreed := AcceptFeatures(tc.offer)
			cfg := DefaultConfig().WithFeatures(agreed)
			if cfg.Reset != tc.reset || cfg.InitialWindow != tc.initial {
				t.Fatalf("agreed %q: reset %v initial %d, want %v %d", agreed, cfg.Reset, cfg.InitialWindow, tc.reset, tc.initial)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if (agreed == "") != (tc.agreedLen == 0) {
				t.Fatalf("agreed %q", agreed)
			}
		})
	}
}

// TestSmallInitialWindow: with the small window agreed, a stream nobody
// reads parks 64 KiB, and a reading stream still moves data (its window
// grows once an RTT is known).
func TestSmallInitialWindow(t *testing.T) {
	cfg := testConfig().WithFeatures(Features())
	ss, cs := sessionPair(t, cfg)
	ss.rttOverride.Store(int64(10 * time.Millisecond))
	parked, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	_ = parked.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := parked.Write(make([]byte, 1<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a non-reader = %v, want a timeout", err)
	}
	ps, err := ss.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "parked data", func() int {
		for ps.Buffered() < SmallInitialWindow {
			time.Sleep(time.Millisecond)
		}
		return 0
	})
	if b := ps.Buffered(); b != SmallInitialWindow {
		t.Fatalf("non-reader buffers %d, want %d", b, SmallInitialWindow)
	}
	// WaitWritable blocks on the full window and honours the deadline.
	_ = parked.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := parked.WaitWritable(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitWritable on a full window = %v", err)
	}
	st, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = st.Write(make([]byte, 8<<20)); _ = st.CloseWrite() }()
	rs, err := ss.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	_ = rs.SetReadDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, rs)
	if err != nil || n != 8<<20 {
		t.Fatalf("reading stream: %d bytes, %v", n, err)
	}
	if rs.Window() <= SmallInitialWindow {
		t.Fatalf("window stayed at %d for a fast reader", rs.Window())
	}
}

// TestSendLockUrgentFirst: queued urgent writers go before queued bulk
// writers, each class in arrival order.
func TestSendLockUrgentFirst(t *testing.T) {
	var l sendLock
	l.lock(false, make(chan struct{}, 1)) // held while the others queue
	queued := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.urgent) + len(l.bulk)
	}
	order := make(chan string, 4)
	for i, w := range []struct {
		name   string
		urgent bool
	}{{"bulk1", false}, {"bulk2", false}, {"urgent1", true}, {"urgent2", true}} {
		go func() {
			l.lock(w.urgent, make(chan struct{}, 1))
			order <- w.name
			l.unlock()
		}()
		within(t, 10*time.Second, "queued", func() int {
			for queued() != i+1 {
				time.Sleep(time.Millisecond)
			}
			return 0
		})
	}
	l.unlock()
	var got []string
	for range 4 {
		got = append(got, within(t, 10*time.Second, "order", func() string { return <-order }))
	}
	if w := []string{"urgent1", "urgent2", "bulk1", "bulk2"}; !slices.Equal(got, w) {
		t.Fatalf("order %v, want %v", got, w)
	}
}
