package tunnel

import (
	"io"
	"net"
	"sync"
	"time"
)

// closeLinger bounds how long closing a session's connection waits for the
// peer to close its side.
const closeLinger = 5 * time.Second

// lingers closes the TCP connections under sessions gracefully. A plain
// close(2) of a socket with unread received data (the peer's window updates
// and keepalives keep arriving) sends an RST, and an RST throws away what
// is still in the socket's send buffer: the last bytes and FINs of the
// streams that had just finished. So the connection is half-closed (FIN
// after everything sent), the peer's remaining bytes are read and dropped
// until it closes too, and only then is it closed, at most closeLinger
// later. A process waits for its lingering closes before it exits.
// Closes may start while wait runs (a peer closes its session during a
// shutdown), so this is a counter under a mutex, not a sync.WaitGroup.
type lingers struct {
	mu   sync.Mutex
	n    int
	zero *sync.Cond // signalled when n drops to 0
}

// close starts the graceful close of c.
func (l *lingers) close(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		_ = c.Close()
		return
	}
	l.mu.Lock()
	l.n++
	l.mu.Unlock()
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(closeLinger))
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.n--; l.n == 0 && l.zero != nil {
			l.zero.Broadcast()
		}
	}()
}

// wait blocks until no close is in progress.
func (l *lingers) wait() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.zero == nil {
		l.zero = sync.NewCond(&l.mu)
	}
	for l.n > 0 {
		l.zero.Wait()
	}
}

// lingerConn is a session's connection whose Close is graceful.
type lingerConn struct {
	net.Conn
	l    *lingers
	once sync.Once
}

func (c *lingerConn) Close() error {
	c.once.Do(func() { c.l.close(c.Conn) })
	return nil
}
