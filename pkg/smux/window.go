package smux

import (
	"sync/atomic"
	"time"
)

// Flow control, receiver side.
//
// smux v2 gives each stream a window: the sender keeps at most `window`
// bytes beyond the `consumed` count of the receiver's last window update
// (cmdUPD carries both). The receiver here starts every stream at the
// protocol's 256 KiB and auto-tunes it the way QUIC and HTTP/2 stacks do:
// each window update closes an epoch; if the reader took the epoch's bytes
// in less than 4·(bytes/window)·RTT (two round trips for half a window), the
// sender was limited by the window rather than by the reader or the path,
// so the window doubles, up to Config.MaxStreamWindow and only within the
// session's budget. A stream whose reader is slow or absent never grows and
// never buffers more than its window; an idle stream buffers nothing.
//
// The RTT comes from websocket pings (Conn.Ping / Conn.RTT). Without an RTT
// sample (a connection that is not a *Conn) windows stay at 256 KiB, which
// is plain smux v2 behaviour.

// budget is a session's allowance of receive window in bytes: the sum of
// its streams' windows stays within it, except that a stream's initial
// window is granted regardless (the peer assumes it before any update).
type budget struct{ avail atomic.Int64 }

// force takes n even if that leaves the budget negative.
func (b *budget) force(n int64) { b.avail.Add(-n) }

// grant takes up to n, at least minGrow, and reports what it took (0 when
// less than minGrow is left).
func (b *budget) grant(n int64) int64 {
	for {
		a := b.avail.Load()
		g := min(n, a)
		if g < minGrow {
			return 0
		}
		if b.avail.CompareAndSwap(a, a-g) {
			return g
		}
	}
}

func (b *budget) release(n int64) { b.avail.Add(n) }

// minGrow is the smallest window growth worth granting.
const minGrow = 64 << 10

// recvWindow is the receiver side of one stream's flow control. It is
// guarded by the stream's mutex.
type recvWindow struct {
	window     uint32 // granted to the peer
	received   uint32 // bytes received (mod 2^32)
	consumed   uint32 // bytes the reader took
	advertised uint32 // consumed as of the last window update sent
	epochStart time.Time
	epochBase  uint32 // consumed at epochStart
}

// admit records n received bytes, or reports false if they exceed what the
// peer was granted.
func (w *recvWindow) admit(n int) bool {
	if uint64(w.received-w.advertised)+uint64(n) > uint64(w.window) {
		return false
	}
	w.received += uint32(n)
	if w.epochStart.IsZero() {
		w.epochStart, w.epochBase = time.Now(), w.consumed
	}
	return true
}

// unacked is how many received bytes the peer still counts against the
// window.
func (w *recvWindow) unacked() uint32 { return w.received - w.advertised }

// threshold is how many consumed bytes trigger a window update: half the
// window while it is small (the smux v2 cadence), an eighth once it has
// grown (at least 128 KiB), so a large window keeps the sender busy.
func (w *recvWindow) threshold() uint32 {
	return min(w.window/2, max(w.window/8, 128<<10))
}

// consume records n bytes taken by the reader. It reports whether a window
// update is due; if so the caller sends (consumed, window).
func (w *recvWindow) consume(n int, maxWindow uint32, b *budget, rtt func() time.Duration) bool {
	w.consumed += uint32(n)
	if w.consumed-w.advertised < w.threshold() {
		return false
	}
	w.tune(time.Now(), rtt(), maxWindow, b)
	w.advertised = w.consumed
	return true
}

// tune closes the current epoch and grows the window if the reader drained
// it faster than the window lets the sender fill it.
func (w *recvWindow) tune(now time.Time, rtt time.Duration, maxWindow uint32, b *budget) {
	if rtt > 0 && w.window < maxWindow && !w.epochStart.IsZero() {
		inEpoch := float64(w.consumed - w.epochBase)
		elapsed := float64(now.Sub(w.epochStart))
		if elapsed < 4*inEpoch/float64(w.window)*float64(rtt) {
			want := int64(min(uint64(w.window)*2, uint64(maxWindow))) - int64(w.window)
			w.window += uint32(b.grant(want))
		}
	}
	w.epochStart, w.epochBase = now, w.consumed
}
