package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// bufPool hands out copy buffers of one size. A buffer is held only while
// bytes are in hand, never while waiting for an idle socket (see
// localToStream), so a thousand idle connections cost no copy buffers.
type bufPool struct {
	size int
	p    sync.Pool
}

func newBufPool(size int) *bufPool {
	bp := &bufPool{size: size}
	bp.p.New = func() any { b := make([]byte, size); return &b }
	return bp
}

func (bp *bufPool) get() *[]byte  { return bp.p.Get().(*[]byte) }
func (bp *bufPool) put(b *[]byte) { bp.p.Put(b) }

// pipe forwards between a local TCP connection and a stream, both ways,
// preserving half-close: EOF from the local socket becomes the stream's
// CloseWrite (FIN) and the stream's EOF becomes the socket's CloseWrite.
//
// A pipe ends in one of two ways. It finishes when both directions ended
// with an EOF; both ends are then closed normally. It breaks on any other
// error in either direction (the session died, the peer or the local side
// aborted, the drain grace ran out): the local socket is then reset (RST,
// SO_LINGER 0), never closed with a FIN, so a caller or upstream never
// mistakes a cut transfer for a complete one, and the stream is reset
// (smux RST), so the relay at the other end resets its socket too.
type pipe struct {
	local net.Conn
	st    *smux.Stream // the stream; on the server it may move (replay)
	// replay, on the server, keeps what went into the stream before the
	// client confirmed it, so the connection can move to another session.
	replay *replay
	lm     *listenerMetrics
	pool   *bufPool
	// awaitReply, when set, runs before the stream-to-socket direction
	// (the server waits for the client's status byte there; the other
	// direction already flows).
	awaitReply func() error

	failOnce sync.Once
	broken   atomic.Bool
	// sessionGone is set when the session under the stream ended: nothing
	// read from the local socket can be delivered any more.
	sessionGone atomic.Bool
	// streamDone is set when the stream-to-socket direction has ended;
	// watching while the socket-to-stream direction is in watchReset.
	streamDone, watching atomic.Bool
}

// run blocks until both directions are done, then closes both ends (or,
// when the pipe broke, resets the local socket). The stream is closed (its
// FIN queued behind its data) before anything closes the session, so no
// buffered byte is dropped.
func (p *pipe) run() {
	p.lm.open.Inc()
	p.lm.total.Inc()
	defer p.lm.open.Dec()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.localToStream(); err != nil {
			p.fail()
		}
	}()
	if err := p.streamToLocal(); err != nil {
		p.fail()
	}
	p.streamDone.Store(true)
	if p.watching.Load() {
		_ = p.local.SetReadDeadline(time.Now()) // ends watchReset
	}
	p.watchStream(done)
	if !p.broken.Load() {
		_ = p.stream().Close()
		_ = p.local.Close()
	}
}

// stream is the current stream. Only the server's reply wait moves a pipe
// to another stream, under replay.mu, before the reply is confirmed.
func (p *pipe) stream() *smux.Stream {
	if p.replay == nil || p.replay.confirmed.Load() {
		return p.st
	}
	p.replay.mu.Lock()
	defer p.replay.mu.Unlock()
	return p.st
}

// fail breaks the pipe: the local socket and the stream are reset, which
// also unblocks the other direction.
func (p *pipe) fail() {
	p.failOnce.Do(func() {
		p.broken.Store(true)
		resetConn(p.local)
		_ = p.stream().Reset()
		if p.replay != nil {
			p.replay.finish()
		}
	})
}

// abort breaks the pipe from outside (drain grace expired, session gone).
func (p *pipe) abort() { p.fail() }

// endSession tells the pipe that its session is gone. The socket-to-stream
// direction can deliver nothing more, so it is woken and breaks the pipe
// unless it already ended; the stream-to-socket direction first delivers
// what the stream had received (the peer's FIN included, if it came).
func (p *pipe) endSession() {
	if r := p.replay; r != nil {
		r.mu.Lock()
		unconfirmed := !r.done
		r.mu.Unlock()
		if unconfirmed {
			// The reply wait sees the stream fail and moves the
			// connection to another session, or breaks the pipe.
			return
		}
	}
	p.sessionGone.Store(true)
	now := time.Now()
	_ = p.local.SetReadDeadline(now)
	_ = p.stream().SetWriteDeadline(now)
}

// resetConn closes c with an RST instead of a FIN (SO_LINGER 0), so the peer
// sees ECONNRESET rather than a normal end of stream.
func resetConn(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}

// write sends b into the stream. Before the client confirmed the stream,
// b is also kept for a replay; at most replayMax bytes are sent unconfirmed,
// then the caller waits for the confirmation (one round trip).
func (p *pipe) write(b []byte) error {
	r := p.replay
	if r == nil || r.confirmed.Load() {
		_, err := p.st.Write(b)
		return err
	}
	r.mu.Lock()
	for !r.done && len(r.buf)+len(b) > replayMax {
		r.cond.Wait()
	}
	st := p.st
	if r.done {
		r.mu.Unlock()
		_, err := st.Write(b)
		return err
	}
	r.buf = append(r.buf, b...)
	r.mu.Unlock()
	// Unconfirmed: an error here (a frozen or dead session) is left to the
	// reply wait, which moves the kept bytes to another session or fails.
	_, _ = st.Write(b)
	return nil
}

// closeWrite sends the stream's FIN, kept for a replay while unconfirmed.
func (p *pipe) closeWrite() error {
	r := p.replay
	if r == nil {
		return p.st.CloseWrite()
	}
	r.mu.Lock()
	st := p.st
	if r.done {
		r.mu.Unlock()
		return st.CloseWrite()
	}
	r.eof = true
	r.mu.Unlock()
	_ = st.CloseWrite()
	return nil
}

// replayMax bounds what a connection sends before its stream is confirmed.
const replayMax = 64 << 10

type replay struct {
	mu   sync.Mutex
	cond *sync.Cond
	done bool   // confirmed (or the pipe failed): nothing more is kept
	buf  []byte // sent so far, unconfirmed
	eof  bool   // the FIN was sent, unconfirmed
	// confirmed is done without the lock: the stream no longer moves.
	confirmed atomic.Bool
}

func newReplay() *replay {
	r := &replay{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// finish ends the unconfirmed phase.
func (r *replay) finish() {
	r.mu.Lock()
	r.done, r.buf = true, nil
	r.confirmed.Store(true)
	r.mu.Unlock()
	r.cond.Broadcast()
}

// moveTo makes st (on sess) the pipe's stream: what was sent unconfirmed is
// sent again there, and the old stream is reset.
func (p *pipe) moveTo(st *smux.Stream) error {
	r := p.replay
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return io.ErrClosedPipe
	}
	old := p.st
	p.st = st
	_ = old.Reset()
	if len(r.buf) > 0 {
		if _, err := st.Write(r.buf); err != nil {
			return err
		}
	}
	if r.eof {
		return st.CloseWrite()
	}
	return nil
}

func (p *pipe) localToStream() error {
	rc := rawConn(p.local)
	for {
		// Wait for the peer's window and read no more than it takes, so a
		// relay whose far end does not read holds no copy buffer.
		st := p.stream()
		room, err := st.WaitWritable()
		if err != nil {
			if p.stream() != st {
				continue // moved to another session while unconfirmed
			}
			return err
		}
		var bp *[]byte
		var n int
		if haveReadPooled && rc != nil {
			bp, n, err = readPooled(rc, p.pool, room)
		} else {
			bp = p.pool.get()
			n, err = p.local.Read((*bp)[:min(room, len(*bp))])
		}
		if n > 0 {
			p.lm.in.Add(float64(n))
			werr := p.write((*bp)[:n])
			p.pool.put(bp)
			if werr != nil {
				return werr
			}
		} else if bp != nil {
			p.pool.put(bp)
		}
		if errors.Is(err, io.EOF) {
			if err := p.closeWrite(); err != nil {
				return err
			}
			return p.watchReset(rc)
		}
		if err != nil {
			return err
		}
	}
}

// resetPoll is how often a relay whose stream already ended with the peer's
// FIN checks whether the peer reset the stream since.
const resetPoll = 500 * time.Millisecond

// watchStream waits for the socket-to-stream direction (done) after the
// stream delivered the peer's FIN. Nothing reads the stream any more, so a
// reset by the peer (its caller or upstream aborted after half-closing)
// would go unnoticed while the local socket stays quiet: the stream is
// polled (a Read after the FIN returns io.EOF at once, or the reset).
func (p *pipe) watchStream(done <-chan struct{}) {
	select {
	case <-done:
		return // the usual case: both directions ended together
	default:
	}
	if p.broken.Load() {
		<-done
		return
	}
	t := time.NewTicker(resetPoll)
	defer t.Stop()
	var one [1]byte
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if _, err := p.stream().Read(one[:]); !errors.Is(err, io.EOF) {
				p.fail()
				<-done
				return
			}
		}
	}
}

// watchReset runs after the local side half-closed: nothing reads or
// writes its socket any more, but the local side may still abort (a caller
// that gave up waiting for an answer). Such a reset breaks the pipe, so it
// reaches the other end. The watch ends with the other direction or the
// session (both set a read deadline) without breaking anything.
func (p *pipe) watchReset(rc syscall.RawConn) error {
	p.watching.Store(true)
	if rc == nil || p.streamDone.Load() {
		return nil
	}
	err := waitReset(rc)
	var oe *net.OpError
	if errors.As(err, &oe) && (errors.Is(oe.Err, syscall.ECONNRESET) || errors.Is(oe.Err, syscall.EPIPE)) {
		return err
	}
	return nil
}

func (p *pipe) streamToLocal() error {
	if p.awaitReply != nil {
		if err := p.awaitReply(); err != nil {
			return err
		}
	}
	// Stream.WriteTo hands received frames straight to the socket: no copy
	// buffer at all.
	w := &countingWriter{w: p.local, lm: p.lm}
	if _, err := p.stream().WriteTo(w); err != nil {
		// The local socket failed (w.err), or the stream did not end with
		// the peer's FIN: reset by the peer (smux.ErrReset), its session
		// gone (smux.ErrSessionClosed).
		return err
	}
	if cw, ok := p.local.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type countingWriter struct {
	w   io.Writer
	lm  *listenerMetrics
	err error // the first write error
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.lm.out.Add(float64(n))
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
