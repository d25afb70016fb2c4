package smux

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one smux v2 session over a connection (usually a *Conn).
// Either side may open streams; the roles only split the stream ID space
// (the client opens odd IDs, the server even ones).
//
// Frames are read by one goroutine that never blocks on a stream: data for a
// stream nobody reads is bounded by that stream's window, so the socket is
// always drained. Data frames are written by the goroutine that calls
// Stream.Write; control frames (window updates, SYN, FIN, RST, NOP) are
// queued and go out ahead of the next data frame or from a flusher
// goroutine, so no reader ever waits on the socket.
type Session struct {
	conn   io.ReadWriteCloser
	cfg    Config
	client bool
	rtt    func() time.Duration

	mu       sync.Mutex
	streams  map[uint32]*Stream
	nextID   uint32
	accepts  chan *Stream
	refused  atomic.Uint64
	budget   budget
	isActive atomic.Bool // a frame arrived since the last keepalive check

	// write side
	wmu       sendLock // serialises conn writes
	flushWake chan struct{}
	whdr      frameHeader
	wbufs     [3][]byte
	cmu       sync.Mutex // guards ctrl, ctrlSpare
	ctrl      []byte     // queued control frames
	ctrlKick  chan struct{}

	die     chan struct{}
	dieOnce sync.Once
	dieErr  error // set before die closes

	rttOverride atomic.Int64 // tests
}

// maxCtrlBacklog bounds queued control frames. A peer that makes us queue
// more (it stopped reading while flooding us with SYNs) loses the session.
const maxCtrlBacklog = 1 << 20

// rttPingInterval is how often a *Conn is pinged for the RTT estimate.
const rttPingInterval = time.Second

// rttSource is implemented by *Conn.
type rttSource interface {
	Ping() error
	RTT() time.Duration
}

// buffersWriter is implemented by *Conn: the buffers go out as one message.
type buffersWriter interface {
	WriteBuffers(v [][]byte) (int, error)
}

// Server starts the accepting side of a session over conn (usually a *Conn).
func Server(conn io.ReadWriteCloser, cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSession(conn, cfg, false), nil
}

// Client starts the dialing side of a session over conn.
func Client(conn io.ReadWriteCloser, cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSession(conn, cfg, true), nil
}

func newSession(conn io.ReadWriteCloser, cfg Config, client bool) *Session {
	s := &Session{
		conn:      conn,
		cfg:       cfg,
		client:    client,
		streams:   make(map[uint32]*Stream),
		accepts:   make(chan *Stream, cfg.MaxStreams),
		ctrlKick:  make(chan struct{}, 1),
		flushWake: make(chan struct{}, 1),
		die:       make(chan struct{}),
	}
	if client {
		s.nextID = 1
	}
	s.budget.avail.Store(int64(cfg.SessionBudget))
	var pinger rttSource
	if rs, ok := conn.(rttSource); ok {
		pinger = rs
	}
	s.rtt = func() time.Duration {
		if d := s.rttOverride.Load(); d != 0 {
			return time.Duration(d)
		}
		if pinger != nil {
			return pinger.RTT()
		}
		return 0
	}
	go s.recvLoop()
	go s.flushLoop()
	go s.keepalive(pinger)
	return s
}

// ResetEnabled reports whether this session sends and accepts stream resets.
func (s *Session) ResetEnabled() bool { return s.cfg.Reset }

// OpenStream opens a new stream. The SYN is queued, not written: it goes out
// ahead of the stream's first data.
func (s *Session) OpenStream() (*Stream, error) {
	s.mu.Lock()
	if s.IsClosed() {
		s.mu.Unlock()
		return nil, s.closedErr()
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		s.mu.Unlock()
		s.refused.Add(1)
		return nil, fmt.Errorf("%w (%d)", ErrStreamLimit, s.cfg.MaxStreams)
	}
	if s.nextID+2 < s.nextID {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: stream ids exhausted", ErrStreamLimit)
	}
	s.nextID += 2
	st := newStream(s.nextID, s)
	s.streams[st.id] = st
	s.mu.Unlock()
	s.queueControl(cmdSYN, st.id)
	return st, nil
}

// AcceptStream waits for a stream opened by the peer.
func (s *Session) AcceptStream() (*Stream, error) {
	select {
	case st := <-s.accepts:
		return st, nil
	case <-s.die:
		return nil, s.closedErr()
	}
}

// Close closes the session: queued control frames (FINs of streams closed
// just before) are flushed if the connection is free, then the connection is
// closed and every stream fails with ErrSessionClosed.
func (s *Session) Close() error {
	if s.IsClosed() {
		return fmt.Errorf("%w: already closed", ErrSessionClosed)
	}
	if s.wmu.tryLock() {
		if c := s.takeControl(); len(c) > 0 {
			_, _ = s.conn.Write(c)
		}
		s.wmu.unlock()
	}
	s.fail(errors.New("closed locally"))
	return nil
}

// IsClosed reports whether the session is closed.
func (s *Session) IsClosed() bool {
	select {
	case <-s.die:
		return true
	default:
		return false
	}
}

// CloseChan is closed when the session closes.
func (s *Session) CloseChan() <-chan struct{} { return s.die }

// NumStreams returns the number of streams the session tracks (open, or
// closed here and waiting for the peer's FIN).
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// RefusedStreams counts streams refused by the MaxStreams cap, opened by
// either side, since the session started.
func (s *Session) RefusedStreams() uint64 { return s.refused.Load() }

// LocalAddr and RemoteAddr return the connection's addresses if it has them.
func (s *Session) LocalAddr() net.Addr {
	if c, ok := s.conn.(interface{ LocalAddr() net.Addr }); ok {
		return c.LocalAddr()
	}
	return nil
}

// RemoteAddr returns the peer's address if the connection has one.
func (s *Session) RemoteAddr() net.Addr {
	if c, ok := s.conn.(interface{ RemoteAddr() net.Addr }); ok {
		return c.RemoteAddr()
	}
	return nil
}

// fail closes the session for cause; the first cause wins.
func (s *Session) fail(cause error) {
	s.dieOnce.Do(func() {
		// The cause is text only: callers match ErrSessionClosed, and a peer's
		// or a socket's error must not leak into their errors.Is checks.
		s.dieErr = fmt.Errorf("%w: %v", ErrSessionClosed, cause) //nolint:errorlint // see above
		close(s.die)
		_ = s.conn.Close()
	})
}

// closedErr is the error of a dead session (ErrSessionClosed, with cause).
func (s *Session) closedErr() error {
	<-s.die
	return s.dieErr
}

// removeStream forgets st: later frames for its id are ignored. It returns
// st's window to the budget.
func (s *Session) removeStream(st *Stream) {
	s.mu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
}

func (s *Session) stream(sid uint32) *Stream {
	s.mu.Lock()
	st := s.streams[sid]
	s.mu.Unlock()
	return st
}

// ---- receiving

func (s *Session) recvLoop() {
	var h frameHeader
	var upd [updSize]byte
	small := make([]byte, minChunk)
	for {
		if _, err := io.ReadFull(s.conn, h[:]); err != nil {
			s.fail(err)
			return
		}
		s.isActive.Store(true)
		if err := h.check(s.cfg.Reset); err != nil {
			s.fail(err)
			return
		}
		sid := h.streamID()
		switch h.cmd() {
		case cmdNOP:
		case cmdSYN:
			if err := s.handleSYN(sid); err != nil {
				s.fail(err)
				return
			}
		case cmdFIN:
			if st := s.stream(sid); st != nil {
				st.finReceived()
			}
		case cmdRST:
			if st := s.stream(sid); st != nil {
				st.resetReceived(fmt.Errorf("%w by the peer", ErrReset))
			}
		case cmdUPD:
			if _, err := io.ReadFull(s.conn, upd[:]); err != nil {
				s.fail(err)
				return
			}
			if st := s.stream(sid); st != nil {
				st.updateReceived(le32(upd[:4]), le32(upd[4:]))
			}
		case cmdPSH:
			if err := s.handlePSH(sid, h.length(), small); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func (s *Session) handleSYN(sid uint32) error {
	if (sid%2 == 1) != !s.client {
		return fmt.Errorf("%w: peer opened stream %d with our parity", ErrProtocol, sid)
	}
	s.mu.Lock()
	if _, dup := s.streams[sid]; dup || s.IsClosed() {
		s.mu.Unlock()
		return nil
	}
	if len(s.streams) >= s.cfg.MaxStreams || len(s.accepts) == cap(s.accepts) {
		s.mu.Unlock()
		s.refused.Add(1)
		if s.cfg.Reset {
			s.queueControl(cmdRST, sid)
		} else {
			s.queueControl(cmdFIN, sid)
		}
		return nil
	}
	st := newStream(sid, s)
	s.streams[sid] = st
	s.accepts <- st // cannot block: cap(accepts) = MaxStreams > len(streams)
	s.mu.Unlock()
	return nil
}

func (s *Session) handlePSH(sid uint32, n int, small []byte) error {
	if n == 0 {
		return nil
	}
	st := s.stream(sid)
	if st == nil {
		_, err := io.ReadFull(s.conn, small[:min(n, len(small))])
		if err == nil && n > len(small) {
			_, err = io.CopyN(io.Discard, s.conn, int64(n-len(small)))
		}
		return err
	}
	if n <= len(small) {
		if _, err := io.ReadFull(s.conn, small[:n]); err != nil {
			return err
		}
		st.dataReceived(small[:n], nil)
		return nil
	}
	p := getChunk(n)
	if _, err := io.ReadFull(s.conn, *p); err != nil {
		putChunk(p)
		return err
	}
	st.dataReceived(nil, p)
	return nil
}

// ---- sending

// queueControl queues a body-less control frame.
func (s *Session) queueControl(cmd byte, sid uint32) {
	s.cmu.Lock()
	s.ctrl = appendControl(s.ctrl, cmd, sid)
	s.kickLocked()
}

// queueUPD queues a window update.
func (s *Session) queueUPD(sid, consumed, window uint32) {
	s.cmu.Lock()
	s.ctrl = appendUPD(s.ctrl, sid, consumed, window)
	s.kickLocked()
}

// kickLocked wakes the flusher and releases cmu.
func (s *Session) kickLocked() {
	over := len(s.ctrl) > maxCtrlBacklog
	s.cmu.Unlock()
	if over {
		s.fail(fmt.Errorf("%w: %d bytes of control frames queued; the peer is not reading", ErrProtocol, maxCtrlBacklog))
		return
	}
	select {
	case s.ctrlKick <- struct{}{}:
	default:
	}
}

// takeControl returns the queued control frames. Call with wmu held.
func (s *Session) takeControl() []byte {
	s.cmu.Lock()
	c := s.ctrl
	s.ctrl = nil
	s.cmu.Unlock()
	return c
}

func (s *Session) flushLoop() {
	for {
		select {
		case <-s.ctrlKick:
		case <-s.die:
			return
		}
		s.wmu.lock(true, s.flushWake)
		c := s.takeControl()
		var err error
		if len(c) > 0 && !s.IsClosed() {
			_, err = s.conn.Write(c)
		}
		s.wmu.unlock()
		if err != nil {
			s.fail(err)
			return
		}
	}
}

// urgentBytes: a stream's first bytes, and small frames, are sent ahead of
// bulk frames (see sendLock).
const (
	urgentStart = 256 << 10
	urgentFrame = 4 << 10
)

// writeData writes one data frame, preceded by any queued control frames.
// urgent frames jump the queue of bulk frames; wake is the writer's
// hand-over channel.
func (s *Session) writeData(sid uint32, p []byte, urgent bool, wake chan struct{}) error {
	s.wmu.lock(urgent, wake)
	if s.IsClosed() {
		s.wmu.unlock()
		return s.closedErr()
	}
	putHeader(s.whdr[:], cmdPSH, len(p), sid)
	s.wbufs[0] = s.takeControl()
	s.wbufs[1] = s.whdr[:]
	s.wbufs[2] = p
	var err error
	if bw, ok := s.conn.(buffersWriter); ok {
		_, err = bw.WriteBuffers(s.wbufs[:])
	} else {
		bufs := net.Buffers(s.wbufs[:])
		_, err = bufs.WriteTo(s.conn)
	}
	s.wbufs = [3][]byte{}
	s.wmu.unlock()
	if err != nil {
		s.fail(err)
		return s.closedErr()
	}
	return nil
}

// keepalive sends a NOP every KeepAliveInterval, pings the connection for
// the RTT estimate, and closes the session when nothing arrived for a whole
// KeepAliveTimeout.
func (s *Session) keepalive(pinger rttSource) {
	nop := time.NewTicker(s.cfg.KeepAliveInterval)
	defer nop.Stop()
	dead := time.NewTicker(s.cfg.KeepAliveTimeout)
	defer dead.Stop()
	var ping <-chan time.Time
	if pinger != nil {
		_ = pinger.Ping()
		t := time.NewTicker(rttPingInterval)
		defer t.Stop()
		ping = t.C
	}
	for {
		select {
		case <-nop.C:
			s.queueControl(cmdNOP, 0)
		case <-ping:
			_ = pinger.Ping()
		case <-dead.C:
			if !s.isActive.Swap(false) {
				s.fail(fmt.Errorf("keepalive timeout: nothing received for %v", s.cfg.KeepAliveTimeout))
				return
			}
		case <-s.die:
			return
		}
	}
}
