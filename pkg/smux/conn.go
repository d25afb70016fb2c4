package smux

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Conn adapts a *websocket.Conn to net.Conn for a smux session. Every Write
// (or WriteBuffers) becomes one binary message; Read streams message bodies
// through websocket's NextReader without copying them into a message buffer.
//
// Like the websocket connection under it, Conn supports one concurrent
// reader and one concurrent writer, which is what a smux session uses (its
// recvLoop and sendLoop). WriteControl (pings, close) may run beside them.
type Conn struct {
	ws      *websocket.Conn
	timeout time.Duration

	// read side, owned by the single reader
	r        io.Reader
	readErr  error
	armedAt  time.Time
	rearmGap time.Duration

	closeOnce sync.Once
	closeErr  error

	// RTT estimate from Ping/pong: the least of the recent samples, so
	// queueing behind bulk data (which a busy loopback tunnel has plenty
	// of) does not pass for path length.
	epoch  time.Time
	minRTT atomic.Int64
	// ponging is set while an answer to the peer's ping is being written.
	ponging atomic.Bool
	samples [rttSamples]time.Duration // written by the pong handler only
	next    int
}

// rttSamples is how many recent pongs the RTT estimate remembers (one per
// second from Session's pings).
const rttSamples = 10

var _ net.Conn = (*Conn)(nil)

// NewConn wraps ws. timeout bounds every wait for incoming data and every
// write (use Config.KeepAliveTimeout; zero disables both deadlines).
func NewConn(ws *websocket.Conn, timeout time.Duration) *Conn {
	c := &Conn{ws: ws, timeout: timeout, rearmGap: timeout / 16, epoch: time.Now()}
	// A pong (answer to a WriteControl ping) proves the peer is alive and,
	// if it answers one of our Pings, times the round trip. The handler runs
	// on the reading goroutine, inside Read.
	// The peer's pings are answered off the reading goroutine: gorilla's
	// default handler writes the pong inline, and while a data write holds
	// the connection (the peer is slow to read) that would stop this side
	// from reading for up to a second; both sides doing it at once stalls
	// the session. A ping that arrives while an answer is in flight is
	// dropped (they are periodic).
	ws.SetPingHandler(func(data string) error {
		if !c.ponging.CompareAndSwap(false, true) {
			return nil
		}
		go func() {
			defer c.ponging.Store(false)
			_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(pongWriteTimeout))
		}()
		return nil
	})
	ws.SetPongHandler(func(data string) error {
		c.pong(data)
		if c.timeout > 0 {
			c.armedAt = time.Now()
			return ws.SetReadDeadline(c.armedAt.Add(c.timeout))
		}
		return nil
	})
	return c
}

// armRead pushes the read deadline timeout into the future. It is called at
// the start of every Read, so time spent not reading (smux's receive budget
// exhausted by slow local readers) never counts against the peer. To keep
// the hot path cheap the deadline is moved only when it has aged by more
// than timeout/16, so a silent peer is detected after 15/16 to 16/16 of
// the timeout.
func (c *Conn) armRead() error {
	if c.timeout <= 0 {
		return nil
	}
	now := time.Now()
	if !c.armedAt.IsZero() && now.Sub(c.armedAt) < c.rearmGap {
		return nil
	}
	c.armedAt = now
	return c.ws.SetReadDeadline(now.Add(c.timeout))
}

// Read reads from the current binary message, moving to the next one when it
// is exhausted. Errors are sticky.
func (c *Conn) Read(p []byte) (int, error) {
	if c.readErr != nil {
		return 0, c.readErr
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.armRead(); err != nil {
		c.readErr = err
		return 0, err
	}
	for {
		if c.r == nil {
			mt, r, err := c.ws.NextReader()
			if err != nil {
				c.readErr = err
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				c.readErr = fmt.Errorf("%w: type %d", ErrNotBinary, mt)
				return 0, c.readErr
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			c.readErr = err
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *Conn) Write(p []byte) (int, error) {
	w, err := c.nextWriter()
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(p); err != nil {
		_ = w.Close()
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteBuffers sends the concatenation of v as one binary message. smux's
// sendLoop uses it to send a frame header and its payload together.
func (c *Conn) WriteBuffers(v [][]byte) (int, error) {
	w, err := c.nextWriter()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range v {
		m, err := w.Write(b)
		n += m
		if err != nil {
			_ = w.Close()
			return n, err
		}
	}
	if err := w.Close(); err != nil {
		return n, err
	}
	return n, nil
}

func (c *Conn) nextWriter() (io.WriteCloser, error) {
	if c.timeout > 0 {
		if err := c.ws.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
			return nil, err
		}
	}
	return c.ws.NextWriter(websocket.BinaryMessage)
}

// WriteControl sends a ping or close control message; it may be called
// concurrently with Read and Write.
func (c *Conn) WriteControl(messageType int, data []byte, deadline time.Time) error {
	return c.ws.WriteControl(messageType, data, deadline)
}

// Close sends a best-effort close message (bounded by one second) and closes
// the underlying connection. It is safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

// Ping sends a websocket ping carrying the send time; the peer's pong
// (every websocket stack answers pings) updates RTT. It may be called
// concurrently with Read and Write.
func (c *Conn) Ping() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(time.Since(c.epoch)))
	return c.ws.WriteControl(websocket.PingMessage, b[:], time.Now().Add(time.Second))
}

// pongWriteTimeout bounds the write of one pong.
const pongWriteTimeout = 5 * time.Second

// maxRTTSample drops absurd samples (a peer's unsolicited pong).
const maxRTTSample = 10 * time.Second

func (c *Conn) pong(data string) {
	if len(data) != 8 {
		return
	}
	sent := time.Duration(binary.LittleEndian.Uint64([]byte(data)))
	rtt := time.Since(c.epoch) - sent
	if rtt <= 0 || rtt > maxRTTSample {
		return
	}
	c.samples[c.next] = rtt
	c.next = (c.next + 1) % rttSamples
	least := rtt
	for _, d := range c.samples {
		if d > 0 && d < least {
			least = d
		}
	}
	c.minRTT.Store(int64(least))
}

// RTT returns the least round-trip time of the recent Pings, or 0 before
// the first answer.
func (c *Conn) RTT() time.Duration { return time.Duration(c.minRTT.Load()) }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// SetDeadline sets both deadlines of the underlying connection. Conn moves
// them on every Read and Write while a timeout is configured.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.ws.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline of the underlying connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the underlying connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
