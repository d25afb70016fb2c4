package smux

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Stream is one bidirectional stream of a Session. Read and WriteTo may run
// beside Write; two concurrent readers (or writers) are not supported.
//
// Errors: Read returns io.EOF only after the peer's FIN and every buffered
// byte; after the peer's reset Read returns what had arrived before it, then
// an error matching ErrReset, and Write fails with ErrReset at once (a stream
// reset for breaking flow control drops its buffered data); once the session is gone they
// return one matching ErrSessionClosed; after the local Close or Reset,
// ErrStreamClosed; a passed deadline, os.ErrDeadlineExceeded.
type Stream struct {
	id   uint32
	sess *Session

	mu sync.Mutex
	rq recvQueue
	rw recvWindow
	// send side
	written      uint32 // bytes sent (mod 2^32)
	peerConsumed uint32 // from the peer's last window update
	peerWindow   uint32

	finRecv  bool  // the peer's FIN arrived
	finSent  bool  // our FIN is queued (CloseWrite, Close)
	closed   bool  // Close or Reset was called
	removed  bool  // the session forgot the stream
	resetErr error // why the stream was aborted (matches ErrReset)

	readDeadline, writeDeadline time.Time
	rch, wch                    chan struct{} // wake a blocked reader, writer
	sendWake                    chan struct{} // sendLock hand-over
	sentTotal                   int64         // bytes written, for the urgent class

	spare []chunk // WriteTo's scratch, owned by the reader
}

func newStream(id uint32, s *Session) *Stream {
	st := &Stream{
		id:         id,
		sess:       s,
		peerWindow: uint32(s.cfg.InitialWindow),
		rch:        make(chan struct{}, 1),
		wch:        make(chan struct{}, 1),
		sendWake:   make(chan struct{}, 1),
	}
	st.rw.window = uint32(s.cfg.InitialWindow)
	s.budget.force(int64(s.cfg.InitialWindow))
	return st
}

// ID returns the stream id.
func (st *Stream) ID() uint32 { return st.id }

// LocalAddr returns the session connection's local address.
func (st *Stream) LocalAddr() net.Addr { return st.sess.LocalAddr() }

// RemoteAddr returns the session connection's remote address.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.RemoteAddr() }

// Window returns the stream's current receive window (for tests and metrics).
func (st *Stream) Window() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return int(st.rw.window)
}

// Buffered returns how many received bytes wait for the reader.
func (st *Stream) Buffered() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rq.n
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (st *Stream) wake() {
	notify(st.rch)
	notify(st.wch)
}

// removeLocked makes the session forget the stream and returns its window
// to the budget. Call with st.mu held.
func (st *Stream) removeLocked() {
	if st.removed {
		return
	}
	st.removed = true
	st.sess.budget.release(int64(st.rw.window))
	st.sess.removeStream(st)
}

// abortLocked resets the stream for err (ErrReset-wrapped): the buffered
// data is dropped, the peer is told (RST, or FIN without the extension) and
// the stream is forgotten. It returns the control frame to queue (or 0xff).
func (st *Stream) abortLocked(err error) byte {
	cmd := byte(0xff)
	if st.resetErr == nil {
		st.resetErr = err
	}
	st.rq.free()
	if !st.removed {
		if st.sess.cfg.Reset {
			cmd = cmdRST
		} else if !st.finSent {
			cmd = cmdFIN
		}
		st.finSent = true
		st.removeLocked()
	}
	return cmd
}

func (st *Stream) queue(cmd byte) {
	if cmd != 0xff {
		st.sess.queueControl(cmd, st.id)
	}
}

// ---- called by the session's receive loop

func (st *Stream) dataReceived(small []byte, big *[]byte) {
	n := len(small)
	if big != nil {
		n = len(*big)
	}
	cmd := byte(0xff)
	st.mu.Lock()
	switch {
	case st.removed || st.resetErr != nil:
	case st.closed:
		// Closed here, kept only to answer late data (reset extension on).
		cmd = cmdRST
		st.removeLocked()
	case !st.rw.admit(n):
		cmd = st.abortLocked(fmt.Errorf("%w: %w: %d bytes beyond a window of %d", ErrReset, ErrWindowExceeded, st.rw.unacked()+uint32(n)-st.rw.window, st.rw.window))
	default:
		if big != nil {
			st.rq.push(big)
			big = nil
		} else {
			st.rq.pushCopy(small)
		}
	}
	st.mu.Unlock()
	if big != nil {
		putChunk(big)
	}
	notify(st.rch)
	if cmd != 0xff {
		notify(st.wch)
		st.queue(cmd)
	}
}

func (st *Stream) finReceived() {
	st.mu.Lock()
	st.finRecv = true
	if st.finSent || st.closed {
		st.removeLocked()
	}
	st.mu.Unlock()
	st.wake()
}

func (st *Stream) resetReceived(err error) {
	st.mu.Lock()
	if st.resetErr == nil {
		st.resetErr = err
	}
	// Data that arrived before the reset stays readable; Close frees it.
	st.removeLocked()
	st.mu.Unlock()
	st.wake()
}

func (st *Stream) updateReceived(consumed, window uint32) {
	cmd := byte(0xff)
	st.mu.Lock()
	if int32(st.written-consumed) < 0 {
		cmd = st.abortLocked(fmt.Errorf("%w: %w: peer acknowledged %d bytes, %d were sent", ErrReset, ErrProtocol, consumed, st.written))
	} else {
		st.peerConsumed, st.peerWindow = consumed, window
	}
	st.mu.Unlock()
	notify(st.wch)
	if cmd != 0xff {
		notify(st.rch)
		st.queue(cmd)
	}
}

// ---- reading

// readErrLocked is the error a reader gets when no data is buffered.
func (st *Stream) readErrLocked() error {
	switch {
	case st.closed:
		return ErrStreamClosed
	case st.resetErr != nil:
		return st.resetErr
	case st.finRecv:
		return io.EOF
	case st.sess.IsClosed():
		return st.sess.closedErr()
	case !st.readDeadline.IsZero() && !time.Now().Before(st.readDeadline):
		return os.ErrDeadlineExceeded
	}
	return nil
}

// consumedLocked accounts n bytes taken by the reader and returns the window
// update to send, if one is due.
func (st *Stream) consumedLocked(n int) (upd bool, consumed, window uint32) {
	s := st.sess
	if !st.rw.consume(n, uint32(s.cfg.MaxStreamWindow), &s.budget, s.rtt) || st.finRecv || st.removed {
		return false, 0, 0
	}
	return true, st.rw.consumed, st.rw.window
}

// Read reads buffered data, waiting for some if there is none.
func (st *Stream) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		st.mu.Lock()
		if st.closed {
			st.mu.Unlock()
			return 0, ErrStreamClosed
		}
		if st.rq.n > 0 {
			n := st.rq.read(b)
			upd, c, w := st.consumedLocked(n)
			st.mu.Unlock()
			if upd {
				st.sess.queueUPD(st.id, c, w)
			}
			return n, nil
		}
		if err := st.readErrLocked(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		dl := st.readDeadline
		st.mu.Unlock()
		st.wait(st.rch, dl, 0)
	}
}

// WriteTo writes the stream's data to w until the peer's FIN (returning a
// nil error, like io.Copy) or an error. Received frames are handed to w as
// they are, without a copy.
func (st *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		st.mu.Lock()
		for st.rq.n == 0 || st.closed {
			err := st.readErrLocked()
			if errors.Is(err, io.EOF) {
				st.mu.Unlock()
				return total, nil
			}
			if err != nil {
				st.mu.Unlock()
				return total, err
			}
			dl := st.readDeadline
			st.mu.Unlock()
			st.wait(st.rch, dl, 0)
			st.mu.Lock()
		}
		chunks := st.rq.takeAll(st.spare[:0])
		st.mu.Unlock()
		for i, c := range chunks {
			b := (*c.buf)[c.r:]
			n, err := w.Write(b)
			total += int64(n)
			putChunk(c.buf)
			if err != nil {
				for _, rest := range chunks[i+1:] {
					putChunk(rest.buf)
				}
				clear(chunks)
				st.spare = chunks[:0]
				return total, err
			}
			st.mu.Lock()
			upd, cons, win := st.consumedLocked(len(b))
			st.mu.Unlock()
			if upd {
				st.sess.queueUPD(st.id, cons, win)
			}
		}
		clear(chunks)
		st.spare = chunks[:0]
	}
}

// ---- writing

func (st *Stream) writeErrLocked() error {
	switch {
	case st.closed:
		return ErrStreamClosed
	case st.resetErr != nil:
		return st.resetErr
	case st.finSent:
		return ErrStreamClosed
	case st.sess.IsClosed():
		return st.sess.closedErr()
	case !st.writeDeadline.IsZero() && !time.Now().Before(st.writeDeadline):
		return os.ErrDeadlineExceeded
	}
	return nil
}

// Write sends b, waiting for window as needed. Without the reset
// extension, a Write that gets no window for Config.StalledWriteTimeout
// after the peer's FIN fails with ErrReset.
func (st *Stream) Write(b []byte) (int, error) {
	frame := st.sess.cfg.MaxFrameSize
	sent := 0
	for len(b) > 0 {
		st.mu.Lock()
		avail, err := st.waitWindowLocked()
		if err != nil {
			st.mu.Unlock()
			return sent, err
		}
		n := min(len(b), avail, frame)
		st.written += uint32(n)
		urgent := st.sentTotal < urgentStart || n <= urgentFrame
		st.sentTotal += int64(n)
		st.mu.Unlock()
		if err := st.sess.writeData(st.id, b[:n], urgent, st.sendWake); err != nil {
			return sent, err
		}
		sent += n
		b = b[n:]
	}
	return sent, nil
}

// WaitWritable blocks until the peer's window has room and returns how
// many bytes a Write would send at once, or the error Write would return. A
// relay that reads no more than that from its source holds no copy buffer
// while the peer is not reading.
func (st *Stream) WaitWritable() (int, error) {
	st.mu.Lock()
	n, err := st.waitWindowLocked()
	st.mu.Unlock()
	return n, err
}

// waitWindowLocked waits (releasing st.mu meanwhile) until the send window
// has room and returns how much, or the error a writer gets.
func (st *Stream) waitWindowLocked() (int, error) {
	for {
		if err := st.writeErrLocked(); err != nil {
			return 0, err
		}
		avail := int64(st.peerWindow) - int64(int32(st.written-st.peerConsumed))
		if avail > 0 {
			return int(min(avail, 1<<30)), nil
		}
		var stall time.Duration
		if st.finRecv && !st.sess.cfg.Reset {
			stall = st.sess.cfg.StalledWriteTimeout
		}
		progress, dl := st.peerConsumed, st.writeDeadline
		st.mu.Unlock()
		stalled := st.wait(st.wch, dl, stall)
		st.mu.Lock()
		if stalled && st.peerConsumed == progress && st.resetErr == nil && !st.closed {
			cmd := st.abortLocked(fmt.Errorf("%w: no window for %v after the peer's FIN", ErrReset, stall))
			st.mu.Unlock()
			st.wake()
			st.queue(cmd)
			st.mu.Lock()
		}
	}
}

// wait blocks until ch is signalled, the session dies, the deadline passes
// or (if stall > 0) stall elapses; it reports whether the stall expired.
func (st *Stream) wait(ch chan struct{}, deadline time.Time, stall time.Duration) (stalled bool) {
	var dlC, stallC <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		dlC = t.C
	}
	if stall > 0 {
		t := time.NewTimer(stall)
		defer t.Stop()
		stallC = t.C
	}
	select {
	case <-ch:
	case <-st.sess.die:
	case <-dlC:
	case <-stallC:
		return true
	}
	return false
}

// CloseWrite sends FIN: the peer reads EOF after the data already written.
// Reading goes on until the peer's FIN.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return ErrStreamClosed
	}
	if st.resetErr != nil {
		err := st.resetErr
		st.mu.Unlock()
		return err
	}
	if st.finSent {
		st.mu.Unlock()
		return nil
	}
	if st.sess.IsClosed() {
		st.mu.Unlock()
		return st.sess.closedErr()
	}
	st.finSent = true
	if st.finRecv {
		st.removeLocked()
	}
	st.mu.Unlock()
	notify(st.wch)
	st.sess.queueControl(cmdFIN, st.id)
	return nil
}

// Close closes both directions, like closing a TCP socket: the peer gets
// FIN after the data already written, unless unread data is buffered here,
// in which case (reset extension on) it gets RST. With the extension, data
// the peer sends after Close is answered with one RST.
func (st *Stream) Close() error {
	cmd := byte(0xff)
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	// Unread counts data a WriteTo took but has not delivered yet: its
	// writer is stuck, and the peer may be waiting for window.
	unread := st.rw.received != st.rw.consumed
	st.rq.free()
	if !st.removed && st.resetErr == nil {
		switch {
		case st.sess.cfg.Reset && unread:
			cmd = cmdRST
			st.removeLocked()
		default:
			if !st.finSent {
				st.finSent = true
				cmd = cmdFIN
			}
			if st.finRecv || !st.sess.cfg.Reset {
				st.removeLocked()
			}
		}
	}
	st.mu.Unlock()
	st.wake()
	if !st.sess.IsClosed() {
		st.queue(cmd)
	}
	return nil
}

// Reset aborts the stream: it is forgotten at once, buffered data is
// dropped, and the peer's Read and Write fail with ErrReset. Without the
// reset extension the peer can only be sent a FIN.
func (st *Stream) Reset() error {
	cmd := byte(0xff)
	st.mu.Lock()
	st.closed = true
	st.rq.free()
	if !st.removed {
		if st.sess.cfg.Reset {
			cmd = cmdRST
		} else if !st.finSent {
			cmd = cmdFIN
		}
		st.finSent = true
		st.removeLocked()
	}
	st.mu.Unlock()
	st.wake()
	if !st.sess.IsClosed() {
		st.queue(cmd)
	}
	return nil
}

// SetReadDeadline sets the deadline for Read and WriteTo.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	st.readDeadline = t
	st.mu.Unlock()
	notify(st.rch)
	return nil
}

// SetWriteDeadline sets the deadline for Write.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	st.writeDeadline = t
	st.mu.Unlock()
	notify(st.wch)
	return nil
}

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	_ = st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

var _ net.Conn = (*Stream)(nil)
